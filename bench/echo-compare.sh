#!/usr/bin/env bash
# echo-compare.sh: ringpoll-echo (epoll, io_uring readiness, io_uring completion) side by
# side with the plain-C peer echo servers, over loopback, with the peers' echo-load client.
#
#   bench/echo-compare.sh                 # full: REPS=3, D=5, C in 1 50 500, M in 64 4096
#   QUICK=1 bench/echo-compare.sh         # fast check: 1 rep, D=2, C=50, M=64
#
# Knobs (environment):
#   REPS (3)  D (measured s, 5)  W (warm-up s, 1)  CONNS ("1 50 500")  MSGS ("64 4096")
#   SKIP ("")           workloads to leave out, as C:M words, e.g. SKIP="1:4096"
#   SERVERS             default: the three ringpoll modes, c-epoll-echo, c-uring-echo and
#                       c-uring-echo:defer when that peer takes the "defer" argument
#   MAX_OTHER (15)      % of one core burnt by foreign processes above which a run is noisy
#   RETRIES (1)         extra tries of a noisy run
#   QUIET_PCT (20) QUIET_WAIT (30) QUIET_BUDGET (600)  before each run, wait up to
#                       QUIET_WAIT s for the box to be below QUIET_PCT % busy (of one core),
#                       and at most QUIET_BUDGET s over the whole session (time bound)
#   RINGPOLL_PEERS (../shared/peers, from the repository root)  the peers' sources
#   RINGPOLL_BUILD (<repo>/build)  build dir holding bin/ringpoll-echo (built if missing
#                       or stale; NO_BUILD=1 uses it as is)
#   ECHO_LOAD           an echo-load binary to use when the peers folder is absent
#   OUT (<repo>/results)  results go to $OUT/echo-<stamp>/{results.json,results.md,...}
#   MERGE ("")          runs.jsonl files of earlier sessions (space-separated) to fold into
#                       this session's medians, e.g. to add a repetition to a run cut short
#   SRV_CPU (0) CLI_CPU (1)  CPUs for the server and for echo-load (taskset)
#
# Method: servers pinned to SRV_CPU, echo-load to CLI_CPU. For each repetition, each
# workload, each server in turn (A B C A B C ...), a fresh server is started, echo-load
# runs W + D seconds, and the server is stopped. The server's user/sys CPU comes from
# /proc/PID/stat over a window inside echo-load's measured D seconds; requests/s and the
# latency percentiles come from echo-load's RESULT line. A run during which foreign
# processes used more than MAX_OTHER % of a core is retried once and left out of the
# medians when a clean run exists. Every process is started here and killed by its PID,
# also on Ctrl-C. Loopback only.
set -uo pipefail

HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/.." && pwd)
REPORT="python3 $HERE/echo_compare_report.py"

if [[ ${QUICK:-0} == 1 ]]; then
  REPS=${REPS:-1}; D=${D:-2}; W=${W:-1}; CONNS=${CONNS:-50}; MSGS=${MSGS:-64}
