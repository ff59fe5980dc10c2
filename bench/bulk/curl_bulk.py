#!/usr/bin/env python3
"""Bulk download figures for issue 26: curl fetching a 100 MB file from a local nginx,
directly and through each proxy, side by side in one run.

  python3 bench/bulk/curl_bulk.py --bin build/bin [--reps 5] [--downloads 4] [--size-mb 100]

Candidates: direct (no proxy), ringpoll-proxy (io_uring completion, the default),
ringpoll-proxy on epoll, haproxy (1 thread, option splice-auto) and nginx stream
(1 worker; nginx has no splice). Every proxy runs one shard/thread/worker pinned to
CPU 0 with taskset; curl and the origin nginx are not pinned. Each repetition runs the
candidates in a rotated order; each candidate does --downloads transfers per repetition.

Per candidate it prints the median MB/s (10^6 bytes) over all transfers, the proxy's own
CPU (user+sys of its process tree) per MB and CPU 0's whole busy time per MB
(/proc/stat: the proxy's core, including softirq work done there), medians of the
per-repetition values. Nothing here asserts a figure; numbers only mean something on a
quiet machine.
"""
import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "hardening"))
from common import free_port, stop, wait_port  # noqa: E402

STREAM_MODULE = "/usr/lib/nginx/modules/ngx_stream_module.so"
TICK_US = 1e6 / os.sysconf("SC_CLK_TCK")


