#!/usr/bin/env python3
"""TLS figures of issue 18 side by side: ringpoll against nginx and haproxy, one run.

  python3 bench/tls/compare.py --bin build/bin [--reps 3] [--seconds 10] [--warmup 2]
          [--out DIR] [--echo-backend PATH] [--hs-connections 50] [--set KEY=VALUE]
          [--only WORDS]

One ECDSA P-256 certificate (made with openssl at start, in DIR/conf/tls) for every
server; TLS 1.3 only everywhere (ringpoll tls.min_version = "1.3", nginx ssl_protocols
TLSv1.3, haproxy ssl-min-ver TLSv1.3); one shard/worker/thread each.
  https       HTTPS keep-alive plaintext, wrk -t1 -c100 over https: ringpoll-serve
              --mode http --tls-cert vs nginx `http` with `listen ... ssl` (baseline).
  proxy       TLS-terminating proxy in front of an echo backend, 50 and 500 connections
              × 64 B and 4 KiB, ringpoll-load --mode echo --tls as the client:
              ringpoll-proxy (a listener with tls.cert; the default backend) vs haproxy
              (mode tcp, `bind ... ssl crt`; baseline) vs nginx `stream` with `ssl`. The
              echo backend is ringpoll-serve --mode echo on epoll, or --echo-backend (an
              executable taking the port as its argument, such as the peers' c-epoll-echo).
  handshakes  a new TLS 1.3 handshake per request (ringpoll-load --mode http --tls
              --tls-handshake-per-request, --hs-connections at once): full handshakes,
              then resumed ones (--tls-resume: session tickets), ringpoll-serve vs nginx
              (baseline; ssl_session_tickets on). hs/s per core = 1e6 / the server core's
              busy µs per handshake (the client, one ringpoll-load shard verifying every
              certificate, is usually the bound of the raw handshakes/s).
The server under test runs on the first CPU, the client on the second, the echo backend
on the third (the second on a 2-CPU machine). Prints the expected duration first and a
Markdown table at the end (also DIR/results.md); raw client output, server logs and
configs in DIR. Numbers only mean something on a quiet machine; nothing here asserts a
figure, but a run with client errors is listed as failed and never enters a median.
"""
import os
import subprocess
import sys

sys.dont_write_bytecode = True
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "harness"))
from sidebyside import Candidate, Workload, main  # noqa: E402


def make_cert(d):
    """An ECDSA P-256 self-signed certificate for localhost and 127.0.0.1: (cert, key,
    cert+key in one file for haproxy)."""
    os.makedirs(d, exist_ok=True)
    cert, key, pem = (os.path.join(d, n) for n in ("cert.pem", "key.pem", "combined.pem"))
    r = subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt",
                        "ec_paramgen_curve:prime256v1", "-nodes", "-keyout", key, "-out", cert,
                        "-days", "30", "-subj", "/CN=localhost",
                        "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1"],
                       capture_output=True, text=True, timeout=30)
    if r.returncode != 0:
        sys.exit(f"tls: openssl could not make the certificate: {r.stderr.strip()}")
    with open(pem, "w") as f:
        f.write(open(cert).read() + open(key).read())
    for p in (cert, key, pem):
        os.chmod(p, 0o644)  # nginx's worker runs as nobody (a scratch key, never a real one)
    return cert, key, pem


def size_label(m):
    return f"{m // 1024} KiB" if m >= 1024 else f"{m} B"


