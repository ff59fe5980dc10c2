#!/usr/bin/env python3
"""Proxy scale and flood figures (issue 22), for the lead's benchmark runs.

  python3 bench/hardening/scale.py idle  --bin build/bin --connections 100000 [--proxy ringpoll|haproxy|nginx]
  python3 bench/hardening/scale.py flood --bin build/bin [--seconds 10] [--limit-rate 100]

idle:  an echo upstream (ringpoll-serve, one per upstream address so the proxy's own
       connects have ports to spare), the proxy in front of it, and N client connections
       held open from 127.0.0.x source addresses (50,000 per address at most, well inside
       the ephemeral port range). Prints the proxy's RSS before and with the N connections
       idle, the difference per connection, and checks one echo on every 1,000th. Raises
       RLIMIT_NOFILE for itself and says so when the hard limit is too low.
flood: ringpoll-proxy with max_client_conn_rate = --limit-rate on its listener (0: none),
       20 established clients making echo round trips while a flooder opens and drops
       connections as fast as it can from another address; prints the established
       clients' p50/p99/max and the connections the proxy refused.

Numbers only mean something on a quiet machine; nothing here asserts a figure.
"""
import argparse
import os
import resource
import signal
import socket
import subprocess
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import free_port, rss_kib, wait_port  # noqa: E402


def tree_rss_kib(pid):
    pids = [pid]
    try:  # nginx and haproxy may fork workers: count the whole tree
        out = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True).stdout
        pids += [int(x) for x in out.split()]
    except FileNotFoundError:
        pass
    return sum(rss_kib(p) for p in pids)


def raise_nofile(want):
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard < want:
        sys.exit(f"scale: needs {want} descriptors, the hard RLIMIT_NOFILE is {hard}: "
                 f"raise it (ulimit -Hn as root, or LimitNOFILE=)")
    if soft < want:
        resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))


def connect_from(src, port):
    s = socket.socket()
    s.bind((src, 0))
    s.connect(("127.0.0.1", port))
    return s


def echo_ok(s):
    s.sendall(b"x")
    return s.recv(1) == b"x"


def start_upstreams(args, n):
    procs, addrs = [], []
    for _ in range(n):
        port = free_port()
        procs.append(subprocess.Popen(
            [f"{args.bin}/ringpoll-serve", "--mode", "echo", "--listen", f"127.0.0.1:{port}",
             "--set", "engine.shards=1"], stdout=subprocess.DEVNULL))
        if not wait_port(port):
            sys.exit(f"scale: the echo upstream on {port} did not start")
        addrs.append(f"127.0.0.1:{port}")
    return procs, addrs


def write_config(path, text):
    with open(path, "w") as f:
        f.write(text)
    return path


def start_proxy(args, kind, port, upstreams, extra_listener=""):
    d = args.out
    if kind == "ringpoll":
        ups = ", ".join(f'"{u}"' for u in upstreams)
        cfg = write_config(f"{d}/proxy.toml",
                           f'[timeouts]\nidle_ms = 0\n\n[socket]\nbacklog = 65535\n\n'
                           f'[[proxy.pool]]\nname = "up"\nupstreams = [{ups}]\n\n'
                           f'[[proxy.listener]]\nname = "scale"\nlisten = "127.0.0.1:{port}"\n'
                           f'pool = "up"\n{extra_listener}')
        argv = [f"{args.bin}/ringpoll-proxy", "--config", cfg, "--admin", f"127.0.0.1:{args.admin}"]
        argv += sum((["--set", s] for s in args.set), [])
    elif kind == "haproxy":
        servers = "\n".join(f"  server u{i} {u}" for i, u in enumerate(upstreams))
        cfg = write_config(
            f"{d}/haproxy.cfg",
            f"global\n  maxconn 250000\n  nbthread 1\ndefaults\n  mode tcp\n"
            f"  timeout connect 5s\n  timeout client 1h\n  timeout server 1h\n"
            f"frontend fe\n  bind 127.0.0.1:{port}\n  maxconn 250000\n  default_backend be\n"
            f"backend be\n  balance roundrobin\n{servers}\n")
        argv = ["haproxy", "-f", cfg]
    elif kind == "nginx":
        servers = "\n".join(f"    server {u};" for u in upstreams)
        cfg = write_config(
            f"{d}/nginx.conf",
            f"daemon off;\nworker_processes 1;\nworker_rlimit_nofile 300000;\n"
            f"pid {d}/nginx.pid;\nerror_log {d}/nginx.err;\n"
            f"load_module /usr/lib/nginx/modules/ngx_stream_module.so;\n"
            f"events {{ worker_connections 250000; }}\n"
            f"stream {{\n  upstream up {{\n{servers}\n  }}\n"
            f"  server {{ listen 127.0.0.1:{port} backlog=65535; proxy_pass up; }}\n}}\n")
        argv = ["nginx", "-c", cfg, "-p", d]
    else:
        sys.exit(f"scale: unknown --proxy {kind}")
    p = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=open(f"{d}/{kind}.log", "w"))
    if not wait_port(port):
        sys.exit(f"scale: {kind} did not start (see {d}/{kind}.log)")
    return p


