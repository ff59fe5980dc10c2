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
       A process holds two descriptors per proxied connection, so where the hard
       RLIMIT_NOFILE is below 2N (20,000 on the lead's VM) the run takes --processes K
       (default: as many as the limit needs) instances of every proxy, each on its own
       port with N/K of the connections, and as many client processes; the figure is the
       instances' RSS growth summed, per connection. Every proxy gets the same K.
flood: the proxy (--proxy; ringpoll-proxy with max_client_conn_rate = --limit-rate on its listener, 0: none),
       20 established clients making echo round trips while a flooder opens and drops
       connections as fast as it can from another address; prints the established
       clients' p50/p99/max and the connections the proxy refused.

Numbers only mean something on a quiet machine; nothing here asserts a figure.
"""
import argparse
import atexit
import json
import os
import resource
import signal
import subprocess
import sys
import urllib.request
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import free_port, rss_kib, wait_port  # noqa: E402


STARTED = []  # every process started here, stopped at exit even when a start fails


@atexit.register
def _stop_started():
    for p in STARTED:
        if p.poll() is None:
            p.kill()
            p.wait()


def tree_rss_kib(pid):
    pids = [pid]
    try:  # nginx and haproxy may fork workers: count the whole tree
        out = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True).stdout
        pids += [int(x) for x in out.split()]
    except FileNotFoundError:
        pass
    return sum(rss_kib(p) for p in pids)


def admin_metric(args, name, admin=None):
    """One unlabelled value from ringpoll-proxy's admin endpoint ('?' when it does not answer)."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{admin or args.admin}/metrics",
                                    timeout=5) as r:
            for line in r.read().decode().splitlines():
                if line.startswith(name + " "):
                    return line.split()[1]
    except OSError:
        pass
    return "?"


def raise_nofile(want):
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard < want:
        sys.exit(f"scale: needs {want} descriptors, the hard RLIMIT_NOFILE is {hard}: "
                 f"raise it (ulimit -Hn as root, or LimitNOFILE=)")
    if soft < want:
        resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))


def start_upstreams(args, n):
    procs, addrs = [], []
    for _ in range(n):
        port = free_port()
        procs.append(subprocess.Popen(
            [f"{args.bin}/ringpoll-serve", "--mode", "echo", "--listen", f"127.0.0.1:{port}",
             "--set", "engine.shards=1", "--set", "timeouts.idle_ms=0"],
            stdout=subprocess.DEVNULL))  # idle: the connections sit quiet as long as the run
        STARTED.append(procs[-1])
        if not wait_port(port):
            sys.exit(f"scale: the echo upstream on {port} did not start")
        addrs.append(f"127.0.0.1:{port}")
    return procs, addrs


def write_config(path, text):
    with open(path, "w") as f:
        f.write(text)
    return path


