#!/usr/bin/env bash
# ringpoll's front door. On a fresh Debian 12 machine each command installs what it needs.
#
#   ./ringpoll.sh test [--sanitize address|thread]   install, build, run every test (ctest)
#   ./ringpoll.sh demo                               echo server + L4 proxy + load generator on loopback, report
#   ./ringpoll.sh bench [--quick] [--reps N]         micro-benchmarks + echo/HTTP/proxy side by side with peers
#   ./ringpoll.sh build [--sanitize address|thread]  install and build only
#   ./ringpoll.sh soak --minutes N                   echo, HTTP and proxy traffic for N minutes; fails on drift
set -euo pipefail
cd "$(dirname "$0")"
ROOT=$(pwd)
# ccache (CMakeLists.txt uses it when installed) keys on paths relative to the checkout, so
# clones in other places share one cache.
export CCACHE_BASEDIR="${CCACHE_BASEDIR:-$ROOT}"
# Debug builds (-g) would also hash the build directory's absolute path; without it a
# fresh clone's sanitizer builds hit the cache too (the debug info's directory may then
# name another clone).
export CCACHE_NOHASHDIR="${CCACHE_NOHASHDIR:-1}"

# Debian packages the build and the tests need.
PACKAGES=(g++ cmake ninja-build pkg-config ccache libgtest-dev libgmock-dev
  libbenchmark-dev liburing-dev libnuma-dev libmimalloc-dev libtoml11-dev libcli11-dev
  libssl-dev openssl curl wrk nghttp2-client apache2-utils nginx python3 libc-ares-dev
  dnsmasq-base iproute2)
# libssl-dev: tls/ (OpenSSL 3); openssl, curl, wrk, nghttp2-client (h2load), apache2-utils
# (ab) and nginx: the real clients and servers of the TLS tests (ringpoll-tls-test, against
# ringpoll-serve --tls-cert) and of the HTTP proxy's tests. python3: ringpoll-tune
# (apps/tune) and its test. libc-ares-dev: ringpoll-proxy resolves pool names with c-ares;
# dnsmasq-base (the binary, no service) and iproute2: the fleet test's DNS server and its
# namespaces (tests/fleet/fleet_netns_test.cc).
# The libFuzzer stage of `test` (clang's runtime carries libFuzzer).
FUZZ_PACKAGES=(clang-14 libclang-rt-14-dev)

say() { printf 'ringpoll: %s\n' "$*"; }
die() { printf 'ringpoll: error: %s\n' "$*" >&2; exit 1; }

# Debian's postinst would start the daemons it installs (nginx, haproxy) as services: a
# policy-rc.d (only when none exists; removed after) keeps them stopped. The tests and the
# harness run their own instances with configs in /tmp. SUDO: the command prefix.
POLICY_RC=/usr/sbin/policy-rc.d
hold_service_starts() {
  POLICY_MADE=0
  if [ ! -e "$POLICY_RC" ]; then
    printf '#!/bin/sh\nexit 101\n' | "${SUDO[@]}" tee "$POLICY_RC" >/dev/null \
      && "${SUDO[@]}" chmod +x "$POLICY_RC" && POLICY_MADE=1
  fi
}
release_service_starts() { [ "$POLICY_MADE" = 1 ] && "${SUDO[@]}" rm -f "$POLICY_RC"; return 0; }

install_packages() {
  local missing=() want=("${PACKAGES[@]}")
  [ $# -gt 0 ] && want=("$@")
  for p in "${want[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  say "installing Debian packages: ${missing[*]}"
  local sudo=()
  if [ "$(id -u)" -ne 0 ]; then
    command -v sudo >/dev/null || die "need root (or sudo) to install: ${missing[*]}"
    sudo=(sudo)
  fi
  export DEBIAN_FRONTEND=noninteractive
  SUDO=("${sudo[@]}")
  hold_service_starts
  "${sudo[@]}" apt-get update -qq || { release_service_starts; die "apt-get update failed"; }
  "${sudo[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null \
    || { release_service_starts; die "apt-get install failed for: ${missing[*]}"; }
  release_service_starts
}

# build DIR [cmake args...]   (NINJA_TARGETS limits what is built; default: everything)
build() {
  local dir=$1; shift
  local werror=OFF
  [ "${CI:-}" = "true" ] && werror=ON
  cmake -S "$ROOT" -B "$dir" -G Ninja -DRINGPOLL_WERROR="$werror" "$@" >/dev/null \
    || die "cmake configure failed in $dir"
  # shellcheck disable=SC2086
  ninja -C "$dir" ${NINJA_TARGETS:-} || die "build failed in $dir"
}

parse_sanitize() {
  SAN=""
  while [ $# -gt 0 ]; do
    case "$1" in
      --sanitize) [ $# -ge 2 ] || die "--sanitize needs address or thread"; SAN=$2; shift 2 ;;
      --sanitize=*) SAN=${1#--sanitize=}; shift ;;
      *) die "unknown option '$1'" ;;
    esac
  done
  case "$SAN" in
    "") DIR=build; ARGS=(-DCMAKE_BUILD_TYPE=Release -DRINGPOLL_SANITIZE=) ;;
    address) DIR=build-asan; ARGS=(-DCMAKE_BUILD_TYPE=Debug -DRINGPOLL_SANITIZE=address -DRINGPOLL_BENCH=OFF) ;;
    thread) DIR=build-tsan; ARGS=(-DCMAKE_BUILD_TYPE=Debug -DRINGPOLL_SANITIZE=thread -DRINGPOLL_BENCH=OFF) ;;
    *) die "--sanitize takes 'address' or 'thread', not '$SAN'" ;;
  esac
}

