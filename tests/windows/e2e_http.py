#!/usr/bin/env python3
"""ringpoll-serve --mode http as a Windows program under Wine, driven from Linux (issue 25).

    e2e_http.py WINE ringpoll-serve.exe

  - refusals: what Windows lacks (a pinned Linux backend, TLS, udp-echo) exits 2 naming it;
  - keep-alive and pipelining: three requests in one write, three answers in order;
  - a 5 MB /bytes/N body arrives whole (length and content);
  - deadlines: a client that stops half-way through its headers is closed after
    timeouts.header_read_ms (500 ms here), not before, and others are served meanwhile;
  - graceful stop: Ctrl-C (Wine turns SIGINT into CTRL_C_EVENT) ends it with exit 0.
Every wait is bounded; any failure exits 1 with the reason.
"""
import os
import signal
import socket
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from e2e_echo import DEADLINE_S, fail, start  # noqa: E402


def run_refused(wine, exe, args, want):
    env = dict(os.environ, WINEDEBUG="-all")
    try:
        p = subprocess.run([wine, exe] + args, stdin=subprocess.DEVNULL, capture_output=True,
                           timeout=120, env=env)
    except subprocess.TimeoutExpired:
        fail(f"{args}: did not exit within 120 s")
    err = p.stderr.decode(errors="replace")
    if p.returncode != 2 or want not in err:
        fail(f"{args}: exit {p.returncode} (want 2), stderr must say {want!r}:\n{err}")
    print(f"e2e: ok: refused {' '.join(args[-2:])}: {err.strip().splitlines()[-1]}", flush=True)


def read_response(f):
    """One HTTP/1.1 response from a buffered socket file: (status, headers, body)."""
    status = f.readline()
    if not status:
        return None
    headers = {}
    while True:
        line = f.readline()
        if line in (b"\r\n", b""):
            break
        k, _, v = line.decode().partition(":")
        headers[k.strip().lower()] = v.strip()
    body = f.read(int(headers.get("content-length", "0")))
    return int(status.split()[1]), headers, body


def main():
    wine, exe = sys.argv[1], sys.argv[2]
    base = ["--listen", "127.0.0.1:0"]
    run_refused(wine, exe, ["--mode", "http"] + base + ["--set", "engine.backend=epoll"],
                "engine.backend: epoll is a Linux backend")
    run_refused(wine, exe, ["--mode", "http"] + base + ["--set", "tls.cert=c.pem", "--set",
                                                       "tls.key=k.pem"],
                "TLS needs OpenSSL")
    run_refused(wine, exe, ["--mode", "udp-echo"] + base, "packet paths, which are Linux only")

    proc, port = start(wine, exe, ["--mode", "http"] + base +
                       ["--set", "engine.shards=2", "--set", "timeouts.header_read_ms=500"],
                       r"http on 127\.0\.0\.1:(\d+), backend iocp, 2 shards")

    # Pipelining on one keep-alive connection.
    s = socket.create_connection(("127.0.0.1", port), timeout=DEADLINE_S)
    s.sendall(b"GET /plaintext HTTP/1.1\r\nHost: a\r\n\r\n"
              b"GET /bytes/10 HTTP/1.1\r\nHost: a\r\n\r\n"
              b"GET /nothing HTTP/1.1\r\nHost: a\r\n\r\n")
    f = s.makefile("rb")
    got = [read_response(f) for _ in range(3)]
    if [g and g[0] for g in got] != [200, 200, 404] or got[1][2] != b"x" * 10:
        fail(f"pipelined answers: {got}", proc)
    # A large body, whole.
    s.sendall(b"GET /bytes/5000000 HTTP/1.1\r\nHost: a\r\n\r\n")
    st, hd, body = read_response(f)
    if st != 200 or len(body) != 5_000_000 or body.count(b"x") != 5_000_000:
        fail(f"/bytes/5000000: status {st}, {len(body)} bytes", proc)
    f.close()
    s.close()
    print("e2e: ok: pipelined keep-alive answers in order; 5 MB body whole", flush=True)

    # The header-read deadline: half a request, then silence.
    slow = socket.create_connection(("127.0.0.1", port), timeout=DEADLINE_S)
    t0 = time.monotonic()
    slow.sendall(b"GET / HTTP/1.1\r\nHost: a\r\n")
    # Meanwhile another client is served.
    s2 = socket.create_connection(("127.0.0.1", port), timeout=DEADLINE_S)
    s2.sendall(b"GET /plaintext HTTP/1.1\r\nHost: b\r\nConnection: close\r\n\r\n")
    if read_response(s2.makefile("rb"))[0] != 200:
        fail("a client was not served beside a slow one", proc)
    s2.close()
    try:
        rest = slow.recv(4096)
    except OSError:
        rest = b""
    took = time.monotonic() - t0
    if rest:
        fail(f"the slow client got an answer {rest[:60]!r} instead of a close", proc)
    if took < 0.4 or took > 15:
        fail(f"the slow client was closed after {took:.2f} s (header_read_ms = 500)", proc)
    slow.close()
    print(f"e2e: ok: half a request closed by the header-read deadline after {took:.2f} s",
          flush=True)

    proc.send_signal(signal.SIGINT)
    try:
        rc = proc.wait(timeout=DEADLINE_S)
    except subprocess.TimeoutExpired:
        fail("no exit within 30 s of Ctrl-C", proc)
    err = proc.stderr.read().decode(errors="replace")
    if rc != 0 or "Ctrl-C: stopping gracefully" not in err or "ringpoll-serve: stopped" not in err:
        fail(f"Ctrl-C: exit {rc}; stderr:\n{err}")
    print("e2e: ok: Ctrl-C stopped it gracefully, exit 0", flush=True)
    print("e2e: PASS", flush=True)


if __name__ == "__main__":
    main()
