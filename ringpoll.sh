#!/usr/bin/env bash
# ringpoll's front door. On a fresh Debian 12 machine each command installs what it needs.
#
#   ./ringpoll.sh test [--sanitize address|thread]   install, build, run every test (ctest)
#   ./ringpoll.sh demo                               echo server + load generator on loopback (proxy: not yet)
#   ./ringpoll.sh bench [--quick]                    micro-benchmarks + echo side by side with C peers
#   ./ringpoll.sh build [--sanitize address|thread]  install and build only
set -euo pipefail
cd "$(dirname "$0")"
ROOT=$(pwd)

# Debian packages the build and the tests need.
PACKAGES=(g++ cmake ninja-build pkg-config ccache libgtest-dev libgmock-dev
  libbenchmark-dev liburing-dev libnuma-dev libmimalloc-dev)

say() { printf 'ringpoll: %s\n' "$*"; }
die() { printf 'ringpoll: error: %s\n' "$*" >&2; exit 1; }

install_packages() {
  local missing=()
  for p in "${PACKAGES[@]}"; do
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
  "${sudo[@]}" apt-get update -qq || die "apt-get update failed"
  "${sudo[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null \
    || die "apt-get install failed for: ${missing[*]}"
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
    address) DIR=build-asan; ARGS=(-DCMAKE_BUILD_TYPE=Debug -DRINGPOLL_SANITIZE=address) ;;
    thread) DIR=build-tsan; ARGS=(-DCMAKE_BUILD_TYPE=Debug -DRINGPOLL_SANITIZE=thread) ;;
    *) die "--sanitize takes 'address' or 'thread', not '$SAN'" ;;
  esac
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
  (cd "$DIR" && "${run[@]}" ctest --output-on-failure -j2 --timeout 300)
}

cmd_bench() {
  install_packages
  build build -DCMAKE_BUILD_TYPE=Release
  local reps=5
  [ "${1:-}" = "--quick" ] && reps=1
  mkdir -p results
  local out="results/microbench-$(date +%Y%m%d-%H%M%S).json"
  say "micro-benchmarks, $reps repetitions, medians; JSON in $out"
  build/bin/ringpoll-microbench --benchmark_repetitions="$reps" \
    --benchmark_report_aggregates_only=true --benchmark_out="$out" --benchmark_out_format=json
  # The side-by-side echo run against the plain-C peers (skips them, saying so, when
  # ../shared/peers or RINGPOLL_PEERS is absent).
  local peers=${RINGPOLL_PEERS:-$ROOT/../shared/peers}
  if [ ! -d "$peers" ] && [ -z "${ECHO_LOAD:-}" ]; then
    say "no peers folder at $peers (set RINGPOLL_PEERS): the echo comparison with the plain-C"
    say "servers and echo-load is SKIPPED; only the micro-benchmarks above ran"
  elif [ "${1:-}" = "--quick" ]; then
    NINJA_TARGETS=ringpoll-echo build build -DCMAKE_BUILD_TYPE=Release
    QUICK=1 RINGPOLL_PEERS="$peers" RINGPOLL_BUILD="$ROOT/build" NO_BUILD=1 bash bench/echo-compare.sh
  else
    RINGPOLL_PEERS="$peers" RINGPOLL_BUILD="$ROOT/build" NO_BUILD=1 bash bench/echo-compare.sh
  fi
  say "not yet in bench: HTTP (nginx, Go), the proxy (haproxy, nginx stream) and SVG charts (issues 5-6)"
}

free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'
}

cmd_demo() {
  install_packages
  NINJA_TARGETS="ringpoll-echo ringpoll-load" build build -DCMAKE_BUILD_TYPE=Release
  local port pid backend
  port=$(free_port)
  # The engine picks io_uring when the kernel allows it, else epoll; the echo server says
  # which in its first line.
  backend=io_uring-completion
  build/bin/ringpoll-echo --backend "$backend" --listen "127.0.0.1:$port" &
  pid=$!
  trap 'kill "$pid" 2>/dev/null; wait "$pid" 2>/dev/null' EXIT INT TERM
  for _ in $(seq 50); do
    (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && break
    sleep 0.1
  done
  if ! kill -0 "$pid" 2>/dev/null; then
    backend=epoll
    say "io_uring echo server did not start; trying epoll"
    build/bin/ringpoll-echo --backend epoll --listen "127.0.0.1:$port" &
    pid=$!
    sleep 0.5
  fi
  say "demo: ringpoll-echo ($backend) on 127.0.0.1:$port, ringpoll-load: 50 connections x 64 B, 5 s"
  build/bin/ringpoll-load --mode echo --target "127.0.0.1:$port" --connections 50 --size 64 \
    --warmup 1 --duration 5 || die "the load run failed"
  say "demo incomplete: the L4 proxy between load and server (ringpoll-proxy, issue 5) is not built yet"
  exit 3
}

case "${1:-}" in
  test) shift; cmd_test "$@" ;;
  bench) shift; cmd_bench "$@" ;;
  demo) shift; cmd_demo "$@" ;;
  build) shift; parse_sanitize "$@"; install_packages; build "$DIR" "${ARGS[@]}" ;;
  -h|--help|help|"") sed -n '2,8p' "$0" | sed 's/^# \{0,1\}//' ;;
  *) die "unknown command '$1' (try: test, demo, bench, build)" ;;
esac
