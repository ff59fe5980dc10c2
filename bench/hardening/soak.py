#!/usr/bin/env python3
"""ringpoll soak: echo, HTTP and proxy traffic for N minutes, watched for drift.

  python3 bench/hardening/soak.py --bin build/bin --minutes N [--out DIR]

Starts ringpoll-serve (echo), ringpoll-serve (http) and ringpoll-proxy (in front of the
echo server, with its admin page) on free loopback ports, one shard each, and runs against
them for N minutes:

  churn    connect, one echo of 1-8 KiB, close: directly and through the proxy
  http     keep-alive GET /plaintext, a new connection every 20 requests
  slow     through the proxy: 256 KiB sent, read back 4 KiB every 5 ms
  resets   through the proxy: data in flight, then a reset (SO_LINGER 0) mid-stream
  reloads  every 5 s the proxy's config file changes and the proxy gets SIGHUP

Each second it samples every server's RSS and descriptor count, and the proxy's error
counters. Every 10 s the traffic pauses until the proxy has no connection open, and the
descriptor counts are taken at rest. It fails (exit 1), saying which, on:

  RSS      a sample beyond +2 % of the process's largest RSS during warm-up (the first
           20 % of the run, at least 20 s, with two pauses in it), or beyond +2 MiB for a
           process under 100 MiB: RSS moves in steps (a fresh allocator segment, pages of a
           fixed pool such as io_uring's provided buffers touched for the first time), and
           one step of a 10 MiB server is more than 2 %; a leak grows past any one step
  fds      a count at rest above the first count at rest after warm-up
  errors   any client-side failure (wrong bytes, refused or dropped connection, HTTP
           status other than 200), any proxy error other than the resets the soak causes,
           a reload the proxy refused, a server that exited

Samples are written to OUT/samples.json. Exit 0: no drift, 1: drift or errors, 2: usage.
"""
import argparse
import json
import os
import random
import signal
import socket
import struct
import subprocess
import sys
import threading
import time

# The RSS allowance's floor (see the docstring): one allocation step of a small server.
RSS_STEP_KIB = 2048

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import free_port, read_http_response, read_to_end, rss_kib, wait_port  # noqa: E402


def fd_count(pid):
    return len(os.listdir(f"/proc/{pid}/fd"))


def recv_exact(s, n):
    out = bytearray()
    while len(out) < n:
        b = s.recv(min(65536, n - len(out)))
        if not b:
            raise OSError("connection closed early")
        out += b
    return bytes(out)


def metrics(admin_port):
    s = socket.create_connection(("127.0.0.1", admin_port), timeout=2)
    s.sendall(b"GET /metrics HTTP/1.1\r\nHost: soak\r\n\r\n")
    data = read_to_end(s)
    out = {}
    for line in data.decode(errors="replace").split("\r\n\r\n", 1)[-1].splitlines():
        if line and not line.startswith("#"):
            k, _, v = line.rpartition(" ")
            try:
                out[k] = float(v)
            except ValueError:
                pass
    return out


