#!/usr/bin/env python3
"""End to end, Windows program under Wine, Linux clients over loopback (issue 25).

    e2e_echo.py [--drain-s S] WINE PROGRAM.exe [ARG ...]

Starts PROGRAM under Wine listening on 127.0.0.1:0 (its first stdout line names the
address: "...: listening on 127.0.0.1:PORT" or "...: echo on 127.0.0.1:PORT, ..."), then
from Linux sockets (Wine's sockets are the host's):
  - payload integrity: 6 connections at once, 2 MiB of random bytes each, echoed intact;
  - half-close: a client that shuts its sending side gets every byte back, then EOF;
  - graceful stop: Ctrl-C (Wine turns SIGINT into the console's CTRL_C_EVENT) while one
    connection is idle and one is mid-transfer: the transfer goes on and what comes back
    is intact; it completes, or is cut no earlier than the program's drain deadline
    (--drain-s, default 1); the idle one is closed; new connections are refused; the
    program exits 0.
Every wait is bounded; any failure exits 1 with the reason.
"""
import hashlib
import os
import random
import re
import select
import signal
import socket
import subprocess
import sys
import threading
import time

DEADLINE_S = 30  # for any single step; a pass takes a few seconds


def fail(msg, proc=None):
    print(f"e2e: FAIL: {msg}", flush=True)
    if proc is not None and proc.poll() is None:
        proc.kill()
        proc.wait(timeout=10)
    sys.exit(1)


def first_line(proc):
    end = time.monotonic() + 120  # a cold Wine may take a while to start the program
    buf = b""
    while time.monotonic() < end:
        r, _, _ = select.select([proc.stdout], [], [], 0.5)
        if r:
            chunk = os.read(proc.stdout.fileno(), 4096)
            if not chunk:
                break
            buf += chunk
            if b"\n" in buf:
                return buf.split(b"\n", 1)[0].decode(errors="replace")
        if proc.poll() is not None:
            break
    fail(f"no start line from the program (got {buf!r}, exit {proc.poll()})", proc)


