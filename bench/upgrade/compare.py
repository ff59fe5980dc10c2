#!/usr/bin/env python3
"""Zero-downtime upgrades side by side (issue 20), for the lead's benchmark runs.

  python3 bench/upgrade/compare.py --bin build/bin [--rate 500] [--upgrades 10]
          [--interval 3] [--long-lived 50] [--drain 5] [--proxies ringpoll,haproxy,nginx]
          [--backend io_uring-completion|epoll|io_uring-readiness] [--http]

One harness, the same for every proxy: an echo upstream (ringpoll-serve), the proxy in
L4 mode in front of it, and
  - an open-loop client at --rate new connections per second (each: connect, send 32
    bytes, read them back, close), its latency taken from the intended start time
    (coordinated omission corrected);
  - --long-lived connections held open, each doing one numbered echo round trip every
    100 ms until the last upgrade's drain deadline has passed;
while the proxy is upgraded --upgrades times, --interval seconds apart:
  ringpoll  SIGUSR2 to the current process; done when the admin page shows the next
            generation (the old one stops accepting and drains for --drain seconds)
  haproxy   a new `haproxy -x SOCKET -sf OLDPID` taking the listeners over the old one's
            stats socket (`expose-fd listeners`); done when the new one answers `show
            info` (the old one finishes its connections, hard-stop-after --drain)
  nginx     USR2 to the master (binary upgrade: a new master and workers on the
            inherited sockets), then QUIT to the old master once the new pid file is
            there (worker_shutdown_timeout --drain)
With --http the same in HTTP/1.1: the upstream is ringpoll-serve --mode http, each proxy
runs its HTTP mode (ringpoll: protocol = "http"; haproxy: mode http; nginx: an http
server with upstream keep-alive), a short connection is one GET with Connection: close,
and a long-lived one is a keep-alive connection sending one GET every 100 ms; it is cut
when the proxy closes it or answers "Connection: close" (the client would have to
reconnect: ringpoll-proxy moves it between two requests, the others drain it).
Printed, per proxy: failed connects, resets, other errors, established connections cut
(closed or reset by the proxy, answered wrong, or not within 5 s: ringpoll-proxy moves
them to the new process, the others drain them until the deadline),
and the short connections' p99 inside the upgrade windows (signal to done + 1 s) against
outside them. Numbers only mean something on a quiet machine; nothing here asserts a
figure. Needs python3 (asyncio), and haproxy and nginx (with the stream module) on PATH
for their rows: a missing one is left out, saying so.
"""
import argparse
import asyncio
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "hardening"))
from common import free_port, read_to_end, wait_port  # noqa: E402

NGINX_STREAM_MODULE = "/usr/lib/nginx/modules/ngx_stream_module.so"
# --http: keep-alive on both sides, for as long as the run.
NGINX_HTTP = """http {{
  access_log off;
  keepalive_timeout 3600s;
  keepalive_requests 100000000;
  upstream u {{ server {upstream}; keepalive 64; }}
  server {{
    listen 127.0.0.1:{port};
    location / {{ proxy_pass http://u; proxy_http_version 1.1; proxy_set_header Connection ""; }}
  }}
}}
"""
PAYLOAD = b"0123456789abcdef0123456789abcdef"


class Counts:
    def __init__(self):
        self.ok = 0
        self.connect_failed = 0
        self.resets = 0
        self.other = 0
        self.samples = []  # (intended start, latency s)
        self.cut = 0  # long-lived connections that ended under us


async def read_response(r):
    """One HTTP/1.1 response framed by Content-Length: (status, lower-cased head, body)."""
    head = (await r.readuntil(b"\r\n\r\n")).decode("latin-1").lower()
    n = 0
    for line in head.split("\r\n"):
        if line.startswith("content-length:"):
            n = int(line.split(":")[1])
    body = await r.readexactly(n)
    return int(head[9:12]), head, body


async def one_request(port, intended, c, timeout, http=False):
    try:
        r, w = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", port), timeout)
    except (ConnectionRefusedError, asyncio.TimeoutError, OSError):
        c.connect_failed += 1
        return
    try:
        if http:
            w.write(b"GET /plaintext HTTP/1.1\r\nHost: bench\r\nConnection: close\r\n\r\n")
            await w.drain()
            status, _, _ = await asyncio.wait_for(read_response(r), timeout)
            good = status == 200
        else:
            w.write(PAYLOAD)
            await w.drain()
            good = await asyncio.wait_for(r.readexactly(len(PAYLOAD)), timeout) == PAYLOAD
        if not good:
            c.other += 1
            return
        c.ok += 1
        c.samples.append((intended, time.monotonic() - intended))
    except (ConnectionResetError, BrokenPipeError):
        c.resets += 1
    except asyncio.IncompleteReadError:
        c.resets += 1  # closed with the answer missing: the connection was dropped
    except (asyncio.TimeoutError, asyncio.LimitOverrunError, ValueError, OSError):
        c.other += 1
    finally:
        w.close()