# check_install BUILD_DIR: ringpoll as a library. Installs BUILD_DIR into a temporary
# prefix (not /usr/local, never ldconfig'd), builds the examples the install ships
# (share/doc/ringpoll/examples) out of tree against it with find_package and runs their
# ctest tests (each example on loopback, and every public header compiled alone), then
# builds the installed echo_server and client with nothing but pkg-config's flags (static
# ringpoll.pc, and ringpoll-shared.pc), and runs them with LD_LIBRARY_PATH unset: the
# flags alone must carry C++20 and make the programs find their libraries. The temporary
# directory is removed when everything passed and kept (named in the error) when not.
check_install() {
  local dir=$1 werror=OFF
  [ "${CI:-}" = "true" ] && werror=ON
  local tmp
  tmp=$(mktemp -d /tmp/ringpoll-install.XXXXXX)
  say "installing $dir into $tmp/prefix; building its shipped examples against it"
  cmake --install "$dir" --prefix "$tmp/prefix" >/dev/null || die "cmake --install failed (see $tmp)"
  local ex="$tmp/prefix/share/doc/ringpoll/examples"
  [ -f "$ex/CMakeLists.txt" ] && [ -f "$ex/echo_server.cc" ] \
    || die "the install ships no examples in $ex"
  [ -f "$tmp/prefix/share/doc/ringpoll/docs/getting-started.md" ] \
    || die "the install ships no docs in $tmp/prefix/share/doc/ringpoll/docs"
  local dpdk=OFF
  grep -q '^RINGPOLL_WITH_DPDK:BOOL=ON' "$dir/CMakeCache.txt" && dpdk=ON
  cmake -S "$ex" -B "$tmp/examples" -G Ninja -DCMAKE_PREFIX_PATH="$tmp/prefix" \
    -DEXAMPLES_WERROR="$werror" -DEXAMPLES_EXPECT_DPDK="$dpdk" >/dev/null || die "configuring the installed examples failed (see $tmp)"
  ninja -C "$tmp/examples" || die "building the installed examples failed (see $tmp)"
  (cd "$tmp/examples" && env -u LD_LIBRARY_PATH ctest --no-tests=error --output-on-failure -j2 --timeout 120) \
    || die "the examples' tests failed (see $tmp/examples)"
  local pc
  pc=$(dirname "$(find "$tmp/prefix" -name ringpoll.pc | head -n1)")
  [ -f "$pc/ringpoll.pc" ] || die "ringpoll.pc was not installed"
  [ -f "$pc/ringpoll-shared.pc" ] || die "ringpoll-shared.pc was not installed"
  local flavour bin
  for flavour in ringpoll ringpoll-shared; do
    bin="$tmp/pc-$flavour"
    mkdir -p "$bin"
    # No -std and no -Wl,-rpath here: the .pc file must supply both.
    # shellcheck disable=SC2046  # pkg-config's flags are words
    g++ -O2 -Wall -Wextra -Werror "$ex/echo_server.cc" -o "$bin/echo_server" \
      $(PKG_CONFIG_PATH="$pc" pkg-config --cflags --libs "$flavour") \
      || die "compiling echo_server.cc with pkg-config's flags for $flavour failed (see $tmp)"
    # shellcheck disable=SC2046
    g++ -O2 -Wall -Wextra -Werror "$ex/client.cc" -o "$bin/client" \
      $(PKG_CONFIG_PATH="$pc" pkg-config --cflags --libs "$flavour") \
      || die "compiling client.cc with pkg-config's flags for $flavour failed (see $tmp)"
    env -u LD_LIBRARY_PATH "$bin/echo_server" 127.0.0.1:0 >"$bin/server.out" 2>"$bin/server.err" &
    local spid=$! addr="" i
    for i in $(seq 100); do
      addr=$(sed -n 's/^echo_server: listening on \([^ ,]*\).*/\1/p' "$bin/server.out")
      [ -n "$addr" ] && break
      kill -0 "$spid" 2>/dev/null || break
      sleep 0.1
    done
    [ -n "$addr" ] || { kill "$spid" 2>/dev/null; die "the $flavour pkg-config echo_server did not start (see $bin)"; }
    local reply
    reply=$(env -u LD_LIBRARY_PATH "$bin/client" "$addr" "hello, $flavour" 2>>"$bin/client.err") \
      || { kill "$spid"; die "the $flavour pkg-config client failed (see $bin)"; }
    kill -TERM "$spid"
    wait "$spid" || die "the $flavour pkg-config echo_server did not exit 0 on SIGTERM (see $bin)"
    [ "$reply" = "reply: hello, $flavour" ] || die "the $flavour pkg-config client said '$reply' (see $bin)"
  done
  rm -rf "$tmp"
}