def idle(args):
    n = args.connections
    raise_nofile(2 * n + 4096)  # our clients; the servers raise their own
    ups, addrs = start_upstreams(args, max(1, (n + 19999) // 20000))
    port = free_port()
    px = start_proxy(args, args.proxy, port, addrs)
    try:
        time.sleep(1)
        before = tree_rss_kib(px.pid)
        socks = []
        t0 = time.time()
        per_src = 50000
        for i in range(n):
            socks.append(connect_from(f"127.0.0.{10 + i // per_src}", port))
        for s in socks[::1000]:
            if not echo_ok(s):
                sys.exit("scale: a proxied connection did not echo")
        took = time.time() - t0
        time.sleep(2)
        with_conns = tree_rss_kib(px.pid)
        print(f"scale: {args.proxy}: {n} idle proxied connections opened in {took:.1f} s")
        print(f"scale: {args.proxy}: RSS {before} KiB idle, {with_conns} KiB with them: "
              f"{(with_conns - before) * 1024 / n:.0f} bytes per connection (proxy process only; "
              f"kernel socket memory is not in RSS)")
        for s in socks:
            s.close()
    finally:
        for p in [px] + ups:
            p.send_signal(signal.SIGTERM)
            try:
                p.wait(10)
            except subprocess.TimeoutExpired:
                p.kill()


def flood(args):
    ups, addrs = start_upstreams(args, 1)
    port = free_port()
    extra = f"max_client_conn_rate = {args.limit_rate}\n" if args.limit_rate > 0 else ""
    px = start_proxy(args, "ringpoll", port, addrs, extra)
    stop = threading.Event()
    attempts = [0]

    def flooder():
        while not stop.is_set():
            try:
                connect_from("127.0.0.200", port).close()
            except OSError:
                pass
            attempts[0] += 1

    try:
        clients = [connect_from("127.0.0.1", port) for _ in range(20)]
        fl = [threading.Thread(target=flooder) for _ in range(4)]
        for t in fl:
            t.start()
        lat = []
        end = time.time() + args.seconds
        while time.time() < end:
            for c in clients:
                t0 = time.perf_counter()
                c.sendall(b"p" * 100)
                got = b""
                while len(got) < 100:
                    got += c.recv(100 - len(got))
                lat.append((time.perf_counter() - t0) * 1000)
        stop.set()
        for t in fl:
            t.join()
        lat.sort()
        m = subprocess.run(["curl", "-s", f"http://127.0.0.1:{args.admin}/metrics"],
                           capture_output=True, text=True).stdout
        refused = [l for l in m.splitlines() if "refused" in l and not l.startswith("#")]
        print(f"scale: flood ({attempts[0]} flood connections, limit {args.limit_rate}/s): "
              f"established p50 {lat[len(lat) // 2]:.3f} ms, p99 {lat[int(len(lat) * 0.99)]:.3f} ms, "
              f"max {lat[-1]:.3f} ms over {len(lat)} round trips")
        for line in refused:
            print(f"scale:   {line}")
    finally:
        for p in [px] + ups:
            p.send_signal(signal.SIGTERM)
            p.wait(10)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("mode", choices=["idle", "flood"])
    ap.add_argument("--bin", default="build/bin")
    ap.add_argument("--connections", type=int, default=100000)
    ap.add_argument("--proxy", default="ringpoll", choices=["ringpoll", "haproxy", "nginx"])
    ap.add_argument("--seconds", type=float, default=10)
    ap.add_argument("--limit-rate", type=int, default=100)
    ap.add_argument("--set", action="append", default=[], help="ringpoll-proxy --set KEY=VALUE")
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    args.out = os.path.abspath(args.out or time.strftime("results/scale-%Y%m%d-%H%M%S"))
    os.makedirs(args.out, exist_ok=True)
    args.admin = free_port()
    idle(args) if args.mode == "idle" else flood(args)


if __name__ == "__main__":
    main()