def tree_cpu_us(pid):
    """user+sys of pid and its children (nginx forks its worker)."""
    pids = [pid]
    out = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True).stdout
    pids += [int(x) for x in out.split()]
    total = 0
    for p in pids:
        try:
            with open(f"/proc/{p}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])
        except (FileNotFoundError, ProcessLookupError):
            pass
    return total * TICK_US


def cpu0_busy_us():
    with open("/proc/stat") as f:
        for line in f:
            if line.startswith("cpu0 "):
                v = [int(x) for x in line.split()[1:]]
                idle = v[3] + v[4]
                return (sum(v[:8]) - idle) * TICK_US
    raise RuntimeError("no cpu0 line in /proc/stat")


def nginx_origin(d, port, size_mb):
    os.makedirs(os.path.join(d, "www"), exist_ok=True)
    path = os.path.join(d, "www", "file")
    with open(path, "wb") as f:
        chunk = os.urandom(1 << 20)
        for _ in range(size_mb * 1000000 // len(chunk)):
            f.write(chunk)
        f.write(chunk[: size_mb * 1000000 % len(chunk)])
    conf = os.path.join(d, "origin.conf")
    with open(conf, "w") as f:
        f.write(f"""worker_processes 1;
daemon off;
pid {d}/origin.pid;
error_log {d}/origin.log warn;
events {{ worker_connections 1024; }}
http {{
  access_log off;
  sendfile on;
  tcp_nopush on;
  client_body_temp_path {d}/b; proxy_temp_path {d}/p; fastcgi_temp_path {d}/f;
  uwsgi_temp_path {d}/u; scgi_temp_path {d}/s;
  server {{ listen 127.0.0.1:{port}; root {d}/www; }}
}}
""")
    return ["nginx", "-p", d + "/", "-e", f"{d}/origin.log", "-c", conf]


def candidates(args, d, origin_port):
    pin = ["taskset", "-c", "0"]
    proxy = os.path.join(args.bin, "ringpoll-proxy")
    out = [("direct", None)]
    variants = [("ringpoll-proxy (io_uring completion, default)", []),
                ("ringpoll-proxy epoll", ["--set", "engine.backend=epoll"])]
    for v in args.variant:  # LABEL=key=value[,key=value...]
        label, _, sets = v.partition("=")
        extra = []
        for kv in sets.split(","):
            extra += ["--set", kv]
        variants.append((f"ringpoll-proxy {label}", extra))
    for name, extra in variants:
        out.append((name, lambda p, extra=extra: pin + [
            proxy, "--listen", f"127.0.0.1:{p}", "--upstream", f"127.0.0.1:{origin_port}",
            "--set", "engine.shards=1"] + extra))
    if shutil.which("haproxy"):
        def hap(p):
            conf = os.path.join(d, f"haproxy-{p}.cfg")
            with open(conf, "w") as f:
                f.write(f"""global
  nbthread 1
defaults
  mode tcp
  option splice-auto
  timeout connect 5s
  timeout client 60s
  timeout server 60s
listen fwd
  bind 127.0.0.1:{p}
  server o 127.0.0.1:{origin_port}
""")
            return pin + ["haproxy", "-db", "-f", conf]
        out.append(("haproxy (1 thread, splice-auto)", hap))
    if shutil.which("nginx") and os.path.exists(STREAM_MODULE):
        def ngs(p):
            sd = os.path.join(d, f"stream-{p}")
            os.makedirs(sd, exist_ok=True)
            conf = os.path.join(sd, "nginx.conf")
            with open(conf, "w") as f:
                f.write(f"""load_module {STREAM_MODULE};
worker_processes 1;
daemon off;
pid {sd}/nginx.pid;
error_log {sd}/error.log warn;
events {{ worker_connections 1024; }}
stream {{ server {{ listen 127.0.0.1:{p}; proxy_pass 127.0.0.1:{origin_port}; }} }}
""")
            return pin + ["nginx", "-p", sd + "/", "-e", f"{sd}/error.log", "-c", conf]
        out.append(("nginx stream (1 worker)", ngs))
    return out


def download(port, size_mb):
    r = subprocess.run(["curl", "-s", "-o", "/dev/null", "-w", "%{size_download} %{speed_download}",
                        f"http://127.0.0.1:{port}/file"], capture_output=True, text=True, timeout=60)
    if r.returncode != 0:
        raise RuntimeError(f"curl through port {port} failed: exit {r.returncode} {r.stderr}")
    size, speed = r.stdout.split()
    if int(float(size)) != size_mb * 1000000:
        raise RuntimeError(f"curl through port {port} got {size} bytes, not {size_mb} MB")
    return float(speed) / 1e6


def run_candidate(name, argv_fn, args, origin_port):
    proc = None
    port = origin_port
    if argv_fn:
        port = free_port()
        proc = subprocess.Popen(argv_fn(port), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        if not wait_port(port, proc):
            raise RuntimeError(f"{name} did not listen: {proc.stderr.read().decode()[-400:]}")
        download(port, args.size_mb)  # warm-up, not counted
    try:
        pid = proc.pid if proc else None
        c0, b0 = (tree_cpu_us(pid) if pid else 0), cpu0_busy_us()
        speeds = [download(port, args.size_mb) for _ in range(args.downloads)]
        c1, b1 = (tree_cpu_us(pid) if pid else 0), cpu0_busy_us()
        mb = args.downloads * args.size_mb
        return speeds, (c1 - c0) / mb, (b1 - b0) / mb
    finally:
        if proc:
            stop(proc)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--bin", default="build/bin")
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--downloads", type=int, default=4)
    ap.add_argument("--size-mb", type=int, default=100)
    ap.add_argument("--variant", action="append", default=[],
                    help="another ringpoll-proxy candidate: LABEL=key=value[,key=value...]")
    ap.add_argument("--only", default="", help="comma-separated substrings of candidate names")
    args = ap.parse_args()
    d = tempfile.mkdtemp(prefix="rp-bulk-")
    os.chmod(d, 0o755)  # nginx workers run as nobody
    origin_port = free_port()
    origin = subprocess.Popen(nginx_origin(d, origin_port, args.size_mb), stderr=subprocess.PIPE)
    try:
        if not wait_port(origin_port, origin):
            sys.exit(f"origin nginx did not start: {origin.stderr.read().decode()[-400:]}")
        cands = candidates(args, d, origin_port)
        if args.only:
            words = args.only.split(",")
            cands = [c for c in cands if c[0] == "direct" or any(w in c[0] for w in words)]
        res = {n: ([], [], []) for n, _ in cands}
        for rep in range(args.reps):
            k = rep % len(cands)
            for name, fn in cands[k:] + cands[:k]:
                speeds, cpu, core = run_candidate(name, fn, args, origin_port)
                res[name][0].extend(speeds)
                res[name][1].append(cpu)
                res[name][2].append(core)
                print(f"rep {rep + 1} {name}: {statistics.median(speeds):.0f} MB/s, "
                      f"proxy {cpu:.0f} µs/MB, cpu0 {core:.0f} µs/MB", flush=True)
        direct = statistics.median(res["direct"][0])
        print(f"\n{args.reps} reps × {args.downloads} downloads of {args.size_mb} MB, medians")
        print(f"| {'candidate':<46} | MB/s | × direct | proxy CPU µs/MB | CPU 0 busy µs/MB |")
        print(f"|{'-' * 48}|-----:|---------:|----------------:|-----------------:|")
        for name, _ in cands:
            s, c, b = res[name]
            ms = statistics.median(s)
            cpu = "—" if name == "direct" else f"{statistics.median(c):.0f}"
            print(f"| {name:<46} | {ms:.0f} | {ms / direct:.2f} | {cpu} | {statistics.median(b):.0f} |")
    finally:
        origin.terminate()
        origin.wait(5)
        shutil.rmtree(d, ignore_errors=True)


if __name__ == "__main__":
    main()