# run_ctest DIR ARGS...: ctest in DIR with ARGS, under CTEST_PREFIX (e.g. setarch). Finding
# no tests is an error (a green run must have run something). A skipped test is listed, and
# under CI=true it fails the run: a test that cannot apply to a build is not compiled into
# it, so a skip always means the machine lacked something (io_uring refused, no root, no
# netns), and then the run has not tested what it claims.
CTEST_PREFIX=()
run_ctest() {
  local dir=$1
  shift
  local log rc=0
  log="$(mktemp)"
  (cd "$dir" && "${CTEST_PREFIX[@]}" ctest --no-tests=error "$@") 2>&1 | tee "$log" || rc=$?
  local skipped
  skipped="$(sed -n '/The following tests did not run:/,/^$/p' "$log" | grep -E '^[[:space:]]+[0-9]+ - ' || true)"
  rm -f "$log"
  [ "$rc" -eq 0 ] || return "$rc"
  if [ -n "$skipped" ]; then
    say "skipped in $dir (their output above says why):"
    printf '%s\n' "$skipped"
    [ "${CI:-}" = true ] && die "CI: $(printf '%s\n' "$skipped" | wc -l) test(s) skipped in $dir; CI needs every test to run"
  fi
  return 0
}

cmd_test() {
  parse_sanitize "$@"
  install_packages
  build "$DIR" "${ARGS[@]}"
  local run=()
  if [ "$SAN" = "thread" ]; then
    # TSan's shadow layout needs a predictable address space; without ASLR it works
    # whatever vm.mmap_rnd_bits says.
    run=(setarch "$(uname -m)" -R)
    export TSAN_OPTIONS="halt_on_error=1 second_deadlock_stack=1 ${TSAN_OPTIONS:-}"
  elif [ "$SAN" = "address" ]; then
    export ASAN_OPTIONS="detect_leaks=1 abort_on_error=0 ${ASAN_OPTIONS:-}"
    export UBSAN_OPTIONS="print_stacktrace=1 halt_on_error=1 ${UBSAN_OPTIONS:-}"
  fi
  say "running ctest in $DIR${SAN:+ ($SAN sanitizer)}"
  CTEST_PREFIX=("${run[@]}")
  run_ctest "$DIR" --output-on-failure -j2 --timeout 300
  CTEST_PREFIX=()
  [ -n "$SAN" ] && return 0
  check_install "$DIR"
  # One minute of soak (bench/hardening/soak.py): no RSS or descriptor drift, no error.
  install_packages python3
  say "soak: 1 minute of echo, HTTP and proxy traffic with churn, slow clients, resets, reloads"
  python3 bench/hardening/soak.py --bin "$DIR/bin" --minutes 1 --out "$DIR/soak" \
    || die "soak: drift or errors (samples in $DIR/soak/samples.json)"
  # The Release run also fuzzes the parsers for a bounded time and runs the Windows
  # backend's suite under Wine.
  install_packages "${FUZZ_PACKAGES[@]}"
  NINJA_TARGETS="config_fuzz http_fuzz proxy_protocol_fuzz client_hello_fuzz http_proxy_fuzz" \
    build build-fuzz -DCMAKE_CXX_COMPILER=clang++-14 -DCMAKE_BUILD_TYPE=Debug \
    -DRINGPOLL_FUZZ=ON -DRINGPOLL_TESTS=OFF -DRINGPOLL_BENCH=OFF -DRINGPOLL_MIMALLOC=OFF
  say "fuzzing the config, HTTP, HTTP proxy, PROXY protocol and ClientHello parsers (20 s each, ASan+UBSan)"
  run_ctest build-fuzz --output-on-failure -L fuzz --timeout 300
  say "the IOCP backend under Wine (ringpoll-win.sh)"
  ./ringpoll-win.sh
  check_packet_paths
}