def start(wine, program, args, pattern=r"127\.0\.0\.1:(\d+)"):
    """Starts PROGRAM under Wine; returns (process, port) once its first stdout line, which
    must match `pattern` (group 1: the port), has come."""
    env = dict(os.environ, WINEDEBUG="-all")
    proc = subprocess.Popen([wine, program] + args, stdin=subprocess.DEVNULL,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    line = first_line(proc)
    m = re.search(pattern, line)
    if not m:
        fail(f"unexpected start line {line!r}", proc)
    print(f"e2e: {line}", flush=True)
    return proc, int(m.group(1))


def read_to_end(s):
    """Everything the peer sends on socket s until it closes."""
    data = b""
    while True:
        b = s.recv(65536)
        if not b:
            return data
        data += b


def connect(port):
    s = socket.create_connection(("127.0.0.1", port), timeout=DEADLINE_S)
    s.settimeout(DEADLINE_S)
    return s


def send_and_read(port, data, host="127.0.0.1"):
    """Sends `data` and half-closes (from a thread) while reading what comes back until the
    peer closes; returns it. OSError on a failed connect or read."""
    s = socket.create_connection((host, port), timeout=DEADLINE_S)
    s.settimeout(DEADLINE_S)
    sender = threading.Thread(target=lambda: (s.sendall(data), s.shutdown(socket.SHUT_WR)))
    sender.start()
    got = read_to_end(s)
    sender.join(DEADLINE_S)
    s.close()
    return got


def echo_round(port, size, seed, results, idx):
    data = random.Random(seed).randbytes(size)
    got = b""
    try:
        got = send_and_read(port, data)
    except OSError as e:
        results[idx] = f"connection {idx}: {e}"
        return
    if hashlib.sha256(got).digest() != hashlib.sha256(data).digest():
        results[idx] = f"connection {idx}: sent {len(data)} bytes, got {len(got)} back, not the same"
    else:
        results[idx] = None


def main():
    argv = sys.argv[1:]
    drain_s = 1.0
    if argv[0] == "--drain-s":
        drain_s = float(argv[1])
        argv = argv[2:]
    wine, program, args = argv[0], argv[1], argv[2:]
    proc, port = start(wine, program, args)

    # Payload integrity, several connections at once.
    results = [None] * 6
    ts = [threading.Thread(target=echo_round, args=(port, 2 << 20, i, results, i)) for i in range(6)]
    for t in ts:
        t.start()
    for t in ts:
        t.join(DEADLINE_S * 2)
    errors = [r for r in results if r]
    if any(t.is_alive() for t in ts):
        fail("an echo connection did not finish in time", proc)
    if errors:
        fail("; ".join(errors), proc)
    print("e2e: ok: 6 x 2 MiB echoed intact", flush=True)

    # Half-close: every byte back, then end of stream.
    s = connect(port)
    s.sendall(b"half-close " * 1000)
    s.shutdown(socket.SHUT_WR)
    got = read_to_end(s)
    s.close()
    if got != b"half-close " * 1000:
        fail(f"half-close: got {len(got)} bytes back, want 11000", proc)
    print("e2e: ok: half-close answered in full, then EOF", flush=True)

    # Graceful stop with an idle connection and one mid-transfer.
    idle = connect(port)
    idle.sendall(b"x")
    if idle.recv(1) != b"x":
        fail("idle connection: no echo", proc)
    busy = connect(port)
    busy_data = random.Random(99).randbytes(1 << 20)
    busy_got = bytearray()
    busy_sent = threading.Event()

    def pump():
        try:
            busy.sendall(busy_data[: 256 << 10])
            time.sleep(0.1)  # the stop arrives while this connection is open and moving
            busy.sendall(busy_data[256 << 10:])
            busy.shutdown(socket.SHUT_WR)
        except OSError:
            pass  # cut at the drain deadline: the reader judges it
        busy_sent.set()

    sender = threading.Thread(target=pump)
    sender.start()
    while len(busy_got) < (256 << 10):
        b = busy.recv(65536)
        if not b:
            break
        busy_got += b
    t_stop = time.monotonic()
    proc.send_signal(signal.SIGINT)
    cut = None
    while True:
        try:
            b = busy.recv(65536)
        except OSError as e:
            cut = str(e)
            break
        if not b:
            break
        busy_got += b
    cut_after = time.monotonic() - t_stop
    sender.join(DEADLINE_S)
    if bytes(busy_got) != busy_data[:len(busy_got)]:
        fail("mid-transfer connection: the bytes that came back are not what was sent", proc)
    if len(busy_got) < len(busy_data) or cut:
        # Cut short: only the drain deadline may do that.
        if cut_after < drain_s - 0.1:
            fail(f"mid-transfer connection cut {cut_after:.2f} s after Ctrl-C ({cut or 'EOF'}, "
                 f"{len(busy_got)} of {len(busy_data)} bytes), before the {drain_s} s drain", proc)
        print(f"e2e: ok: a transfer in progress at Ctrl-C ran until the drain deadline "
              f"({cut_after:.2f} s), intact", flush=True)
    else:
        print("e2e: ok: a transfer in progress at Ctrl-C completed intact", flush=True)
    # The idle one is closed at the drain deadline (or at once: an echo has no request to
    # finish); either way it ends, without data.
    try:
        rest = idle.recv(1)
    except OSError:
        rest = b""
    if rest:
        fail(f"idle connection got {rest!r} at the stop", proc)
    try:
        rc = proc.wait(timeout=DEADLINE_S)
    except subprocess.TimeoutExpired:
        fail("the program did not exit within 30 s of Ctrl-C", proc)
    took = time.monotonic() - t_stop
    err = proc.stderr.read().decode(errors="replace")
    if rc != 0:
        fail(f"exit status {rc} after Ctrl-C (want 0); stderr:\n{err}")
    if "Ctrl-C: stopping gracefully" not in err:
        fail(f"stderr does not say the Ctrl-C started a graceful stop:\n{err}")
    try:
        socket.create_connection(("127.0.0.1", port), timeout=5).close()
        fail("a connection was accepted after the program stopped")
    except OSError:
        pass
    print(f"e2e: ok: Ctrl-C stopped gracefully, exit 0 after {took:.1f} s", flush=True)
    print("e2e: PASS", flush=True)


if __name__ == "__main__":
    main()