async def open_loop(port, rate, until, c, timeout, http):
    tasks = set()
    start = time.monotonic()
    n = 0
    while True:
        intended = start + n / rate
        if intended >= until:
            break
        delay = intended - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        t = asyncio.ensure_future(one_request(port, intended, c, timeout, http))
        tasks.add(t)
        t.add_done_callback(tasks.discard)
        n += 1
    if tasks:
        await asyncio.gather(*tasks)


async def long_lived(port, until, c, http=False):
    """One established connection: a numbered 8-byte message every 100 ms, echoed back
    (--http: a keep-alive GET every 100 ms, answered 200 without Connection: close).
    Cut: the proxy closed or reset it, or an answer did not come within 5 s, or came back
    wrong (a message lost, repeated or out of order; --http: not 200, or "close") before
    `until`."""
    try:
        r, w = await asyncio.open_connection("127.0.0.1", port)
    except OSError:
        c.connect_failed += 1
        return
    n = 0
    try:
        while time.monotonic() < until:
            if http:
                w.write(f"GET /plaintext?n={n} HTTP/1.1\r\nHost: bench\r\n\r\n".encode())
                await w.drain()
                status, head, _ = await asyncio.wait_for(read_response(r), 5)
                good = status == 200 and "\r\nconnection: close" not in head
            else:
                msg = n.to_bytes(8, "big")
                w.write(msg)
                await w.drain()
                good = await asyncio.wait_for(r.readexactly(8), 5) == msg
            if not good:
                c.cut += 1
                return
            n += 1
            await asyncio.sleep(0.1)
    except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError,
            asyncio.TimeoutError, ValueError):
        c.cut += 1
    finally:
        w.close()


# ---------------------------------------------------------------- the proxies


def gone(pid):
    """The process has exited (a zombie child of ours counts as gone)."""
    try:
        with open(f"/proc/{pid}/status") as f:
            return any(line.startswith("State:") and "Z" in line.split()[1] for line in f)
    except OSError:
        return True


def terminate(pids):
    """SIGTERM to each pid still there (old generations may have exited already)."""
    for p in pids:
        try:
            os.kill(p, signal.SIGTERM)
        except ProcessLookupError:
            pass


class Ringpoll:
    name = "ringpoll-proxy (SIGUSR2)"

    def __init__(self, args, d, port, upstream):
        self.admin = free_port()
        cfg = os.path.join(d, "ringpoll.toml")
        with open(cfg, "w") as f:
            idle = 3600000 if args.http else 0  # HTTP mode: 0 would expire its deadlines at once
            f.write(f"[timeouts]\ndrain_ms = {int(args.drain * 1000)}\nidle_ms = {idle}\n\n"
                    f'[[proxy.pool]]\nname = "up"\nupstreams = ["{upstream}"]\n\n'
                    f'[[proxy.listener]]\nname = "front"\nlisten = "127.0.0.1:{port}"\n'
                    f'pool = "up"\n' + ('protocol = "http"\n' if args.http else ""))
        env = dict(os.environ, RINGPOLL_BACKEND=args.backend)
        self.p = subprocess.Popen(
            [f"{args.bin}/ringpoll-proxy", "--config", cfg, "--admin", f"127.0.0.1:{self.admin}",
             "--set", "engine.shards=1"],
            stdout=subprocess.PIPE, stderr=open(os.path.join(d, "ringpoll.log"), "w"), text=True,
            env=env)
        self.p.stdout.readline()  # the start line
        self.pid = self.p.pid
        self.generation = 1
        self.pids = [self.pid]

    def upgrade(self):
        os.kill(self.pid, signal.SIGUSR2)
        line = self.p.stdout.readline()  # the successor's start line, on the shared stdout
        k = line.rfind("pid ")
        if k < 0:
            raise RuntimeError(f"ringpoll-proxy: no successor line: {line!r}")
        self.pid = int(line[k + 4:].rstrip(")\n"))
        self.pids.append(self.pid)
        self.generation += 1
        want = f"\nringpoll_proxy_process_generation {self.generation}\n"
        for _ in range(500):
            try:
                page = urllib.request.urlopen(f"http://127.0.0.1:{self.admin}/metrics", timeout=1)
                if want in page.read().decode():
                    return
            except OSError:
                pass
            time.sleep(0.01)
        raise RuntimeError("ringpoll-proxy: the admin page never showed the new generation")

    def stop(self):
        terminate(self.pids)


