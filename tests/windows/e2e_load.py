#!/usr/bin/env python3
"""ringpoll-load as a Windows program under Wine (issue 25).

    e2e_load.py WINE ringpoll-load.exe ringpoll-serve.exe

Runs the Windows ringpoll-serve (echo, then http) under Wine and the Windows ringpoll-load
against it for 2 s each (2 shards, 8 connections; echo answers are checked byte for byte
by the generator): its JSON report must show the iocp backend, requests answered and no
error. --tls is refused (exit 2, saying why). Every wait is bounded.
"""
import json
import os
import signal
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from e2e_echo import DEADLINE_S, fail, start  # noqa: E402


def main():
    wine, load, serve = sys.argv[1], os.path.abspath(sys.argv[2]), os.path.abspath(sys.argv[3])
    env = dict(os.environ, WINEDEBUG="-all")
    r = subprocess.run([wine, load, "--mode", "echo", "--target", "127.0.0.1:1",
                        "--connections", "1", "--duration", "1", "--tls"],
                       stdin=subprocess.DEVNULL, capture_output=True, timeout=120, env=env)
    err = r.stderr.decode(errors="replace")
    if r.returncode != 2 or "TLS needs OpenSSL" not in err:
        fail(f"--tls: exit {r.returncode} (want 2), stderr:\n{err}")
    print("e2e: ok: --tls refused", flush=True)
    for mode in ("echo", "http"):
        srv, port = start(wine, serve, ["--mode", mode, "--listen", "127.0.0.1:0", "--set",
                                        "engine.shards=2"])
        with tempfile.TemporaryDirectory() as d:
            args = [wine, load, "--mode", mode, "--target", f"127.0.0.1:{port}", "--connections",
                    "8", "--shards", "2", "--duration", "2", "--warmup", "0.5", "--json",
                    "report.json"]
            if mode == "echo":
                args += ["--size", "1000", "--pipeline", "4"]
            try:
                r = subprocess.run(args, cwd=d, stdin=subprocess.DEVNULL, capture_output=True,
                                   timeout=120, env=env)
            except subprocess.TimeoutExpired:
                fail(f"ringpoll-load --mode {mode} did not finish within 120 s", srv)
            out = r.stdout.decode(errors="replace")
            if r.returncode != 0:
                fail(f"ringpoll-load --mode {mode}: exit {r.returncode}\n{out}\n"
                     f"{r.stderr.decode(errors='replace')}", srv)
            with open(os.path.join(d, "report.json")) as f:
                rep = json.load(f)
        if rep["backend"] != "iocp" or rep["requests"] <= 0 or rep["errors"]["total"] != 0:
            fail(f"--mode {mode}: backend {rep['backend']}, {rep['requests']} requests, "
                 f"errors {rep['errors']}", srv)
        print(f"e2e: ok: --mode {mode}: {rep['requests']} requests answered, no error, "
              f"backend iocp", flush=True)
        srv.send_signal(signal.SIGINT)
        try:
            rc = srv.wait(timeout=DEADLINE_S)
        except subprocess.TimeoutExpired:
            fail("ringpoll-serve did not stop on Ctrl-C", srv)
        if rc != 0:
            fail(f"ringpoll-serve exit {rc} after Ctrl-C")
    print("e2e: PASS", flush=True)


if __name__ == "__main__":
    main()