fi
REPS=${REPS:-3}; D=${D:-5}; W=${W:-1}
CONNS=${CONNS:-"1 50 500"}; MSGS=${MSGS:-"64 4096"}; SKIP=${SKIP:-}
MAX_OTHER=${MAX_OTHER:-15}; RETRIES=${RETRIES:-1}
QUIET_PCT=${QUIET_PCT:-20}; QUIET_WAIT=${QUIET_WAIT:-30}; QUIET_BUDGET=${QUIET_BUDGET:-600}
SRV_CPU=${SRV_CPU:-0}; CLI_CPU=${CLI_CPU:-1}
PORT=${PORT:-19301}
RINGPOLL_BUILD=${RINGPOLL_BUILD:-$ROOT/build}
PEERS_SRC=${RINGPOLL_PEERS:-../shared/peers}
[[ $PEERS_SRC == /* ]] || PEERS_SRC=$ROOT/$PEERS_SRC
OUT=${OUT:-$ROOT/results}
STAMP=$(date +%Y%m%d-%H%M%S)
RUNDIR=$OUT/echo-$STAMP
HZ=$(getconf CLK_TCK)

die() { echo "echo-compare: $*" >&2; exit 1; }
for t in taskset ss python3 awk; do command -v $t >/dev/null || die "needs '$t' on PATH"; done
(( $(nproc) >= 2 )) || echo "echo-compare: warning: $(nproc) CPU; server and client share it"
mkdir -p "$RUNDIR" || die "cannot create $RUNDIR"
TMPD=$(mktemp -d /tmp/echo-compare.XXXXXX)
LOG=$RUNDIR/servers.log
RUNS=$RUNDIR/runs.jsonl
: >"$RUNS"

# ------------------------------------------------------------------ process tracking
PIDS=()  # every process started here and possibly still alive
forget() { local keep=() p; for p in "${PIDS[@]}"; do [[ $p != "$1" ]] && keep+=("$p"); done; PIDS=("${keep[@]}"); }
cleanup() {
  local p
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null; done
  for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null; done
  PIDS=()
  rm -rf "$TMPD"
}
trap cleanup EXIT
on_interrupt() {
  echo; echo "echo-compare: interrupted; summarising the runs so far in $RUNDIR"
  if [[ -s $RUNS ]]; then
    echo "- Interrupted after $((SECONDS - ${T0:-0})) s: the table holds only the runs made until then." >>"$RUNDIR/header.md"
    $REPORT summarize "$RUNS" "$RUNDIR" "$RUNDIR/header.md" >/dev/null
  fi
  exit 130
}
trap on_interrupt INT TERM

# ------------------------------------------------------------------ binaries
RP_ECHO=$RINGPOLL_BUILD/bin/ringpoll-echo
if [[ ${NO_BUILD:-0} != 1 ]]; then
  echo "== building ringpoll-echo in $RINGPOLL_BUILD"
  if [[ ! -f $RINGPOLL_BUILD/build.ninja ]]; then
    cmake -S "$ROOT" -B "$RINGPOLL_BUILD" -G Ninja -DCMAKE_BUILD_TYPE=Release >"$TMPD/build.log" 2>&1 ||
      { cat "$TMPD/build.log" >&2; die "cmake failed"; }
  fi
  ninja -C "$RINGPOLL_BUILD" ringpoll-echo >"$TMPD/build.log" 2>&1 ||
    { tail -30 "$TMPD/build.log" >&2; die "building ringpoll-echo failed"; }
fi
[[ -x $RP_ECHO ]] || die "no ringpoll-echo at $RP_ECHO"

# The peers are built in a scratch copy: the shared folder is never written to.
PEERS_BIN=""
HAVE_C_EPOLL=0; HAVE_C_URING=0; HAVE_DEFER=0
if [[ -d $PEERS_SRC ]]; then
  echo "== building the peers from $PEERS_SRC"
  mkdir -p "$TMPD/peers" && cp -r "$PEERS_SRC"/. "$TMPD/peers/" || die "cannot copy $PEERS_SRC"
  chmod -R u+w "$TMPD/peers"
  # build.sh also builds the Go peers; without Go it stops after the C ones, which is all
  # this comparison needs. Build what is still missing directly.
  (cd "$TMPD/peers" && ./build.sh) >"$TMPD/peers-build.log" 2>&1
  PEERS_BIN=$TMPD/peers/bin; mkdir -p "$PEERS_BIN"
  for p in c-epoll-echo c-uring-echo echo-load; do
    [[ -x $PEERS_BIN/$p || ! -f $TMPD/peers/$p.c ]] && continue
    lib=""; [[ $p == c-uring-echo ]] && lib=-luring
    gcc -O2 -o "$PEERS_BIN/$p" "$TMPD/peers/$p.c" $lib >>"$TMPD/peers-build.log" 2>&1
  done
  [[ -x $PEERS_BIN/c-epoll-echo ]] && HAVE_C_EPOLL=1
  [[ -x $PEERS_BIN/c-uring-echo ]] && HAVE_C_URING=1
  # The "defer" variant (IORING_SETUP_DEFER_TASKRUN) exists when the peer parses it.
  ((HAVE_C_URING)) && grep -q '"defer"' "$TMPD/peers/c-uring-echo.c" && HAVE_DEFER=1
  ((HAVE_C_EPOLL)) || echo "echo-compare: c-epoll-echo could not be built: skipped (see $TMPD/peers-build.log)"
  ((HAVE_C_URING)) || echo "echo-compare: c-uring-echo could not be built (liburing?): skipped"
else
  echo "echo-compare: no peers folder at $PEERS_SRC: the plain-C baselines (c-epoll-echo,"
  echo "  c-uring-echo, c-uring-echo:defer) are SKIPPED; only ringpoll's three modes run,"
  echo "  and the ratio columns stay empty."
fi
ECHO_LOAD=${ECHO_LOAD:-${PEERS_BIN:+$PEERS_BIN/echo-load}}
[[ -n $ECHO_LOAD && -x $ECHO_LOAD ]] ||
  die "no echo-load client: set RINGPOLL_PEERS to the peers folder (its echo-load.c is built) or ECHO_LOAD to a binary"
cp "$TMPD/peers-build.log" "$RUNDIR/" 2>/dev/null

if [[ -z ${SERVERS:-} ]]; then
  SERVERS="rp-epoll rp-io_uring rp-io_uring-completion"
  ((HAVE_C_EPOLL)) && SERVERS+=" c-epoll-echo"
  ((HAVE_C_URING)) && SERVERS+=" c-uring-echo"
  ((HAVE_DEFER)) && SERVERS+=" c-uring-echo:defer"
fi

# server_cmd NAME PORT -> the command line, one word per line
server_cmd() {
  case $1 in
    rp-*) printf '%s\n' "$RP_ECHO" --backend "${1#rp-}" --listen "127.0.0.1:$2" ;;
    c-*:*) printf '%s\n' "$PEERS_BIN/${1%%:*}" "$2" "${1#*:}" ;;
    c-*) printf '%s\n' "$PEERS_BIN/$1" "$2" ;;
    *) die "unknown server '$1'" ;;
  esac
}

# ------------------------------------------------------------------ helpers
listening() { ss -Hltn "sport = :$1" 2>/dev/null | grep -q .; }
wait_listen() { local i; for i in $(seq 100); do listening "$1" && return 0; sleep 0.05; done; return 1; }
wait_free() { local i; for i in $(seq 200); do listening "$1" || return 0; sleep 0.05; done; return 1; }

# utime stime (ticks) of one PID; "0 0" once it is gone.
ticks() {
  local st
  st=$(cat "/proc/$1/stat" 2>/dev/null) || { echo "0 0"; return; }
  st=${st##*) }  # the command name may hold spaces: cut after its closing parenthesis
  awk '{print $12, $13}' <<<"$st"
}
snap() {  # FILE SRVPID CLIPID
  { echo "t $(date +%s%N)"; grep '^cpu' /proc/stat
    echo "srv $(ticks "$2")"; echo "cli $(ticks "$3")"; } >"$1"
}
box_busy_pct() {  # whole box, % of one core, over 1 s
  local a b
  a=($(head -1 /proc/stat)); sleep 1; b=($(head -1 /proc/stat))
  echo $(( ((b[1]-a[1]) + (b[2]-a[2]) + (b[3]-a[3]) + (b[6]-a[6]) + (b[7]-a[7])) * 100 / HZ ))
}
QUIET_SPENT=0  # seconds spent waiting for quiet so far, against QUIET_BUDGET
wait_quiet() {
  local t0=$SECONDS b
  while :; do
    b=$(box_busy_pct)
    (( b <= QUIET_PCT )) && break
    if (( SECONDS - t0 >= QUIET_WAIT || QUIET_SPENT + SECONDS - t0 >= QUIET_BUDGET )); then
      echo "   (box busy: ${b}% of a core; running anyway)"; break
    fi
  done
  QUIET_SPENT=$((QUIET_SPENT + SECONDS - t0))
}
sleep_s() { sleep "$(awk "BEGIN { x = $1; print (x > 0) ? x : 0 }")"; }  # EXPR seconds

start_server() {  # NAME -> SPID, or returns 1
  local cmd
  mapfile -t cmd < <(server_cmd "$1" "$PORT")
  wait_free "$PORT" || { echo "   port $PORT still busy"; return 1; }
  echo "--- $1 (rep $REP, C=$C M=$M)" >>"$LOG"
  taskset -c "$SRV_CPU" "${cmd[@]}" >>"$LOG" 2>&1 &
  SPID=$!; PIDS+=("$SPID")
  if ! wait_listen "$PORT"; then
    echo "   $1 did not start listening (see $LOG)"; stop_pid "$SPID"; return 1
  fi
}
stop_pid() {
  kill "$1" 2>/dev/null
  local i; for i in $(seq 100); do kill -0 "$1" 2>/dev/null || break; sleep 0.05; done
  kill -9 "$1" 2>/dev/null
  wait "$1" 2>/dev/null
  forget "$1"
}

# run_one SERVER: one measured run (with retries when noisy); appends to $RUNS
run_one() {
  local srv=$1 try cpid deadline
  for try in $(seq 0 "$RETRIES"); do
    wait_quiet
    start_server "$srv" || return
    taskset -c "$CLI_CPU" "$ECHO_LOAD" 127.0.0.1 "$PORT" "$C" "$M" "$D" "$W" >"$TMPD/cli.out" 2>&1 &
    cpid=$!; PIDS+=("$cpid")
    # The window sits inside echo-load's measured D seconds (it starts after W, once its
    # connections are up), away from both edges.
    sleep_s "$W + 0.3"; snap "$TMPD/a" "$SPID" "$cpid"
    sleep_s "$D - 0.6"; snap "$TMPD/b" "$SPID" "$cpid"
    deadline=$((SECONDS + 20))
    while kill -0 "$cpid" 2>/dev/null && (( SECONDS < deadline )); do sleep 0.1; done
    kill "$cpid" 2>/dev/null; wait "$cpid"; local rc=$?; forget "$cpid"
    stop_pid "$SPID"
    $REPORT run "$RUNS" "$TMPD/a" "$TMPD/b" "$TMPD/cli.out" server="$srv" conns="$C" \
      msg="$M" rep="$REP" try="$try" rc="$rc" max_other="$MAX_OTHER" D="$D" W="$W"
    (( $? == 3 )) || break  # 3: noisy, try again
  done
}

# ------------------------------------------------------------------ main
LOADS=()
for C in $CONNS; do for M in $MSGS; do
  [[ " $SKIP " == *" $C:$M "* ]] && continue
  LOADS+=("$C:$M")
done; done
NS=$(wc -w <<<"$SERVERS")
EST=$(( REPS * ${#LOADS[@]} * NS * (W + D + 3) ))
{
  echo "# ringpoll-echo vs plain-C echo servers ($STAMP)"
  echo
  echo "- Machine: $(nproc) vCPU ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)), kernel $(uname -r)"
  echo "- ringpoll $(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo '?') (working tree may hold uncommitted changes), $RP_ECHO"
  echo "- Method: REPS=$REPS, D=${D}s measured after W=${W}s warm-up; workloads (C:M) ${LOADS[*]}; servers interleaved in the order: $SERVERS."
  echo "  Server pinned to CPU $SRV_CPU, echo-load (closed loop, one request in flight per connection) to CPU $CLI_CPU; a fresh server per run."
  echo "  req/s, p50, p99: echo-load's RESULT line. Server µs/req: /proc/PID/stat utime/stime ticks (USER_HZ=$HZ) over a window inside the measured seconds, divided by the requests in it."
  echo "  Medians over clean runs; a run is noisy when foreign processes used more than ${MAX_OTHER}% of a core (other%), and is retried up to $RETRIES time(s)."
  echo "  Ratios are against the best plain-C peer at the same workload, per metric (highest req/s; lowest p99; lowest total µs/req): req/s above 1 is better, p99 and µs/req below 1 are better."
  echo "  spread: half the req/s range over the runs used, relative to the median."
  echo "- Command: \`${QUICK:+QUICK=$QUICK }REPS=$REPS D=$D W=$W CONNS=\"$CONNS\" MSGS=\"$MSGS\"${SKIP:+ SKIP=\"$SKIP\"} bench/echo-compare.sh\`"
  echo
} >"$RUNDIR/header.md"
cat "$RUNDIR/header.md"
echo "== about $((EST / 60)) min, plus up to $((QUIET_BUDGET / 60)) min waiting for a quiet box ($REPS reps x ${#LOADS[@]} workloads x $NS servers, ~$((W + D + 3)) s a run); results in $RUNDIR"

T0=$SECONDS
for REP in $(seq 1 "$REPS"); do
  for load in "${LOADS[@]}"; do
    C=${load%%:*}; M=${load#*:}
    echo "== rep $REP/$REPS C=$C M=$M (elapsed $((SECONDS - T0)) s)"
    for S in $SERVERS; do run_one "$S"; done
  done
done
echo "== measured in $((SECONDS - T0)) s"
echo "- Took $(( (SECONDS - T0) / 60 )) min $(( (SECONDS - T0) % 60 )) s." >>"$RUNDIR/header.md"
if [[ -n ${MERGE:-} ]]; then
  echo "- Merged with the runs of: $MERGE" >>"$RUNDIR/header.md"
  cat $MERGE "$RUNS" >"$RUNDIR/runs-merged.jsonl"
  $REPORT summarize "$RUNDIR/runs-merged.jsonl" "$RUNDIR" "$RUNDIR/header.md" || die "summary failed"
else
  $REPORT summarize "$RUNS" "$RUNDIR" "$RUNDIR/header.md" || die "summary failed"
fi
echo
echo "results: $RUNDIR/results.md and $RUNDIR/results.json"