class Haproxy:
    name = "haproxy (-x, -sf)"

    def __init__(self, args, d, port, upstream):
        self.d = d
        self.sock = os.path.join(d, "haproxy.sock")
        self.cfg = os.path.join(d, "haproxy.cfg")
        with open(self.cfg, "w") as f:
            f.write(f"global\n  maxconn 5000\n  nbthread 1\n"
                    f"  stats socket {self.sock} mode 600 level admin expose-fd listeners\n"
                    f"  hard-stop-after {int(args.drain * 1000)}ms\n"
                    f"defaults\n  mode {'http' if args.http else 'tcp'}\n  timeout connect 5s\n"
                    f"  timeout client 1h\n  timeout server 1h\n"
                    + ("  timeout http-keep-alive 1h\n  timeout http-request 1h\n"
                       if args.http else "") +
                    f"frontend fe\n  bind 127.0.0.1:{port}\n  default_backend be\n"
                    f"backend be\n  server u0 {upstream}\n")
        self.log = open(os.path.join(d, "haproxy.log"), "w")
        self.procs = [self._start([])]
        if not wait_port(port, self.procs[0]):
            raise RuntimeError(f"haproxy did not start (see {d}/haproxy.log)")

    def _start(self, extra):
        return subprocess.Popen(["haproxy", "-db", "-f", self.cfg] + extra,
                                stdout=self.log, stderr=self.log)

    def _info_pid(self):
        try:
            s = socket.socket(socket.AF_UNIX)
            s.settimeout(1)
            s.connect(self.sock)
            s.sendall(b"show info\n")
            out = read_to_end(s)
            for line in out.decode().splitlines():
                if line.startswith("Pid:"):
                    return int(line.split()[1])
        except OSError:
            pass
        return None

    def upgrade(self):
        old = self.procs[-1]
        new = self._start(["-x", self.sock, "-sf", str(old.pid)])
        self.procs.append(new)
        for _ in range(500):
            if new.poll() is not None:
                raise RuntimeError("haproxy: the new process exited (see haproxy.log)")
            if self._info_pid() == new.pid:
                return
            time.sleep(0.01)
        raise RuntimeError("haproxy: the new process never answered on its stats socket")

    def stop(self):
        for p in self.procs:
            if p.poll() is None:
                p.terminate()


class Nginx:
    name = "nginx (USR2, QUIT)"

    def __init__(self, args, d, port, upstream):
        self.pidfile = os.path.join(d, "nginx.pid")
        cfg = os.path.join(d, "nginx.conf")
        with open(cfg, "w") as f:
            f.write(f"daemon on;\nmaster_process on;\nworker_processes 1;\n"
                    f"worker_shutdown_timeout {int(args.drain * 1000)}ms;\n"
                    f"pid {self.pidfile};\nerror_log {d}/nginx.err;\n"
                    + (f"load_module {NGINX_STREAM_MODULE};\n" if not args.http else "")
                    + "events { worker_connections 5000; }\n"
                    + (NGINX_HTTP.format(port=port, upstream=upstream) if args.http else
                       f"stream {{\n  server {{ listen 127.0.0.1:{port}; proxy_pass {upstream}; }}\n}}\n"))
        self.p = subprocess.Popen([shutil.which("nginx"), "-c", cfg, "-p", d],
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        # daemon on: nginx ignores USR2 in a master whose parent started it (daemon off)
        if not wait_port(port):
            raise RuntimeError(f"nginx did not start (see {d}/nginx.err)")
        self.master = self._pid()
        self.masters = [self.master]

    def _pid(self):
        for _ in range(500):
            try:
                with open(self.pidfile) as f:
                    return int(f.read().strip())
            except (OSError, ValueError):
                time.sleep(0.01)
        raise RuntimeError("nginx: no pid file")

    def upgrade(self):
        old = self.master
        # nginx refuses USR2 while an older master still runs ("the changing binary signal
        # is ignored"): the previous one must have drained and exited first.
        for _ in range(1000):
            if all(gone(p) for p in self.masters[:-1]):
                break
            time.sleep(0.01)
        os.kill(old, signal.SIGUSR2)
        for _ in range(500):  # the old master renames its pid file; the new one writes it
            try:
                with open(self.pidfile) as f:
                    pid = int(f.read().strip())
                if pid != old and os.path.exists(f"/proc/{pid}"):
                    kids = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True,
                                          text=True).stdout.split()
                    if kids:  # its worker runs
                        self.master = pid
                        self.masters.append(pid)
                        os.kill(old, signal.SIGQUIT)
                        return
            except (OSError, ValueError):
                pass
            time.sleep(0.01)
        raise RuntimeError("nginx: the new master never came up")

    def stop(self):
        terminate(self.masters)


# ---------------------------------------------------------------- one run


def p99(xs):
    if not xs:
        return float("nan")
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(len(xs) * 0.99))] * 1000