# Debian packages of the packet-path stage of `test`: DPDK (its net_ring and net_af_packet
# devices need no NIC and no hugepages), libxdp/libbpf for AF_XDP, iproute2 for the veth
# pairs and network namespaces the end-to-end tests create.
BYPASS_PACKAGES=(libdpdk-dev libxdp-dev libbpf-dev iproute2)

# check_packet_paths: the kernel-bypass build (build-bypass/, Release, DPDK and AF_XDP on)
# and only the packet tests there (ctest -L packet): kernel, DPDK on net_ring, and
# kernel, DPDK and AF_XDP over a veth pair. Tests that need root or `ip netns` (or that
# the kernel refuses AF_XDP) report skips, which run_ctest lists (and CI fails on).
check_packet_paths() {
  install_packages "${BYPASS_PACKAGES[@]}"
  NINJA_TARGETS="ringpoll-packet-test" \
    build build-bypass -DCMAKE_BUILD_TYPE=Release -DRINGPOLL_SANITIZE= -DRINGPOLL_WITH_DPDK=ON \
    -DRINGPOLL_WITH_XDP=ON -DRINGPOLL_BENCH=OFF
  say "the packet paths: kernel, DPDK on net_ring, kernel/DPDK/AF_XDP over a veth pair (build-bypass)"
  run_ctest build-bypass --output-on-failure -L packet --timeout 120
}

# Debian packages only bench and demo need (installed by them, not by test/build): the
# peers' tools (wrk, nginx + its stream module, haproxy, Go for go-echo/go-http) and python3
# for the harness (bench/harness, standard library only).
BENCH_PACKAGES=(python3 wrk nginx libnginx-mod-stream haproxy golang-go)

# install_bench_packages PKG...: like install_packages, for bench/demo. Debian's postinst
# would start nginx/haproxy as services; a policy-rc.d (only when none exists, removed
# after) keeps them stopped: the harness runs its own instances with configs in /tmp.
install_bench_packages() {
  local missing=() p
  for p in "$@"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  say "installing Debian packages for bench/demo: ${missing[*]}"
  local sudo=()
  if [ "$(id -u)" -ne 0 ]; then
    command -v sudo >/dev/null || die "need root (or sudo) to install: ${missing[*]}"
    sudo=(sudo)
  fi
  SUDO=("${sudo[@]}")
  hold_service_starts
  export DEBIAN_FRONTEND=noninteractive
  local ok=1
  "${sudo[@]}" apt-get -o DPkg::Lock::Timeout=600 update -qq || ok=0
  [ $ok = 1 ] && { "${sudo[@]}" apt-get -o DPkg::Lock::Timeout=600 install -y -qq \
    --no-install-recommends "${missing[@]}" >/dev/null || ok=0; }
  release_service_starts
  # Not fatal: the harness leaves out (and names) the rows whose tools are missing.
  [ $ok = 1 ] || say "warning: apt-get could not install ${missing[*]}; rows needing them are SKIPPED"
}