class Soak:
    def __init__(self, args):
        self.args = args
        self.stop = threading.Event()
        self.pause = threading.Event()
        self.lock = threading.Lock()
        self.errors = []  # (time, what)
        self.ops = {"churn": 0, "http": 0, "slow": 0, "resets": 0, "reloads": 0}
        self.resets_done = 0
        self.idle = {}  # worker name -> paused now
        self.procs = {}

    def error(self, what):
        with self.lock:
            if len(self.errors) < 50:
                self.errors.append((round(time.time() - self.t0, 1), what))
            else:
                self.errors.append((0, "..."))
                del self.errors[50:]

    def count(self, what, n=1):
        with self.lock:
            self.ops[what] += n

    # ---- processes ----
    def start(self):
        b = self.args.bin
        self.echo_port, self.http_port = free_port(), free_port()
        self.proxy_port, self.admin_port = free_port(), free_port()
        common = ["--set", "engine.shards=1", "--set", "engine.pin=false"]
        self.procs["echo"] = subprocess.Popen(
            [f"{b}/ringpoll-serve", "--mode", "echo", "--listen", f"127.0.0.1:{self.echo_port}"]
            + common, stdout=subprocess.DEVNULL, stderr=open(f"{self.args.out}/echo.log", "w"))
        self.procs["http"] = subprocess.Popen(
            [f"{b}/ringpoll-serve", "--mode", "http", "--listen", f"127.0.0.1:{self.http_port}"]
            + common, stdout=subprocess.DEVNULL, stderr=open(f"{self.args.out}/http.log", "w"))
        self.config = f"{self.args.out}/proxy.toml"
        self.write_config(0)
        self.proxy_log = f"{self.args.out}/proxy.log"
        self.procs["proxy"] = subprocess.Popen(
            [f"{b}/ringpoll-proxy", "--config", self.config, "--admin",
             f"127.0.0.1:{self.admin_port}"] + common,
            stdout=subprocess.DEVNULL, stderr=open(self.proxy_log, "w"))
        for name, port in (("echo", self.echo_port), ("http", self.http_port),
                           ("proxy", self.proxy_port), ("proxy", self.admin_port)):
            if not wait_port(port, self.procs[name]):
                raise SystemExit(f"soak: {name} did not start listening on {port}")

    def write_config(self, gen):
        # Each reload changes the idle timeout (a real change the proxy must apply).
        tmp = self.config + ".tmp"
        with open(tmp, "w") as f:
            f.write(f"""[timeouts]
idle_ms = {30000 + gen % 2 * 1000}

[[proxy.pool]]
name = "echo"
upstreams = ["127.0.0.1:{self.echo_port}"]

[[proxy.listener]]
name = "soak"
listen = "127.0.0.1:{self.proxy_port}"
pool = "echo"
""")
        os.replace(tmp, self.config)

    def stop_all(self):
        for p in self.procs.values():
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for p in self.procs.values():
            try:
                p.wait(10)
            except subprocess.TimeoutExpired:
                p.kill()

    # ---- workers ----
    def gate(self, name):
        """Between operations: park while the soak pauses for a count at rest."""
        if self.pause.is_set():
            with self.lock:
                self.idle[name] = True
            while self.pause.is_set() and not self.stop.is_set():
                time.sleep(0.01)
            with self.lock:
                self.idle[name] = False
        return not self.stop.is_set()

    def churn(self, name, port):
        rnd = random.Random(name)
        while self.gate(name):
            data = rnd.randbytes(rnd.randint(1024, 8192))
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
                    s.sendall(data)
                    if recv_exact(s, len(data)) != data:
                        self.error(f"{name}: echo returned other bytes")
                self.count("churn")
            except OSError as e:
                self.error(f"{name}: {e}")
                time.sleep(0.1)

    def http(self, name):
        req = b"GET /plaintext HTTP/1.1\r\nHost: soak\r\n\r\n"
        while self.gate(name):
            try:
                with socket.create_connection(("127.0.0.1", self.http_port), timeout=5) as s:
                    buf = b""
                    for _ in range(20):
                        s.sendall(req)
                        head, _, buf = read_http_response(s, buf)
                        if not head.startswith(b"HTTP/1.1 200"):
                            self.error(f"{name}: {head[:40]!r}")
                        self.count("http")
            except OSError as e:
                self.error(f"{name}: {e}")
                time.sleep(0.1)

    def slow(self, name):
        data = random.Random(name).randbytes(256 * 1024)
        while self.gate(name):
            try:
                with socket.create_connection(("127.0.0.1", self.proxy_port), timeout=10) as s:
                    t = threading.Thread(target=s.sendall, args=(data,))
                    t.start()
                    got = bytearray()
                    while len(got) < len(data):
                        b = s.recv(4096)
                        if not b:
                            raise OSError("connection closed early")
                        got += b
                        time.sleep(0.005)
                    t.join()
                    if bytes(got) != data:
                        self.error(f"{name}: slow reader got other bytes")
                self.count("slow")
            except OSError as e:
                self.error(f"{name}: {e}")
                time.sleep(0.1)

    def resets(self, name):
        rnd = random.Random(name)
        while self.gate(name):
            try:
                s = socket.create_connection(("127.0.0.1", self.proxy_port), timeout=5)
                s.sendall(rnd.randbytes(64 * 1024))
                s.recv(1024)  # the relay is running: reset it mid-stream
                s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                s.close()
                self.count("resets")
            except OSError as e:
                self.error(f"{name}: {e}")
            time.sleep(0.02)

    def reloads(self):
        gen = 0
        while not self.stop.wait(5):
            gen += 1
            self.write_config(gen)
            self.procs["proxy"].send_signal(signal.SIGHUP)
            self.count("reloads")

    # ---- the run ----
    def workers(self):
        ws = [("churn-echo-%d" % i, lambda n: self.churn(n, self.echo_port)) for i in range(2)]
        ws += [("churn-proxy-%d" % i, lambda n: self.churn(n, self.proxy_port)) for i in range(2)]
        ws += [("http-%d" % i, self.http) for i in range(2)]
        ws += [("slow-0", self.slow), ("resets-0", self.resets)]
        threads = []
        for name, fn in ws:
            self.idle[name] = False
            threads.append(threading.Thread(target=fn, args=(name,), daemon=True))
        threads.append(threading.Thread(target=self.reloads, daemon=True))
        return threads

    def at_rest(self):
        """Pauses the traffic until every worker waits and the proxy has nothing open; the
        descriptor counts then. None when it did not come to rest within 10 s."""
        self.pause.set()
        try:
            end = time.time() + 10
            while time.time() < end:
                with self.lock:
                    all_idle = all(self.idle.values())
                if all_idle:
                    m = metrics(self.admin_port)
                    if m.get("ringpoll_proxy_connections_active", 1) == 0:
                        time.sleep(0.2)  # the servers close their side after the proxy
                        return {n: fd_count(p.pid) for n, p in self.procs.items()}
                time.sleep(0.05)
            return None
        finally:
            self.pause.clear()

    def run(self):
        minutes = self.args.minutes
        total = minutes * 60
        warm = max(20.0, total * 0.2)
        self.t0 = time.time()
        threads = self.workers()
        for t in threads:
            t.start()
        samples = []
        rss_base = {}
        fd_base = None
        failures = []
        next_rest = 5.0  # rests in the warm-up too: it must see every phase of the cycle
        expected = ("reset",)
        while True:
            now = time.time() - self.t0
            if now >= total:
                break
            time.sleep(1)
            now = time.time() - self.t0
            for n, p in self.procs.items():
                if p.poll() is not None:
                    failures.append(f"{n} exited with {p.returncode}")
            if failures:
                break
            m = metrics(self.admin_port)
            errs = {k: v for k, v in m.items()
                    if k.startswith("ringpoll_proxy_errors_total") and v > 0
                    and not any(f'kind="{e}"' in k for e in expected)}
            s = {"t": round(now, 1), "rss_kib": {}, "fds": {}, "proxy_errors": errs,
                 "stalls": sum(v for k, v in m.items() if k.startswith("ringpoll_shard_stalls"))}
            for n, p in self.procs.items():
                s["rss_kib"][n] = rss_kib(p.pid)
                s["fds"][n] = fd_count(p.pid)
            with self.lock:
                s["ops"] = dict(self.ops)
                s["client_errors"] = len(self.errors)
            if now <= warm:
                for n, v in s["rss_kib"].items():
                    rss_base[n] = max(rss_base.get(n, 0), v)
            else:
                for n, v in s["rss_kib"].items():
                    if v > max(rss_base[n] * 1.02, rss_base[n] + RSS_STEP_KIB):
                        failures.append(f"{n}: RSS {v} KiB at {s['t']} s, beyond +2 % (at least "
                                        f"{RSS_STEP_KIB} KiB) of its warm-up peak "
                                        f"{rss_base[n]} KiB")
            if errs:
                failures.append(f"proxy errors: {errs}")
            if now >= next_rest:
                rest = self.at_rest()
                s["fds_at_rest"] = rest
                if rest is None:
                    failures.append(f"no rest within 10 s at {s['t']} s (connections left open)")
                elif now <= warm:
                    pass
                elif fd_base is None:
                    fd_base = rest
                else:
                    for n, v in rest.items():
                        if v > fd_base[n]:
                            failures.append(f"{n}: {v} descriptors at rest at {s['t']} s, "
                                            f"{fd_base[n]} after warm-up")
                next_rest = now + 10
            samples.append(s)
            if int(now) % 10 == 0 or failures:
                print(f"soak: {s['t']:6.1f} s  rss {s['rss_kib']}  fds {s['fds']}  "
                      f"ops {s['ops']}  errors {s['client_errors']}", flush=True)
            if failures:
                break
        self.stop.set()
        for t in threads:
            t.join(15)
        with open(self.proxy_log) as f:
            log = f.read()
        if "reload refused" in log:
            failures.append("the proxy refused a reload (see proxy.log)")
        if self.errors:
            failures.append(f"{len(self.errors)} client errors, first: {self.errors[:5]}")
        if fd_base is None and not failures:
            failures.append("the run was too short for a count at rest after warm-up")
        with open(f"{self.args.out}/samples.json", "w") as f:
            json.dump({"minutes": minutes, "warm_up_s": warm, "rss_warm_up_peak_kib": rss_base,
                       "fds_at_rest_after_warm_up": fd_base, "samples": samples,
                       "client_errors": self.errors, "failures": failures}, f, indent=1)
        return failures


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--bin", default="build/bin")
    ap.add_argument("--minutes", type=float, required=True)
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    if args.minutes <= 0:
        ap.error("--minutes must be > 0")
    for b in ("ringpoll-serve", "ringpoll-proxy"):
        if not os.access(f"{args.bin}/{b}", os.X_OK):
            ap.error(f"no {args.bin}/{b}: build it first")
    args.out = args.out or time.strftime("results/soak-%Y%m%d-%H%M%S")
    os.makedirs(args.out, exist_ok=True)
    soak = Soak(args)
    signal.signal(signal.SIGTERM, lambda *_: soak.stop.set())
    try:
        soak.start()
        failures = soak.run()
    except KeyboardInterrupt:
        failures = ["interrupted"]
    finally:
        soak.stop_all()
    print(f"soak: samples in {args.out}/samples.json")
    if failures:
        for f in failures:
            print(f"soak: FAIL: {f}")
        return 1
    print(f"soak: {args.minutes:g} min with no drift: RSS within +2 % (at least 2 MiB) of warm-up, "
          f"descriptors at rest flat, no unexpected error ({soak.ops})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