def run(kind, args, upstream):
    d = tempfile.mkdtemp(prefix=f"upgrade-{kind.__name__.lower()}-", dir=args.out)
    port = free_port()
    px = kind(args, d, port, upstream)
    c = Counts()
    windows = []
    try:
        time.sleep(0.5)
        t0 = time.monotonic()
        until = t0 + 2 + args.upgrades * args.interval + 2
        # The established connections outlive the last upgrade's drain deadline: one the
        # last old process kept to drain is cut then, and counted.
        until_established = until + args.drain + 1
        loop = asyncio.new_event_loop()

        async def clients():
            lls = [asyncio.ensure_future(long_lived(port, until_established, c, args.http))
                   for _ in range(args.long_lived)]
            await open_loop(port, args.rate, until, c, args.timeout, args.http)
            await asyncio.gather(*lls)

        th = threading.Thread(target=lambda: loop.run_until_complete(clients()))
        th.start()
        time.sleep(2)
        for _ in range(args.upgrades):
            start = time.monotonic()
            px.upgrade()
            windows.append((start, time.monotonic() + 1.0))
            time.sleep(max(0.0, args.interval - (time.monotonic() - start)))
        th.join()
    finally:
        px.stop()
    inside = [lat for (t, lat) in c.samples if any(a <= t <= b for a, b in windows)]
    outside = [lat for (t, lat) in c.samples if not any(a <= t <= b for a, b in windows)]
    return c, p99(outside), p99(inside), windows


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--bin", default="build/bin")
    ap.add_argument("--rate", type=float, default=500, help="new connections per second")
    ap.add_argument("--upgrades", type=int, default=10)
    ap.add_argument("--interval", type=float, default=3, help="seconds between upgrades")
    ap.add_argument("--long-lived", type=int, default=50)
    ap.add_argument("--drain", type=float, default=5, help="drain / hard-stop seconds")
    ap.add_argument("--timeout", type=float, default=5, help="seconds a request may take")
    ap.add_argument("--backend", default="io_uring-completion",
                    choices=["io_uring-completion", "io_uring-readiness", "epoll"])
    ap.add_argument("--proxies", default="ringpoll,haproxy,nginx")
    ap.add_argument("--http", action="store_true",
                    help="HTTP/1.1 through each proxy's HTTP mode (keep-alive long-lived clients)")
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    args.out = os.path.abspath(args.out or time.strftime("results/upgrade-%Y%m%d-%H%M%S"))
    os.makedirs(args.out, exist_ok=True)
    kinds = {"ringpoll": Ringpoll, "haproxy": Haproxy, "nginx": Nginx}
    chosen = []
    for name in args.proxies.split(","):
        if name not in kinds:
            sys.exit(f"compare: unknown proxy {name!r} (ringpoll, haproxy, nginx)")
        if name == "haproxy" and not shutil.which("haproxy"):
            print("compare: haproxy left out: not on PATH")
            continue
        if name == "nginx" and (not shutil.which("nginx") or
                                (not args.http and not os.path.exists(NGINX_STREAM_MODULE))):
            print(f"compare: nginx left out: not on PATH or no {NGINX_STREAM_MODULE}")
            continue
        chosen.append(kinds[name])
    up_port = free_port()
    up = subprocess.Popen([f"{args.bin}/ringpoll-serve", "--mode", "http" if args.http else "echo",
                           "--listen",
                           f"127.0.0.1:{up_port}", "--set", "engine.shards=1"],
                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    if not wait_port(up_port, up):
        sys.exit("compare: the echo upstream did not start")
    rows = []
    try:
        for kind in chosen:
            print(f"compare: {kind.name}: {args.upgrades} upgrades at {args.rate:g} conn/s ...",
                  flush=True)
            c, steady, during, _ = run(kind, args, f"127.0.0.1:{up_port}")
            rows.append((kind.name, c, steady, during))
            time.sleep(args.drain + 1)  # the last old processes finish before the next proxy
    finally:
        up.terminate()
        up.wait(10)
    head = ("proxy", "answered", "failed connects", "resets", "other errors",
            f"established cut (of {args.long_lived})", "p99 steady ms", "p99 upgrading ms", "ratio")
    print()
    print("| " + " | ".join(head) + " |")
    print("|" + "---|" * len(head))
    for name, c, steady, during in rows:
        ratio = during / steady if steady > 0 else float("nan")
        print(f"| {name} | {c.ok} | {c.connect_failed} | {c.resets} | {c.other} | {c.cut} | "
              f"{steady:.2f} | {during:.2f} | {ratio:.2f} |")
    print(f"\n{args.upgrades} upgrades {args.interval:g} s apart, open loop {args.rate:g} new "
          f"connections/s, drain {args.drain:g} s; {'HTTP/1.1 keep-alive' if args.http else 'L4'}; "
          f"ringpoll backend {args.backend}; logs in {args.out}")


if __name__ == "__main__":
    main()
