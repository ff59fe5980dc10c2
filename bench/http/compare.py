#!/usr/bin/env python3
"""HTTP proxy figures of issue 19 side by side: ringpoll-proxy protocol = "http" against
nginx proxy_pass and haproxy mode http, one run.

  python3 bench/http/compare.py --bin build/bin [--reps 3] [--seconds 10] [--warmup 2]
          [--out DIR] [--idle-connections 2000] [--set KEY=VALUE] [--only WORDS]

One upstream for all: ringpoll-serve --mode http (one shard), started fresh beside each
proxy on its own CPU (the third; the client's, the second, on a 2-CPU machine). The
proxies, one worker/thread each, pinned to the first CPU:
  ringpoll-proxy   a listener with protocol = "http", its default route to one pool
                   (keep-alive upstream connections per shard: http.max_idle_per_upstream
                   1024, the defaults, X-Forwarded-For/-Proto and Via added),
                   http.access_log = "off";
  nginx            proxy_pass to an `upstream { keepalive 1024; keepalive_requests 10000; }`
                   with proxy_http_version 1.1 and proxy_set_header Connection ""
                   (baseline);
  haproxy          mode http, http-reuse always.
Rows:
  wrk -t1 -c100 and -c500 to /plaintext: requests/s, the proxy's CPU µs/request, its
  pinned core's busy µs/request (/proc/stat), p99 (wrk's Lua done() hook; --latency's
  table is in the raw output), the upstream's CPU per request. At -c100 also
  ringpoll-proxy with the access log on (text lines to a file in DIR/raw), with the
  lines the proxy counted written and dropped.
  idle memory: --idle-connections keep-alive connections, one GET each, then idle; the
  proxy's RSS and PSS growth per connection (its process tree: nginx's worker too). Every
  answer must be a 200 and every connection still open when measured.
Prints the expected duration first and Markdown tables at the end (also DIR/results.md);
raw output, logs and configs in DIR. Numbers only mean something on a quiet machine;
nothing here asserts a figure, but a run with client errors is listed as failed and never
enters a median.
"""
import os
import sys

sys.dont_write_bytecode = True
HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "harness"))
sys.path.insert(0, os.path.join(HERE, "..", "hardening"))
from procs import free_port  # noqa: E402
from scale import raise_nofile  # noqa: E402
from sidebyside import Candidate, Workload, idle_memory, main, metrics  # noqa: E402

REQUEST = b"GET /plaintext HTTP/1.1\r\nHost: localhost\r\n\r\n"
NGINX = "nginx proxy_pass keepalive (1 worker)"


class RingpollHttp(Candidate):
    """ringpoll-proxy with one HTTP listener; access_log: None (off) or a file. After the
    client: what the admin page counted (requests, upstream reuse, log lines, drops)."""

    def __init__(self, s, name, extra=(), access_log=False):
        super().__init__(name, self.argv, self.counted)
        self.s = s
        self.extra = extra
        self.access_log = access_log
        self.admin = {}  # listen port -> admin port

    def argv(self, port, up):
        s = self.s
        log = s.file("access.log") if self.access_log else "off"
        conf = os.path.join(s.tools.tmpdir, f"ringpoll-proxy-http-{port}.toml")
        with open(conf, "w") as f:
            f.write(f'[http]\naccess_log = "{log}"\n\n'
                    f'[[proxy.pool]]\nname = "up"\nupstreams = ["127.0.0.1:{up}"]\n\n'
                    f'[[proxy.listener]]\nname = "http"\nlisten = "127.0.0.1:{port}"\npool = "up"\n'
                    f'protocol = "http"\n')
        self.admin[port] = free_port()
        return ([os.path.join(s.a.bin, "ringpoll-proxy"), "--config", conf, "--admin",
                 f"127.0.0.1:{self.admin[port]}"] + s.ringpoll_pin(self.extra))

    def counted(self, s, proc, port):
        try:
            m = metrics(self.admin[port])
        except OSError as e:
            return {"ok": False, "error": f"admin page: {e}"}
        out = {"proxy_requests": m.get("ringpoll_proxy_http_requests_total"),
               "upstream_reuse_ratio": m.get("ringpoll_proxy_http_upstream_reuse_ratio")}
        if self.access_log:
            out["log_lines"] = m.get("ringpoll_proxy_access_log_lines_total")
            out["log_dropped"] = m.get("ringpoll_proxy_access_log_dropped_total")
        return out