def plan(s, args):
    a, t = args, s.tools
    cert, key, pem = make_cert(os.path.join(s.out, "conf", "tls"))
    client_tls = ["--tls", "--tls-ca", cert, "--tls-sni", "localhost"]
    serve = os.path.join(a.bin, "ringpoll-serve")
    proxy = os.path.join(a.bin, "ringpoll-proxy")
    have_serve = s.need("ringpoll-serve rows", os.access(serve, os.X_OK), f"no {serve}")
    have_proxy = s.need("ringpoll-proxy rows", os.access(proxy, os.X_OK), f"no {proxy}")
    s.need("nginx rows", t.nginx, "nginx is not installed")
    s.need("haproxy rows", t.haproxy, "haproxy is not installed")
    s.need("nginx stream rows", t.nginx_stream, "nginx's stream module (libnginx-mod-stream) is missing")
    if not (os.access(os.path.join(a.bin, "ringpoll-load"), os.X_OK) and t.wrk):
        sys.exit(f"tls: needs {a.bin}/ringpoll-load and wrk")

    rp_serve = [Candidate(name, lambda p, u, extra=extra: [
        serve, "--mode", "http", "--listen", f"127.0.0.1:{p}", "--tls-cert", cert, "--tls-key", key,
        "--set", 'tls.min_version="1.3"'] + s.ringpoll_pin(extra))
        for name, extra in s.variants("ringpoll-serve http --tls")] if have_serve else []

    nginx_https = Candidate("nginx http ssl (1 worker)",
                            lambda p, u: t.nginx_http_conf(p, f"nginx-https-{p}", tls=(cert, key)))

    def rp_proxy(p, u, extra):
        conf = os.path.join(t.tmpdir, f"ringpoll-proxy-{p}.toml")
        with open(conf, "w") as f:
            f.write(f'[[proxy.pool]]\nname = "echo"\nupstreams = ["127.0.0.1:{u}"]\n\n'
                    f'[[proxy.listener]]\nname = "tls"\nlisten = "127.0.0.1:{p}"\npool = "echo"\n'
                    f'tls.cert = "{cert}"\ntls.key = "{key}"\ntls.min_version = "1.3"\n')
        return [proxy, "--config", conf] + s.ringpoll_pin(extra)

    proxies = [Candidate(name, lambda p, u, extra=extra: rp_proxy(p, u, extra))
               for name, extra in s.variants("ringpoll-proxy")] if have_proxy else []
    if t.haproxy:
        proxies.append(Candidate("haproxy ssl (1 thread)", lambda p, u: t.haproxy_conf(
            p, u, f"haproxy-tls-{p}", tls_pem=pem)))
    if t.nginx_stream:
        proxies.append(Candidate("nginx stream ssl (1 worker)", lambda p, u: t.nginx_stream_conf(
            p, u, f"nginx-stream-tls-{p}", tls=(cert, key))))
    if a.echo_backend:
        backend = (os.path.basename(a.echo_backend), lambda p: [a.echo_backend, str(p)])
    else:
        backend = ("ringpoll-serve echo epoll", lambda p: [
            serve, "--mode", "echo", "--listen", f"127.0.0.1:{p}", "--set", "engine.backend=epoll"]
            + s.ringpoll_pin(upstream=True))

    servers = rp_serve + ([nginx_https] if t.nginx else [])
    wrk_s = max(1, round(a.warmup)) + a.seconds + 2
    load_s = a.warmup + a.seconds + 2
    wls = [Workload("https", "HTTPS keep-alive, wrk -t1 -c100", servers,
                    lambda s_, p, g: s_.wrk(p, g, 100, scheme="https"), wrk_s,
                    baseline=nginx_https.name)]
    for c in (50, 500):
        for m in (64, 4096):
            wls.append(Workload("proxy", f"TLS proxy {c} conn × {size_label(m)}", proxies,
                                lambda s_, p, g, c=c, m=m: s_.load(p, g, "echo", c, m, client_tls),
                                load_s, upstream=backend, baseline="haproxy ssl (1 thread)"))
    hs = ["--tls-handshake-per-request"]
    for label, extra in (("full", []), ("resumed", ["--tls-resume"])):
        wls.append(Workload("handshakes", f"{label} TLS 1.3 handshakes, {a.hs_connections} conn",
                            servers, lambda s_, p, g, extra=extra: with_handshakes(
                                s_.load(p, g, "http", a.hs_connections, extra=client_tls + hs + extra)),
                            load_s, baseline=nginx_https.name))
    return wls


def with_handshakes(rec):
    """Handshakes per core-second and the share that was resumed."""
    if rec.get("core_us"):
        rec["hs_per_core_s"] = 1e6 / rec["core_us"]
    if rec.get("srv_us"):
        rec["hs_per_cpu_s"] = 1e6 / rec["srv_us"]
    if rec.get("tls_handshakes"):
        rec["resumed_pct"] = 100.0 * rec["tls_resumed"] / rec["tls_handshakes"]
    return rec


SECTIONS = [
    ("https", "HTTPS keep-alive plaintext (wrk -t1 -c100)", [
        ("req/s", "rps", "rps"), ("× base", "rps_x", "x"), ("server CPU µs/req", "srv_us", "us"),
        ("× base", "srv_us_x", "x"), ("core busy µs/req", "core_us", "us"), ("× base", "core_us_x", "x"),
        ("p99", "p99_us", "lat"), ("× base", "p99_us_x", "x")]),
    ("proxy", "TLS-terminating proxy in front of an echo backend (ringpoll-load --tls)", [
        ("req/s", "rps", "rps"), ("× base", "rps_x", "x"), ("proxy CPU µs/req", "srv_us", "us"),
        ("× base", "srv_us_x", "x"), ("core busy µs/req", "core_us", "us"), ("p99", "p99_us", "lat"),
        ("× base", "p99_us_x", "x"), ("backend CPU µs/req", "up_us", "us")]),
    ("handshakes", "New TLS 1.3 handshakes, one per request (ringpoll-load --tls-handshake-per-request)", [
        ("handshakes/s", "rps", "rps"), ("resumed", "resumed_pct", "pct"),
        ("server CPU µs/hs", "srv_us", "us"), ("× base", "srv_us_x", "x"),
        ("core busy µs/hs", "core_us", "us"), ("hs/s per core", "hs_per_core_s", "n"),
        ("× base", "hs_per_core_s_x", "x"), ("p99", "p99_us", "lat")]),
]


def add_args(ap):
    ap.add_argument("--echo-backend", help="echo server executable taking its port as argument "
                                           "(default: ringpoll-serve --mode echo on epoll)")
    ap.add_argument("--hs-connections", type=int, default=50,
                    help="connections at once of the handshake rows (50)")


if __name__ == "__main__":
    sys.exit(main(__doc__, "tls", "TLS side by side (issue 18)", plan, SECTIONS, add_args))