def start_proxy(args, kind, port, upstreams, extra_listener="", instance=None):
    """The proxy `kind` on `port`; `instance` (the idle run's K instances): its files go to a
    folder of its own, and ringpoll-proxy's admin endpoint to args.admins[instance]."""
    d = args.out
    admin = args.admin
    if instance is not None:
        d = os.path.join(args.out, f"{kind}-{instance}")
        os.makedirs(d, exist_ok=True)
        admin = args.admins[instance]
    # Every proxy waits 30 s for an upstream connect: in a burst of connections the
    # upstream's accept queue (net.core.somaxconn) overflows, and a SYN resent after 1 s and
    # 3 s would outlast a 5 s connect timeout, which the 2-core machine then reports as a
    # failed connection rather than a slow one.
    if kind == "ringpoll":
        ups = ", ".join(f'"{u}"' for u in upstreams)
        cfg = write_config(f"{d}/proxy.toml",
                           f'[timeouts]\nidle_ms = 0\nconnect_ms = 30000\n\n'
                           f'[socket]\nbacklog = 65535\n\n'
                           f'[[proxy.pool]]\nname = "up"\nupstreams = [{ups}]\n\n'
                           f'[[proxy.listener]]\nname = "scale"\nlisten = "127.0.0.1:{port}"\n'
                           f'pool = "up"\n{extra_listener}')
        argv = [f"{args.bin}/ringpoll-proxy", "--config", cfg, "--admin", f"127.0.0.1:{admin}"]
        argv += sum((["--set", s] for s in args.set), [])
    elif kind == "haproxy":
        servers = "\n".join(f"  server u{i} {u}" for i, u in enumerate(upstreams))
        # maxconn sized to the run: haproxy raises its descriptor limit to about twice it
        # and refuses to start when the hard limit is lower.
        cfg = write_config(
            f"{d}/haproxy.cfg",
            f"global\n  maxconn {args.maxconn}\n  nbthread 1\ndefaults\n  mode tcp\n"
            f"  timeout connect 30s\n  timeout client 1h\n  timeout server 1h\n"
            f"frontend fe\n  bind 127.0.0.1:{port}\n  maxconn {args.maxconn}\n  default_backend be\n"
            f"backend be\n  balance roundrobin\n{servers}\n")
        argv = ["haproxy", "-f", cfg]
    elif kind == "nginx":
        servers = "\n".join(f"    server {u};" for u in upstreams)
        cfg = write_config(
            f"{d}/nginx.conf",
            f"daemon off;\nworker_processes 1;\nworker_rlimit_nofile {2 * args.maxconn + 64};\n"
            f"pid {d}/nginx.pid;\nerror_log {d}/nginx.err;\n"
            f"load_module /usr/lib/nginx/modules/ngx_stream_module.so;\n"
            f"events {{ worker_connections {2 * args.maxconn}; }}\n"
            f"stream {{\n  upstream up {{\n{servers}\n  }}\n"
            f"  server {{ listen 127.0.0.1:{port} backlog=65535; proxy_pass up;\n"
            f"    proxy_connect_timeout 30s; }}\n}}\n")
        argv = ["nginx", "-c", cfg, "-p", d]
    else:
        sys.exit(f"scale: unknown --proxy {kind}")
    p = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=open(f"{d}/{kind}.log", "w"))
    STARTED.append(p)
    if not wait_port(port):
        sys.exit(f"scale: {kind} did not start (see {d}/{kind}.log)")
    return p


# One client process's share of the idle run: opens its connections (connection i of the
# run to the proxy instance i % K, from 127.0.0.{10 + i // 50000}), checks an echo on every
# 1,000th, says "ready", and holds them until its standard input closes.
CLIENT = """
import socket, sys, time
first, count, k, ports = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), sys.argv[4:]
socks, t0 = [], time.time()
for i in range(first, first + count):
    s = socket.socket()
    # IP_BIND_ADDRESS_NO_PORT (24): the port is chosen at connect, for this destination, not
    # reserved at bind; runs back to back would otherwise run out of ephemeral ports while
    # the last run's are in TIME_WAIT.
    s.setsockopt(socket.IPPROTO_IP, 24, 1)
    s.bind((f"127.0.0.{10 + i // 50000}", 0))
    s.connect(("127.0.0.1", int(ports[i % k])))
    socks.append(s)
for j in range(0, count, 1000):
    socks[j].sendall(b"x")
    got = socks[j].recv(1)
    if got != b"x":
        print(f"connection {first + j} answered {got!r} to an echo", flush=True)
        sys.exit(1)
print(f"ready {time.time() - t0:.1f}", flush=True)
sys.stdin.read()
"""
PER_CLIENT = 15000  # connections per client process (its own descriptor limit)


