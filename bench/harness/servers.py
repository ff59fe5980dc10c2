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
    def __init__(self, build_dir, peers_bin, tmpdir, pinned):
        self.build_dir = build_dir
        self.tmpdir = tmpdir
        self.pinned = pinned
        self.skipped = []  # (what, why)
        b = os.path.join(build_dir, "bin")
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

    def nginx_http_conf(self, port, tag):
        d = os.path.join(self.tmpdir, tag)
        os.makedirs(d, exist_ok=True)
        conf = os.path.join(d, "nginx.conf")
        with open(conf, "w") as f:
            f.write(f"""# plaintext responder for ringpoll's bench harness (one worker)
worker_processes 1;
daemon off;
master_process on;
pid {d}/nginx.pid;
error_log {d}/error.log warn;
worker_rlimit_nofile 16384;
events {{ worker_connections 8192; }}
http {{
  access_log off;
  server_tokens off;
  keepalive_requests 1000000000;
  client_body_temp_path {d}/body;
  proxy_temp_path {d}/proxy;
  fastcgi_temp_path {d}/fastcgi;
  uwsgi_temp_path {d}/uwsgi;
  scgi_temp_path {d}/scgi;
  server {{
    listen 127.0.0.1:{port} backlog=4096;
    location / {{ default_type text/plain; return 200 "Hello, World!"; }}
  }}
}}
""")
        return [self.nginx, "-p", d + "/", "-e", f"{d}/error.log", "-c", conf]

    def nginx_stream_conf(self, port, backend_port, tag):
        d = os.path.join(self.tmpdir, tag)
        os.makedirs(d, exist_ok=True)
        conf = os.path.join(d, "nginx.conf")
        with open(conf, "w") as f:
            f.write(f"""# L4 proxy for ringpoll's bench harness (one worker)
load_module {NGINX_STREAM_MODULE};
worker_processes 1;
daemon off;
master_process on;
pid {d}/nginx.pid;
error_log {d}/error.log warn;
worker_rlimit_nofile 16384;
events {{ worker_connections 8192; }}
stream {{
  server {{
    listen 127.0.0.1:{port} backlog=4096;
    proxy_pass 127.0.0.1:{backend_port};
    proxy_timeout 120s;
  }}
}}
""")
        return [self.nginx, "-p", d + "/", "-e", f"{d}/error.log", "-c", conf]

    def haproxy_conf(self, port, backend_port, tag):
        d = os.path.join(self.tmpdir, tag)
        os.makedirs(d, exist_ok=True)
        conf = os.path.join(d, "haproxy.cfg")
        with open(conf, "w") as f:
            f.write(f"""# L4 proxy for ringpoll's bench harness (one thread)
global
  nbthread 1
  maxconn 4000
defaults
  mode tcp
  timeout connect 5s
  timeout client 120s
  timeout server 120s
listen fwd
  bind 127.0.0.1:{port}
  server b1 127.0.0.1:{backend_port}
""")
        return [self.haproxy, "-db", "-f", conf]


def _exe(path):
    return path if path and os.path.isfile(path) and os.access(path, os.X_OK) else None
