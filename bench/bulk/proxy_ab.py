#!/usr/bin/env python3
"""A/B of ringpoll-proxy builds on the echo rows: 50 connections × 64 B and × 4 KiB
through each binary, side by side in one run (issue 26: the small-message path must stay
as fast as it was).

  python3 bench/bulk/proxy_ab.py --proxy old=/path/to/old/ringpoll-proxy \\
      --proxy new=build/bin/ringpoll-proxy [--bin build/bin] [--reps 3] [--seconds 5]
      [--set KEY=VALUE ...]

The proxy runs one shard pinned to CPU 0 (taskset); the upstream is ringpoll-serve in
echo mode on epoll (one shard) and the client ringpoll-load, neither pinned. Each
repetition runs the binaries in a rotated order. Per binary and row it prints the median
requests/s, p99, the proxy's user+sys per request and CPU 0's whole busy time per request
(/proc/stat). Nothing here asserts a figure; numbers only mean something on a quiet
machine.
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(HERE, "..", "hardening"))
from common import free_port, wait_port  # noqa: E402
from curl_bulk import cpu0_busy_us, tree_cpu_us  # noqa: E402


def one(args, binary, up_port, conns, size, out):
    port = free_port()
    argv = ["taskset", "-c", "0", binary, "--listen", f"127.0.0.1:{port}", "--upstream",
            f"127.0.0.1:{up_port}", "--set", "engine.shards=1"]
    argv += sum((["--set", s] for s in args.set), [])
    px = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        if not wait_port(port, px):
            sys.exit(f"proxy_ab: {binary} did not listen")
        load = subprocess.Popen([os.path.join(args.bin, "ringpoll-load"), "--mode", "echo", "--target",
                                 f"127.0.0.1:{port}", "--connections", str(conns), "--size", str(size),
                                 "--duration", str(args.seconds), "--warmup", "1", "--json", out],
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        # The CPU window is the load's measured part: after its 1 s warm-up.
        import time
        time.sleep(1)
        c0, b0 = tree_cpu_us(px.pid), cpu0_busy_us()
        time.sleep(args.seconds)
        c1, b1 = tree_cpu_us(px.pid), cpu0_busy_us()
        err = load.communicate()[1]
        with open(out) as f:
            j = json.load(f)
        if load.returncode != 0 or j["errors"]["total"]:
            sys.exit(f"proxy_ab: ringpoll-load through {binary}: exit {load.returncode}, "
                     f"{j['errors']['total']} errors {err[-300:]}")
        n = max(j["requests"], 1)
        return j["requests_per_s"], j["latency_us"]["p99"], (c1 - c0) / n, (b1 - b0) / n
    finally:
        px.terminate()
        px.wait(10)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--proxy", action="append", required=True, help="NAME=PATH (two or more)")
    ap.add_argument("--bin", default="build/bin", help="where ringpoll-serve and ringpoll-load are")
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--seconds", type=int, default=5)
    ap.add_argument("--set", action="append", default=[], help="--set for every proxy")
    args = ap.parse_args()
    cands = [p.split("=", 1) for p in args.proxy]
    rows = [(50, 64), (50, 4096)]
    up_port = free_port()
    up = subprocess.Popen([os.path.join(args.bin, "ringpoll-serve"), "--mode", "echo", "--listen",
                           f"127.0.0.1:{up_port}", "--set", "engine.shards=1", "--set",
                           "engine.backend=epoll"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    tmp = tempfile.mkdtemp(prefix="rp-ab-")
    res = {}
    try:
        if not wait_port(up_port, up):
            sys.exit("proxy_ab: the upstream did not listen")
        for rep in range(args.reps):
            k = rep % len(cands)
            for name, path in cands[k:] + cands[:k]:
                for conns, size in rows:
                    r = one(args, path, up_port, conns, size, f"{tmp}/{name}-{size}-{rep}.json")
                    res.setdefault((name, size), []).append(r)
                    print(f"rep {rep + 1} {name} {conns}×{size} B: {r[0]:.0f} req/s, p99 {r[1]:.0f} µs, "
                          f"proxy {r[2]:.2f} µs/req, cpu0 {r[3]:.2f} µs/req", flush=True)
    finally:
        up.terminate()
        up.wait(10)
    print(f"\n{args.reps} reps, medians")
    print("| row | proxy | req/s | p99 µs | proxy user+sys µs/req | CPU 0 busy µs/req |")
    print("|---|---|---:|---:|---:|---:|")
    for conns, size in rows:
        for name, _ in cands:
            v = res[(name, size)]
            med = [statistics.median(x[i] for x in v) for i in range(4)]
            print(f"| {conns} conn × {size} B | {name} | {med[0]:.0f} | {med[1]:.0f} | {med[2]:.2f} | {med[3]:.2f} |")


if __name__ == "__main__":
    main()
