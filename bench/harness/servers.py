"""What can be run on this machine, and the command line of each server and proxy.

ringpoll's own programs come from the build folder; the peers (c-epoll-echo,
c-uring-echo, go-echo, go-http) from the peers' bin folder; nginx, haproxy and wrk from
PATH. Whatever is missing is recorded in Tools.skipped with the reason, and the rows that
need it are left out (never silently).
"""
import os
import shutil

NGINX_STREAM_MODULE = "/usr/lib/nginx/modules/ngx_stream_module.so"

# --set options giving ringpoll-serve / ringpoll-proxy one shard pinned to CPU 0, and the
# backend of each ringpoll candidate. The keys are those of tuning::Config.
ONE_SHARD = ["--set", "engine.shards=1"]
PIN_CPU0 = ["--set", "engine.cpus=[0]"]
RP_BACKENDS = {
    "io_uring-completion": ["--set", "engine.backend=io_uring", "--set", "io_uring.mode=completion"],
    "io_uring-readiness": ["--set", "engine.backend=io_uring", "--set", "io_uring.mode=readiness"],
    "epoll": ["--set", "engine.backend=epoll"],
}
# The demo's default (not the matrix, which pins each backend above): io_uring completion
# mode when io_uring can start, else epoll; the engine logs which one runs and why.
DEMO_AUTO = ["--set", "engine.backend=auto", "--set", "io_uring.mode=completion"]


def backend_args(backend):
    """The --set options for a backend name of RP_BACKENDS, or "auto" (DEMO_AUTO)."""
    return DEMO_AUTO if backend == "auto" else RP_BACKENDS[backend]


