#!/usr/bin/env bash
# bench/packet/compare.sh [BUILD_DIR] [SECONDS]: the packet paths side by side, one run.
#
#   1. loop: one queue sending bursts of 32 to itself (ringpoll-packet-bench loop): the
#      kernel path over 127.0.0.1, DPDK over net_ring (in memory); 64 B and 1 KiB.
#   2. veth: ringpoll-serve --mode udp-echo (one shard) on each path, the kernel as the
#      client in a network namespace at the other end of a veth pair (16 datagrams in
#      flight, closed loop); 64 B and 1 KiB. DPDK reaches the veth through net_af_packet,
#      AF_XDP (when built) binds the veth's queue 0 (native copy mode on veth).
#
# Needs root (namespace, veth) and a build with -DRINGPOLL_WITH_DPDK=ON and the benches
# (ringpoll-packet-bench). Virtual devices: these figures show what each path costs on
# this machine's CPU, not what a real NIC would do (see the README).
set -euo pipefail
B=${1:-build-bypass}
S=${2:-3}
BENCH=$B/bin/ringpoll-packet-bench
SERVE=$B/bin/ringpoll-serve
[ -x "$BENCH" ] && [ -x "$SERVE" ] || { echo "compare.sh: build $B with -DRINGPOLL_BENCH=ON first" >&2; exit 2; }
[ "$(id -u)" = 0 ] || { echo "compare.sh: needs root for the veth pair" >&2; exit 2; }

ns=rpkb$$ a=rpkb$$a b=rpkb$$b
out=$(mktemp -d /tmp/ringpoll-packet-bench.XXXXXX)
serve_pid=
cleanup() {
  [ -n "$serve_pid" ] && kill "$serve_pid" 2>/dev/null && wait "$serve_pid" 2>/dev/null
  ip link del "$a" 2>/dev/null || true
  ip netns del "$ns" 2>/dev/null || true
}
trap cleanup EXIT
ip netns add "$ns"
ip link add "$a" type veth peer name "$b" netns "$ns"
ip -n "$ns" addr add 10.78.0.2/24 dev "$b"
ip -n "$ns" link set lo up
ip -n "$ns" link set "$b" up
ip link set "$a" up

results=$out/results.jsonl
for path in kernel dpdk; do
  for size in 64 1024; do
    "$BENCH" loop --path "$path" --size "$size" --seconds "$S" | sed 's/"kind":"loop"/"kind":"loop (same queue)"/' >>"$results"
  done
done

# serve_on PATH ARGS...: starts the echo server and waits for its first line.
serve_on() {
  local path=$1; shift
  "$SERVE" --mode udp-echo --listen 10.78.0.1:9000 --set engine.shards=1 --set engine.pin=false \
    --set packet.path="$path" "$@" >"$out/serve-$path.out" 2>"$out/serve-$path.err" &
  serve_pid=$!
  for _ in $(seq 200); do grep -q "udp-echo on" "$out/serve-$path.out" 2>/dev/null && return 0; sleep 0.05; done
  echo "compare.sh: ringpoll-serve on $path did not start:" >&2; cat "$out/serve-$path.err" >&2; exit 1
}
stop_serve() { kill -TERM "$serve_pid"; wait "$serve_pid" || true; serve_pid=; }

client() {
  ip netns exec "$ns" "$BENCH" client --to 10.78.0.1:9000 --size "$2" --seconds "$S" --window 16 \
    | sed "s/\"path\":\"kernel\"/\"path\":\"$1\"/; s/\"kind\":\"echo\"/\"kind\":\"veth echo\"/"
}

ip addr add 10.78.0.1/24 dev "$a"
serve_on kernel
for size in 64 1024; do client kernel "$size" >>"$results"; done
stop_serve
ip addr del 10.78.0.1/24 dev "$a"

serve_on dpdk --set packet.dpdk_port=net_af_packet0 \
  --set "packet.dpdk_args=\"--no-huge --no-pci --no-shconf --no-telemetry -m 64 --vdev=net_af_packet0,iface=$a --log-level=lib.eal:error\""
for size in 64 1024; do client dpdk "$size" >>"$results"; done
stop_serve

if "$SERVE" --mode udp-echo --listen 10.78.0.1:1 --set packet.path=xdp --set packet.xdp_iface=none0 2>&1 \
    | grep -q "this build has no AF_XDP"; then
  echo "compare.sh: AF_XDP rows left out (build without -DRINGPOLL_WITH_XDP=ON)" >&2
else
  serve_on xdp --set packet.xdp_iface="$a"
  for size in 64 1024; do client xdp "$size" >>"$results"; done
  stop_serve
fi

python3 - "$results" <<'PY'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
print(f"{'run':<18} {'path':<7} {'size':>5} {'datagrams/s':>12} {'p50 us':>8} {'p99 us':>8} {'lost':>6}")
for r in rows:
    lost = r["rx_dropped"] + r["tx_dropped"]
    print(f"{r['kind']:<18} {r['path']:<7} {r['size']:>5} {r['per_second']:>12,.0f} {r['p50_us']:>8.1f} {r['p99_us']:>8.1f} {lost:>6}")
PY
echo "(raw: $results; loop latency is per burst of 32, echo latency per round trip)"