def idle(args):
    n = args.connections
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    lim = 1 << 30 if hard == resource.RLIM_INFINITY else hard
    per_proc = (lim - 200) // 2  # two descriptors per proxied connection, some to spare
    k = args.processes or max(1, -(-n // per_proc))
    if -(-n // k) > per_proc:
        sys.exit(f"scale: {n} connections over {k} proxy processes is {-(-n // k)} each, and "
                 f"the hard RLIMIT_NOFILE ({hard}) allows {per_proc}: raise --processes")
    raise_nofile(min(lim, PER_CLIENT + 1024))
    args.maxconn = -(-n // k) + 100
    ups, addrs = start_upstreams(args, max(1, -(-n // 18000)))
    ports = [free_port() for _ in range(k)]
    args.admins = [free_port() for _ in range(k)]
    pxs = [start_proxy(args, args.proxy, ports[i], addrs, instance=i if k > 1 else None)
           for i in range(k)]
    if k == 1:
        args.admins = [args.admin]
    clients = []
    try:
        time.sleep(1)
        before = sum(tree_rss_kib(px.pid) for px in pxs)
        t0 = time.time()
        for first in range(0, n, PER_CLIENT):
            c = subprocess.Popen([sys.executable, "-c", CLIENT, str(first),
                                  str(min(PER_CLIENT, n - first)), str(k)] + [str(p) for p in ports],
                                 stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
            STARTED.append(c)
            clients.append(c)
        for c in clients:
            line = c.stdout.readline().strip()
            if not line.startswith("ready"):
                if args.proxy == "ringpoll":
                    for a in args.admins:
                        os.system(f"curl -s http://127.0.0.1:{a}/metrics | grep -E "
                                  f"'errors_total|active ' | grep -v ' 0$' >&2")
                sys.exit(f"scale: a client process failed ({line or 'no answer'}): a proxied "
                         f"connection did not open or did not echo")
        took = time.time() - t0
        time.sleep(args.settle)
        inst = f" ({k} processes of {-(-n // k)} connections)" if k > 1 else ""
        print(f"scale: {args.proxy}: {n} idle proxied connections opened in {took:.1f} s{inst}")
        if args.proxy == "ringpoll":
            # A connection the client sees open may still wait in an accept queue of a proxy
            # that lags (11 instances on 2 cores), and a relay hibernates only after a quiet
            # second: wait (--hibernate-wait s at most) until all of them hibernate.
            waited, deadline = time.time(), time.time() + args.hibernate_wait
            while True:
                got = [admin_metric(args, "ringpoll_proxy_relays_hibernating", a)
                       for a in args.admins]
                total = sum(int(float(g)) for g in got) if "?" not in got else "?"
                if total == "?" or total >= n or time.time() >= deadline:
                    break
                time.sleep(0.5)
            print(f"scale: ringpoll: {total} of them hibernating (proxy.hibernate_after_ms), "
                  f"{time.time() - waited:.1f} s after the settle")
        with_conns = sum(tree_rss_kib(px.pid) for px in pxs)
        print(f"scale: {args.proxy}: RSS {before} KiB idle, {with_conns} KiB with them: "
              f"{(with_conns - before) * 1024 / n:.0f} bytes per connection (proxy process"
              f"{'es' if k > 1 else ''} only; kernel socket memory is not in RSS)")
    finally:
        for c in clients:
            try:
                c.stdin.close()
                c.wait(30)
            except (OSError, subprocess.TimeoutExpired):
                c.kill()
        for p in pxs + ups:
            p.send_signal(signal.SIGTERM)
            try:
                p.wait(10)
            except subprocess.TimeoutExpired:
                p.kill()


FLOODER = """
import socket, sys, time
port, end, n = int(sys.argv[1]), time.time() + float(sys.argv[2]), 0
while time.time() < end:
    try:
        s = socket.socket()
        s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\\1\\0\\0\\0\\0\\0\\0\\0")
        s.bind((sys.argv[3], 0))
        s.connect(("127.0.0.1", port))
        s.close()
    except OSError:
        pass
    n += 1
print(n)
"""


def established_p99(args, port, seconds, flooders=0):
    """ringpoll-load: 50 echo connections, open loop at --rate, latency from the intended
    send time, after a 2 s warm-up; flooders (if any) start 1 s into the warm-up, once the
    50 are connected, and run to the end. Returns (ringpoll-load's JSON, flood count)."""
    out = f"{args.out}/load-{port}-{time.time_ns()}.json"
    load = subprocess.Popen([f"{args.bin}/ringpoll-load", "--mode", "echo", "--target",
                             f"127.0.0.1:{port}", "--connections", "50", "--duration", str(seconds),
                             "--warmup", "2", "--rate", str(args.rate), "--json", out],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    STARTED.append(load)
    time.sleep(1)
    fl = [subprocess.Popen([sys.executable, "-c", FLOODER, str(port), str(seconds + 1.5),
                            f"127.0.0.{200 + i}"], stdout=subprocess.PIPE, text=True)
          for i in range(flooders)]
    STARTED.extend(fl)
    err = load.communicate()[1]
    floods = sum(int(p.communicate()[0] or 0) for p in fl)
    if load.returncode not in (0, 3):
        sys.exit(f"scale: ringpoll-load failed ({load.returncode}): {err[-400:]}")
    with open(out) as f:
        return json.load(f), floods


def flood(args):
    """Per proxy: the p99 of 50 established echo connections alone, then with flooders
    opening and resetting connections as fast as they can from 127.0.0.200+; rotated."""
    ups, addrs = start_upstreams(args, 1)
    kinds = args.proxy.split(",")
    rows = {k: [] for k in kinds}
    for rep in range(args.reps):
        order = kinds[rep % len(kinds):] + kinds[:rep % len(kinds)]
        for kind in order:
            port = free_port()
            extra = f"max_client_conn_rate = {args.limit_rate}\n" if args.limit_rate > 0 else ""
            px = start_proxy(args, kind, port, addrs, extra)
            try:
                calm, _ = established_p99(args, port, args.seconds)
                busy, floods = established_p99(args, port, args.seconds, args.flooders)
            finally:
                px.send_signal(signal.SIGTERM)
                try:
                    px.wait(10)
                except subprocess.TimeoutExpired:
                    px.kill()
            row = (calm, busy, floods)
            rows[kind].append(row)
            print(f"scale: rep {rep + 1} {kind}: p99 alone {calm['latency_us']['p99']:.0f} µs, "
                  f"under flood {busy['latency_us']['p99']:.0f} µs ({floods} flood connections, "
                  f"{busy['errors']['total']} errors)", flush=True)
    med = lambda xs: sorted(xs)[len(xs) // 2]
    print(f"\nscale: flood, {args.reps} reps, medians; 50 echo connections at {args.rate}/s, "
          f"{args.flooders} flooders; ringpoll-proxy max_client_conn_rate "
          f"{args.limit_rate or 'off'}")
    print("| proxy | p99 alone µs | p99 under flood µs | × alone | flood connections |")
    print("|---|---:|---:|---:|---:|")
    for kind in kinds:
        a = med([r[0]['latency_us']['p99'] for r in rows[kind]])
        b = med([r[1]['latency_us']['p99'] for r in rows[kind]])
        n = med([r[2] for r in rows[kind]])
        print(f"| {kind} | {a:.0f} | {b:.0f} | {b / a:.1f} | {n} |")
    for p in ups:
        p.send_signal(signal.SIGTERM)
        p.wait(10)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("mode", choices=["idle", "flood"])
    ap.add_argument("--bin", default="build/bin")
    ap.add_argument("--connections", type=int, default=100000)
    ap.add_argument("--proxy", default="ringpoll",
                    help="ringpoll, haproxy or nginx (flood: a comma-separated list, rotated)")
    ap.add_argument("--reps", type=int, default=3, help="flood: repetitions")
    ap.add_argument("--rate", type=int, default=5000, help="flood: echo requests/s of the 50 connections")
    ap.add_argument("--flooders", type=int, default=2, help="flood: flooding processes")
    ap.add_argument("--seconds", type=float, default=10)
    ap.add_argument("--settle", type=float, default=2,
                    help="idle: seconds the connections sit idle before the RSS is read")
    ap.add_argument("--hibernate-wait", type=float, default=60,
                    help="idle, ringpoll: seconds to wait after the settle for all to hibernate")
    ap.add_argument("--processes", type=int, default=0,
                    help="idle: instances of the proxy (default: as many as the descriptor limit needs)")
    ap.add_argument("--limit-rate", type=int, default=100)
    ap.add_argument("--set", action="append", default=[], help="ringpoll-proxy --set KEY=VALUE")
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    args.out = os.path.abspath(args.out or time.strftime("results/scale-%Y%m%d-%H%M%S"))
    os.makedirs(args.out, exist_ok=True)
    args.admin = free_port()
    args.maxconn = (min(args.connections, 9000) if args.mode == "flood" else args.connections) + 100
    idle(args) if args.mode == "idle" else flood(args)


if __name__ == "__main__":
    main()