class Tools:
    def __init__(self, build_dir, peers_bin, tmpdir, pinned, bin_dir=None):
        self.build_dir = build_dir
        self.tmpdir = tmpdir
        self.pinned = pinned
        self.skipped = []  # (what, why)
        b = bin_dir or os.path.join(build_dir, "bin")
        self.load = _exe(os.path.join(b, "ringpoll-load"))
        self.serve = _exe(os.path.join(b, "ringpoll-serve"))
        self.proxy = _exe(os.path.join(b, "ringpoll-proxy"))
        self.echo = _exe(os.path.join(b, "ringpoll-echo"))
        self.peers_bin = peers_bin
        self.peer = {}
        for p in ("c-epoll-echo", "c-uring-echo", "go-echo", "go-http"):
            self.peer[p] = _exe(os.path.join(peers_bin, p)) if peers_bin else None
        self.nginx = shutil.which("nginx")
        self.haproxy = shutil.which("haproxy")
        self.wrk = shutil.which("wrk")
        self.nginx_stream = bool(self.nginx) and os.path.exists(NGINX_STREAM_MODULE)

    def skip(self, what, why):
        if (what, why) not in self.skipped:
            self.skipped.append((what, why))

    # ------------------------------------------------------------------ servers
    def serve_echo_argv(self, backend, port):
        """ringpoll-serve in echo mode, or ringpoll-echo standing in while serve is absent.
        backend: a key of RP_BACKENDS, or "auto" (the demo's default; ringpoll-echo, which
        has no automatic choice, then runs io_uring-completion). Returns (argv, label) or
        None."""
        pin = PIN_CPU0 if self.pinned else []
        if self.serve:
            label = "ringpoll-serve" if backend == "auto" else f"ringpoll-serve {backend}"
            return ([self.serve, "--mode", "echo", "--listen", f"127.0.0.1:{port}"] + ONE_SHARD
                    + pin + backend_args(backend), label)
        if backend == "auto":
            backend = "io_uring-completion"
        if self.echo:
            return ([self.echo, "--backend", backend, "--listen", f"127.0.0.1:{port}"],
                    f"ringpoll-echo {backend} (stand-in)")
        return None

    def _nginx(self, tag, comment, events_and_body, stream=False, conns=8192):
        """An nginx config (one worker, in its own folder under tmpdir) and its argv."""
        d = os.path.join(self.tmpdir, tag)
        os.makedirs(d, exist_ok=True)
        conf = os.path.join(d, "nginx.conf")
        with open(conf, "w") as f:
            f.write(f"""# {comment} for ringpoll's bench harness (one worker)
{f"load_module {NGINX_STREAM_MODULE};{chr(10)}" if stream else ""}worker_processes 1;
daemon off;
master_process on;
pid {d}/nginx.pid;
error_log {d}/error.log warn;
worker_rlimit_nofile {2 * conns};
events {{ worker_connections {conns}; }}
""" + events_and_body.replace("@DIR@", d))
        return [self.nginx, "-p", d + "/", "-e", f"{d}/error.log", "-c", conf]

    @staticmethod
    def _nginx_tls(tls):
        """listen suffix and ssl_* lines for tls = (cert, key) or None; TLS 1.3 only (the
        figures of issue 18 compare TLS 1.3 with an ECDSA P-256 certificate)."""
        if not tls:
            return "", ""
        return " ssl", (f"    ssl_certificate {tls[0]};\n    ssl_certificate_key {tls[1]};\n"
                        f"    ssl_protocols TLSv1.3;\n    ssl_session_tickets on;\n")

    @staticmethod
    def _nginx_http(servers):
        return f"""http {{
  access_log off;
  server_tokens off;
  keepalive_requests 1000000000;
  client_body_temp_path @DIR@/body;
  proxy_temp_path @DIR@/proxy;
  fastcgi_temp_path @DIR@/fastcgi;
  uwsgi_temp_path @DIR@/uwsgi;
  scgi_temp_path @DIR@/scgi;
{servers}}}
"""

    def nginx_http_conf(self, port, tag, tls=None):
        """The plaintext responder; tls = (cert, key) makes it HTTPS."""
        ssl, lines = self._nginx_tls(tls)
        return self._nginx(tag, "plaintext responder", self._nginx_http(f"""  server {{
    listen 127.0.0.1:{port}{ssl} backlog=4096;
{lines}    location / {{ default_type text/plain; return 200 "Hello, World!"; }}
  }}
"""))

    def nginx_http_proxy_conf(self, port, upstream_port, tag, conns=8192):
        """HTTP reverse proxy (proxy_pass) to one upstream with a keep-alive pool of 1024 (ringpoll-proxy's default idle cap)."""
        return self._nginx(tag, "HTTP proxy", self._nginx_http(f"""  upstream up {{
    server 127.0.0.1:{upstream_port};
    keepalive 1024;
    keepalive_requests 10000;
  }}
  server {{
    listen 127.0.0.1:{port} backlog=4096;
    location / {{
      proxy_pass http://up;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
    }}
  }}
"""), conns=conns)

    def nginx_stream_conf(self, port, backend_port, tag, tls=None):
        """L4 proxy; tls = (cert, key) terminates TLS."""
        ssl, lines = self._nginx_tls(tls)
        return self._nginx(tag, "L4 proxy", f"""stream {{
  server {{
    listen 127.0.0.1:{port}{ssl} backlog=4096;
{lines}    proxy_pass 127.0.0.1:{backend_port};
    proxy_timeout 120s;
  }}
}}
""", stream=True)

    def haproxy_conf(self, port, backend_port, tag, mode="tcp", tls_pem=None, maxconn=4000):
        """One thread; mode "tcp" (L4) or "http" (keep-alive upstream connections shared
        by all clients: http-reuse always); tls_pem (certificate and key in one file)
        terminates TLS 1.3."""
        d = os.path.join(self.tmpdir, tag)
        os.makedirs(d, exist_ok=True)
        conf = os.path.join(d, "haproxy.cfg")
        ssl = f" ssl crt {tls_pem} ssl-min-ver TLSv1.3" if tls_pem else ""
        http = "  timeout http-keep-alive 120s\n  http-reuse always\n" if mode == "http" else ""
        with open(conf, "w") as f:
            f.write(f"""# {mode} proxy for ringpoll's bench harness (one thread)
global
  nbthread 1
  maxconn {maxconn}
defaults
  mode {mode}
  timeout connect 5s
  timeout client 120s
  timeout server 120s
{http}listen fwd
  bind 127.0.0.1:{port}{ssl}
  server b1 127.0.0.1:{backend_port}
""")
        return [self.haproxy, "-db", "-f", conf]


def _exe(path):
    return path if path and os.path.isfile(path) and os.access(path, os.X_OK) else None