def plan(s, args):
    a, t = args, s.tools
    serve = os.path.join(a.bin, "ringpoll-serve")
    if not (os.access(serve, os.X_OK) and os.access(os.path.join(a.bin, "ringpoll-load"), os.X_OK)
            and t.wrk):
        sys.exit(f"http: needs {serve} (the upstream), {a.bin}/ringpoll-load and wrk")
    have_proxy = s.need("ringpoll-proxy rows", os.access(os.path.join(a.bin, "ringpoll-proxy"), os.X_OK),
                        f"no {a.bin}/ringpoll-proxy")
    s.need("nginx rows", t.nginx, "nginx is not installed")
    s.need("haproxy rows", t.haproxy, "haproxy is not installed")
    conns = max(8192, 2 * a.idle_connections + 1024)
    upstream = ("ringpoll-serve http (upstream)", lambda p: [
        serve, "--mode", "http", "--listen", f"127.0.0.1:{p}"] + s.ringpoll_pin(upstream=True))
    peers = []
    if t.nginx:
        peers.append(Candidate(NGINX, lambda p, u: t.nginx_http_proxy_conf(
            p, u, f"nginx-proxy-{p}", conns=conns)))
    if t.haproxy:
        peers.append(Candidate("haproxy mode http (1 thread)", lambda p, u: t.haproxy_conf(
            p, u, f"haproxy-http-{p}", mode="http", maxconn=conns)))
    rp = [RingpollHttp(s, n, extra) for n, extra in s.variants("ringpoll-proxy http")] if have_proxy else []
    logged = [RingpollHttp(s, "ringpoll-proxy http, access log on", access_log=True)] if have_proxy else []
    wrk_s = max(1, round(a.warmup)) + a.seconds + 3
    wls = []
    for c in (100, 500):
        wls.append(Workload("wrk", f"wrk -t1 -c{c}", rp + (logged if c == 100 else []) + peers,
                            lambda s_, p, g, c=c: s_.wrk(p, g, c), wrk_s, upstream=upstream,
                            baseline=NGINX))
    wls.append(Workload("idle", f"{a.idle_connections} idle keep-alive connections", rp + peers,
                        lambda s_, p, g: idle_memory(s_, p, g, a.idle_connections, REQUEST),
                        6 + a.idle_connections / 1000, upstream=upstream, baseline=NGINX))
    return wls


SECTIONS = [
    ("wrk", "HTTP proxy, wrk to /plaintext through the proxy", [
        ("req/s", "rps", "rps"), ("× base", "rps_x", "x"), ("proxy CPU µs/req", "srv_us", "us"),
        ("× base", "srv_us_x", "x"), ("core busy µs/req", "core_us", "us"), ("× base", "core_us_x", "x"),
        ("p99", "p99_us", "lat"), ("× base", "p99_us_x", "x"), ("upstream CPU µs/req", "up_us", "us"),
        ("upstream reuse", "upstream_reuse_ratio", "us"), ("log lines", "log_lines", "n"),
        ("log dropped", "log_dropped", "n")]),
    ("idle", "Memory per idle keep-alive client connection", [
        ("RSS B/conn", "mem_rss_per_conn_b", "n"), ("× base", "mem_rss_per_conn_b_x", "x"),
        ("PSS B/conn", "mem_pss_per_conn_b", "n"), ("× base", "mem_pss_per_conn_b_x", "x"),
        ("RSS before KiB", "mem_rss_base_kib", "n"), ("RSS with them KiB", "mem_rss_kib", "n")]),
]


def add_args(ap):
    ap.add_argument("--idle-connections", type=int, default=2000,
                    help="keep-alive connections held idle for the memory row (2000)")


if __name__ == "__main__":
    sys.exit(main(__doc__, "http", "HTTP proxy side by side (issue 19)", plan, SECTIONS, add_args,
                  before=lambda a: raise_nofile(a.idle_connections + 1024)))