# bench_build TARGET...: configure build/ (Release) and build the whole tree; when that
# fails, build each TARGET on its own and stop, naming any that did not build (a figure
# from an older binary would be a surprise). BENCH_TARGETS (env) builds only those targets instead of the
# whole tree; NINJA_JOBS (env) is passed to ninja as -j.
bench_build() {
  local werror=OFF t failed=()
  [ "${CI:-}" = "true" ] && werror=ON
  cmake -S "$ROOT" -B build -G Ninja -DRINGPOLL_WERROR="$werror" -DCMAKE_BUILD_TYPE=Release \
    -DRINGPOLL_SANITIZE= >/dev/null || die "cmake configure failed in build/"
  local jobs=()
  [ -n "${NINJA_JOBS:-}" ] && jobs=(-j "$NINJA_JOBS")
  # shellcheck disable=SC2086
  if [ -n "${BENCH_TARGETS:-}" ]; then
    say "building only: $BENCH_TARGETS (BENCH_TARGETS)"
    set -- $BENCH_TARGETS
  elif ninja -C build "${jobs[@]}"; then
    return 0
  else
    say "the full Release build failed; building the programs bench/demo use one by one"
  fi
  for t in "$@"; do
    ninja -C build "${jobs[@]}" "$t" >"build/bench-build-$t.log" 2>&1 || failed+=("$t")
  done
  # A program that did not build is not measured from an older binary: stop here.
  for t in "${failed[@]}"; do
    rm -f "build/bin/$t"
    say "error: $t did not build (build/bench-build-$t.log)"
  done
  [ ${#failed[@]} -eq 0 ] || die "not measuring with programs that do not build: ${failed[*]}"
}

# A process run in the background and waited for, so that Ctrl-C / SIGTERM stop it by PID.
run_stoppable() {
  "$@" &
  local pid=$!
  trap 'kill "$pid" 2>/dev/null; wait "$pid" 2>/dev/null; exit 130' INT TERM
  local rc=0
  wait "$pid" || rc=$?
  trap - INT TERM
  return $rc
}

cmd_bench() {
  local quick=0 a
  for a in "$@"; do [ "$a" = "--quick" ] && quick=1; done
  install_packages
  install_bench_packages "${BENCH_PACKAGES[@]}"
  bench_build ringpoll-microbench ringpoll-load ringpoll-echo ringpoll-serve ringpoll-proxy
  [ -x build/bin/ringpoll-load ] || die "no build/bin/ringpoll-load: nothing to drive the servers with"
  local stamp out reps=5
  stamp=$(date +%Y%m%d-%H%M%S)
  out="results/$stamp"
  mkdir -p "$out"
  [ $quick = 1 ] && reps=1
  local mb=""
  if [ -x build/bin/ringpoll-microbench ]; then
    mb="$out/microbench.json"
    say "micro-benchmarks, $reps repetitions, medians; JSON in $mb"
    # Bounded: a benchmark that hangs is reported, and the matrix still runs.
    run_stoppable timeout 1200 build/bin/ringpoll-microbench --benchmark_repetitions="$reps" \
      --benchmark_report_aggregates_only=true --benchmark_out="$mb" --benchmark_out_format=json \
      || { say "warning: the micro-benchmarks failed or hit their 20-minute bound"; mb=""; }
  else
    say "SKIPPED: the micro-benchmarks (build/bin/ringpoll-microbench did not build)"
  fi
  # The side-by-side matrix (bench/README.md); it names every row it has to skip.
  command -v python3 >/dev/null || die "python3 is needed for the bench harness (apt-get install python3)"
  exec python3 bench/harness bench --out "$out" ${mb:+--microbench "$mb"} "$@"
}

# soak --minutes N [--out DIR]: bench/hardening/soak.py against the Release build's ringpoll-serve
# and ringpoll-proxy (RSS, descriptors at rest and errors checked; exit 1 on drift).
cmd_soak() {
  install_packages
  install_packages python3
  NINJA_TARGETS="ringpoll-serve ringpoll-proxy" build build -DCMAKE_BUILD_TYPE=Release -DRINGPOLL_SANITIZE=
  say "soak: $*"
  python3 bench/hardening/soak.py --bin build/bin "$@"
}

cmd_demo() {
  install_packages
  # haproxy and nginx's stream module: the peers the demo runs beside ringpoll-proxy.
  install_bench_packages python3 haproxy nginx libnginx-mod-stream
  bench_build ringpoll-serve ringpoll-proxy ringpoll-load ringpoll-echo
  # bench/harness: starts ringpoll-serve (echo) on a free loopback port, drives it with
  # ringpoll-load directly and through ringpoll-proxy (the backend that runs, then epoll),
  # haproxy and nginx stream in turn, prints the table, writes
  # results/demo-<stamp>/report.html, and stops everything it started (also on Ctrl-C).
  # Exit 3 when a part could not run.
  command -v python3 >/dev/null || die "python3 is needed for the demo (apt-get install python3)"
  exec python3 bench/harness demo "$@"
}

case "${1:-}" in
  test) shift; cmd_test "$@" ;;
  bench) shift; cmd_bench "$@" ;;
  demo) shift; cmd_demo "$@" ;;
  soak) shift; cmd_soak "$@" ;;
  build) shift; parse_sanitize "$@"; install_packages; build "$DIR" "${ARGS[@]}" ;;
  -h|--help|help|"") sed -n '2,8p' "$0" | sed 's/^# \{0,1\}//' ;;
  *) die "unknown command '$1' (try: test, demo, bench, build, soak)" ;;
esac
