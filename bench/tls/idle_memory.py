#!/usr/bin/env python3
"""What an idle TLS connection costs a server: RSS growth per connection.

  python3 bench/tls/idle_memory.py --bin build/bin [--connections 1000] [--reps 3]

Each candidate serves HTTPS with the same self-signed ECDSA P-256 certificate, one
worker/shard: ringpoll-serve --mode http on epoll and on io_uring completion mode, and
nginx (http, ssl, 1 worker). The script opens N TLS connections (Python's ssl module,
TLS 1.3), sends one keep-alive GET on each and reads the answer, waits a second, and
takes the server's RSS (the whole process tree) less its RSS before the connections,
divided by N. Candidates run in a rotated order each repetition; the table has medians.
RSS does not depend on CPU load, so this may run beside other work.
"""
import argparse
import os
import shutil
import socket
import ssl
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "hardening"))
from common import free_port, stop, wait_port  # noqa: E402
from scale import raise_nofile, tree_rss_kib  # noqa: E402


def make_cert(d):
    cert, key = os.path.join(d, "cert.pem"), os.path.join(d, "key.pem")
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt",
                    "ec_paramgen_curve:P-256", "-nodes", "-days", "1", "-subj", "/CN=localhost",
                    "-keyout", key, "-out", cert], check=True, capture_output=True)
    return cert, key


def nginx_argv(d, port, cert, key):
    conf = os.path.join(d, f"nginx-{port}.conf")
    with open(conf, "w") as f:
        f.write(f"""worker_processes 1;
daemon off;
pid {d}/nginx-{port}.pid;
error_log {d}/nginx-{port}.log warn;
events {{ worker_connections 4096; }}
http {{
  access_log off;
  keepalive_timeout 300s;
  keepalive_requests 100000;
  client_body_temp_path {d}/b; proxy_temp_path {d}/p; fastcgi_temp_path {d}/f;
  uwsgi_temp_path {d}/u; scgi_temp_path {d}/s;
  server {{
    listen 127.0.0.1:{port} ssl;
    ssl_certificate {cert};
    ssl_certificate_key {key};
    location / {{ return 200 "Hello, World!"; }}
  }}
}}
""")
    return ["nginx", "-p", d + "/", "-e", f"{d}/nginx-{port}.log", "-c", conf]


def candidates(args, d, cert, key):
    serve = os.path.join(args.bin, "ringpoll-serve")
    out = []
    for label, sets in (("epoll", ["engine.backend=epoll"]),
                        ("io_uring completion", ["engine.backend=io_uring",
                                                 "io_uring.mode=completion"])):
        extra = [a for kv in sets for a in ("--set", kv)]
        out.append((f"ringpoll-serve {label}", lambda p, extra=extra: [
            serve, "--mode", "http", "--listen", f"127.0.0.1:{p}", "--tls-cert", cert,
            "--tls-key", key, "--set", "engine.shards=1", "--set", "timeouts.idle_ms=300000"]
            + extra))
    if shutil.which("nginx"):
        out.append(("nginx 1 worker", lambda p: nginx_argv(d, p, cert, key)))
    return out


def measure(name, argv_fn, args):
    port = free_port()
    proc = subprocess.Popen(argv_fn(port), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    conns = []
    try:
        if not wait_port(port, proc):
            raise RuntimeError(f"{name} did not listen: {proc.stderr.read().decode()[-400:]}")
        ctx = ssl.create_default_context()
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        req = f"GET /plaintext HTTP/1.1\r\nHost: localhost:{port}\r\n\r\n".encode()

        def one():
            s = ctx.wrap_socket(socket.create_connection(("127.0.0.1", port)),
                                server_hostname="localhost")
            s.sendall(req)
            if not s.recv(4096).startswith(b"HTTP/1.1 200"):
                raise RuntimeError(f"{name}: no 200 answer")
            return s

        conns.append(one())  # warm the server (first allocations) before the baseline
        time.sleep(0.5)
        before = tree_rss_kib(proc.pid)
        for _ in range(args.connections):
            conns.append(one())
        time.sleep(1.0)
        after = tree_rss_kib(proc.pid)
        return (after - before) * 1024 / args.connections
    finally:
        for s in conns:
            s.close()
        stop(proc)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--bin", default="build/bin")
    ap.add_argument("--connections", type=int, default=1000)
    ap.add_argument("--reps", type=int, default=3)
    args = ap.parse_args()
    raise_nofile(args.connections * 2 + 256)
    d = tempfile.mkdtemp(prefix="rp-tls-idle-")
    os.chmod(d, 0o755)  # nginx workers run as nobody
    try:
        cert, key = make_cert(d)
        os.chmod(key, 0o644)
        cands = candidates(args, d, cert, key)
        res = {n: [] for n, _ in cands}
        for rep in range(args.reps):
            k = rep % len(cands)
            for name, fn in cands[k:] + cands[:k]:
                b = measure(name, fn, args)
                res[name].append(b)
                print(f"rep {rep + 1} {name}: {b:.0f} B per idle TLS connection", flush=True)
        print(f"\n{args.reps} reps × {args.connections} idle TLS connections, medians")
        print("| server | RSS per idle TLS connection |")
        print("|---|---:|")
        for name, v in res.items():
            print(f"| {name} | {statistics.median(v) / 1024:.1f} KiB |")
    finally:
        shutil.rmtree(d, ignore_errors=True)


if __name__ == "__main__":
    main()
