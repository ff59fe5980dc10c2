#!/usr/bin/env python3
"""ringpoll-proxy as a Windows program under Wine, in front of Linux upstreams (issue 25).

    e2e_proxy.py WINE ringpoll-proxy.exe

The upstreams are this script's own sockets (Wine's sockets are the host's): a TCP echo
that answers the client's end of stream with the SHA-256 of what it received, two TCP
greeters ("A", "B") and a UDP echo. The proxy runs a config file with a TCP listener to
the echo, one to a greeter, a UDP listener to the UDP echo and the admin page. Checked:
  - config errors exit 2 naming the file, the line and the key: an unknown key, and what
    Windows lacks (proxy.splice = "on", a name among a pool's upstreams, TLS to a pool);
  - payload integrity both ways and half-close: 7 clients at once (one over IPv6, to a
    listener on [::1]) send 1 MiB of random bytes each and shut their sending side; each gets its bytes back, then the echo's
    digest of what it received (sent after the client's FIN), then the end of stream;
  - the idle deadline: a client that sends nothing is closed after timeouts.idle_ms
    (3000 ms), not before, while the others are served;
  - UDP: two clients' datagrams (1..1400 bytes) come back intact through their flows;
  - an HTTP listener: a GET and a 256 KiB POST on one keep-alive connection to a Python
    HTTP upstream (path, Host and the body's digest as the upstream saw them);
  - the admin page: /healthz answers "ok", /metrics counts the connections and datagrams;
  - reload by the named event: `ringpoll-proxy --reload PID` makes it re-read the file:
    the greeter pool's upstream changes from A to B for new connections; a file with an
    error is refused and the previous config keeps serving; --reload of a pid with no
    proxy exits 1 saying so;
  - graceful stop: Ctrl-C (Wine turns SIGINT into CTRL_C_EVENT) ends it with exit 0.
Every wait is bounded; any failure exits 1 with the reason.
"""
import hashlib
import http.server
import os
import random
import re
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from e2e_echo import DEADLINE_S, fail, first_line, read_to_end, send_and_read  # noqa: E402
from e2e_http import read_response  # noqa: E402

IDLE_MS = 3000  # wide: a transfer under a loaded Wine must never pause this long


# ---- the Linux upstreams ----

def serve_tcp(handler):
    """A TCP listener on 127.0.0.1:0 running handler(conn) in a thread per connection."""
    ls = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    ls.bind(("127.0.0.1", 0))
    ls.listen(64)

    def loop():
        while True:
            try:
                c, _ = ls.accept()
            except OSError:
                return
            c.settimeout(DEADLINE_S)
            threading.Thread(target=handler, args=(c,), daemon=True).start()

    threading.Thread(target=loop, daemon=True).start()
    return ls.getsockname()[1]


def echo_then_digest(c):
    """Echoes until the client's end of stream, then sends the SHA-256 of it all and closes:
    bytes the upstream sends after the FIN must reach the client (half-close)."""
    h = hashlib.sha256()
    try:
        while True:
            b = c.recv(65536)
            if not b:
                break
            h.update(b)
            c.sendall(b)
        c.sendall(h.digest())
    except OSError:
        pass
    c.close()


def greeter(letter):
    def handler(c):
        try:
            c.sendall(letter.encode() + b"\n")
        except OSError:
            pass
        c.close()
    return handler


class WebUpstream(http.server.BaseHTTPRequestHandler):
    """The HTTP upstream: GET answers with the path and Host it saw, POST with the SHA-256
    of the body it received."""
    protocol_version = "HTTP/1.1"

    def reply(self, body):
        self.send_response(200)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self):
        self.reply(f"upstream saw {self.path} host {self.headers['Host']}".encode())

    def do_POST(self):
        n = int(self.headers.get("Content-Length", "0"))
        self.reply(hashlib.sha256(self.rfile.read(n)).hexdigest().encode())

    def log_message(self, *args):
        pass


def serve_http():
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), WebUpstream)
    srv.daemon_threads = True
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    return srv.server_address[1]


def serve_udp_echo():
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("127.0.0.1", 0))

    def loop():
        while True:
            try:
                b, peer = s.recvfrom(65536)
                s.sendto(b, peer)
            except OSError:
                return

    threading.Thread(target=loop, daemon=True).start()
    return s.getsockname()[1]


# ---- the proxy ----

LISTENERS = (  # name, address, pool, protocol
    ("echo", "127.0.0.1:0", "echo", "tcp"),
    ("echo6", "[::1]:0", "echo", "tcp"),
    ("greet", "127.0.0.1:0", "greet", "tcp"),
    ("dgram", "127.0.0.1:0", "dgram", "udp"),
    ("web", "127.0.0.1:0", "web", "http"),
)


def config_text(echo, greet, udp, web, extra=""):
    text = f"""[engine]
shards = 2

[timeouts]
idle_ms = {IDLE_MS}
drain_ms = 3000
{extra}"""
    for name, listen, pool, protocol in LISTENERS:
        text += (f'\n[[proxy.listener]]\nname = "{name}"\nlisten = "{listen}"\npool = "{pool}"\n'
                 f'protocol = "{protocol}"\n')
    for name, port in (("echo", echo), ("greet", greet), ("dgram", udp), ("web", web)):
        text += f'\n[[proxy.pool]]\nname = "{name}"\nupstreams = ["127.0.0.1:{port}"]\n'
    return text


def run_wine(wine, exe, args, timeout=120):
    env = dict(os.environ, WINEDEBUG="-all")
    try:
        return subprocess.run([wine, exe] + args, stdin=subprocess.DEVNULL, capture_output=True,
                              timeout=timeout, env=env)
    except subprocess.TimeoutExpired:
        fail(f"{args}: did not exit within {timeout} s")


def config_refused(wine, exe, path, text, line, key, says):
    with open(path, "w") as f:
        f.write(text)
    p = run_wine(wine, exe, ["--config", path])
    err = p.stderr.decode(errors="replace")
    want = f"{os.path.basename(path)}:{line}: {key}"
    if p.returncode != 2 or want not in err or says not in err:
        fail(f"config {key}: exit {p.returncode} (want 2), stderr must say {want!r} and "
             f"{says!r}:\n{err}")
    print(f"e2e: ok: refused: {err.strip().splitlines()[-1]}", flush=True)


class Stderr:
    """The proxy's stderr, collected by a thread, so a test can wait for a line."""

    def __init__(self, proc):
        self.text = ""
        self.lock = threading.Lock()
        self.t = threading.Thread(target=self._read, args=(proc,), daemon=True)
        self.t.start()

    def _read(self, proc):
        for raw in iter(proc.stderr.readline, b""):
            with self.lock:
                self.text += raw.decode(errors="replace")

    def wait_for(self, what, proc, timeout=DEADLINE_S):
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            with self.lock:
                if what in self.text:
                    return
            time.sleep(0.05)
        fail(f"the proxy's stderr did not say {what!r} within {timeout} s:\n{self.text}", proc)


# ---- the checks ----

def echo_client(port, size, seed, results, idx, host="127.0.0.1"):
    data = random.Random(seed).randbytes(size)
    try:
        got = send_and_read(port, data, host)
    except OSError as e:
        results[idx] = f"client {idx}: {e}"
        return
    want = data + hashlib.sha256(data).digest()
    if got == want:
        results[idx] = None
    elif got[:len(data)] != data:
        results[idx] = f"client {idx}: sent {len(data)} bytes, the echo differs ({len(got)} back)"
    else:
        results[idx] = (f"client {idx}: echo intact, but the digest after the half-close is "
                        f"{got[len(data):].hex() or 'missing'}")


def greeting(port):
    s = socket.create_connection(("127.0.0.1", port), timeout=DEADLINE_S)
    s.settimeout(DEADLINE_S)
    got = read_to_end(s)
    s.close()
    return got


def udp_round(port, seed):
    rnd = random.Random(seed)
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.settimeout(5)
    sent = 0
    for i in range(20):
        payload = i.to_bytes(2, "big") + rnd.randbytes(rnd.randint(1, 1398))
        for _ in range(3):  # a datagram lost on loopback is retried, never counted as passed
            s.sendto(payload, ("127.0.0.1", port))
            sent += 1
            try:
                b, _ = s.recvfrom(65536)
            except socket.timeout:
                continue
            if b != payload:
                return f"flow {seed}: datagram {i}: {len(payload)} bytes sent, {len(b)} back, differ", 0
            break
        else:
            return f"flow {seed}: datagram {i} never came back", 0
    s.close()
    return None, sent


def http_get(port, path):
    s = socket.create_connection(("127.0.0.1", port), timeout=DEADLINE_S)
    s.settimeout(DEADLINE_S)
    s.sendall(f"GET {path} HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n".encode())
    got = read_to_end(s)
    s.close()
    head, _, body = got.partition(b"\r\n\r\n")
    return head.decode(errors="replace"), body.decode(errors="replace")


def metric(text, name):
    m = re.search(r"^" + re.escape(name) + r" (\d+)$", text, re.M)
    return int(m.group(1)) if m else None


def main():
    wine, exe = sys.argv[1], sys.argv[2]
    echo = serve_tcp(echo_then_digest)
    greet_a = serve_tcp(greeter("A"))
    greet_b = serve_tcp(greeter("B"))
    udp = serve_udp_echo()
    web = serve_http()
    tmp = tempfile.mkdtemp(prefix="ringpoll-e2e-proxy-")
    cfg = os.path.join(tmp, "proxy.toml")
    base = config_text(echo, greet_a, udp, web)

    # Config errors: file, line, key; what Windows lacks is refused the same way.
    bad = os.path.join(tmp, "bad.toml")

    def line_of(text, needle):
        return text.splitlines().index(needle) + 1

    unknown = base.replace("drain_ms = 3000", "drain_msx = 3000")
    config_refused(wine, exe, bad, unknown, line_of(unknown, "drain_msx = 3000"),
                   "timeouts.drain_msx", "unknown key")
    splice = config_text(echo, greet_a, udp, web, extra='[proxy]\nsplice = "on"\n')
    config_refused(wine, exe, bad, splice, line_of(splice, 'splice = "on"'), "proxy.splice",
                   "splice(2) is Linux only")
    named = base.replace(f'upstreams = ["127.0.0.1:{greet_a}"]',
                         'upstreams = ["127.0.0.1:1", "greeter.example:80"]')
    config_refused(wine, exe, bad, named,
                   line_of(named, 'upstreams = ["127.0.0.1:1", "greeter.example:80"]'),
                   "proxy.pool[1].upstreams", "c-ares")
    tls = base.replace('name = "echo"\nupstreams', 'name = "echo"\ntls = true\nupstreams')
    config_refused(wine, exe, bad, tls, line_of(tls, "tls = true"), "proxy.pool[0].tls",
                   "OpenSSL")

    with open(cfg, "w") as f:
        f.write(base)
    env = dict(os.environ, WINEDEBUG="-all")
    proc = subprocess.Popen([wine, exe, "--config", cfg, "--admin", "127.0.0.1:0"],
                            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, env=env)
    start_line = first_line(proc)
    print(f"e2e: {start_line}", flush=True)
    stderr = Stderr(proc)
    found = {}
    for name, pattern in (("echo", r"127\.0\.0\.1:(\d+) \(echo -> pool echo"),
                          ("echo6", r"\[::1\]:(\d+) \(echo6 -> pool echo"),
                          ("greet", r"127\.0\.0\.1:(\d+) \(greet -> pool greet"),
                          ("dgram", r"127\.0\.0\.1:(\d+) \(dgram udp -> pool dgram"),
                          ("web", r"127\.0\.0\.1:(\d+) \(web http"),
                          ("pid", r", pid (\d+)"),
                          ("admin", r"admin on 127\.0\.0\.1:(\d+)")):
        m = re.search(pattern, start_line)
        if not m:
            fail(f"start line {start_line!r}: no {name} ({pattern})", proc)
        found[name] = int(m.group(1))
    if "backend iocp, 2 shards" not in start_line:
        fail(f"start line {start_line!r}: want backend iocp, 2 shards", proc)
    echo_port, greet_port, dgram_port = found["echo"], found["greet"], found["dgram"]
    pid, admin_port = found["pid"], found["admin"]

    # Payload integrity both ways and half-close, six clients at once; beside them a
    # client that sends nothing is closed by the idle deadline.
    idle_out = {}

    def idle_client():
        c = socket.create_connection(("127.0.0.1", echo_port), timeout=DEADLINE_S)
        c.settimeout(DEADLINE_S)
        t0 = time.monotonic()
        try:
            idle_out["rest"] = c.recv(64)
        except OSError:
            idle_out["rest"] = b""
        idle_out["took"] = time.monotonic() - t0
        c.close()

    idle = threading.Thread(target=idle_client)
    idle.start()
    results = [None] * 7
    ts = [threading.Thread(target=echo_client, args=(echo_port, 1 << 20, i, results, i))
          for i in range(6)]
    # One more over IPv6 (listener echo6 on [::1]) to the same IPv4 upstream.
    ts.append(threading.Thread(target=echo_client,
                               args=(found["echo6"], 1 << 20, 6, results, 6, "::1")))
    for t in ts:
        t.start()
    for t in ts:
        t.join(DEADLINE_S * 2)
    if any(t.is_alive() for t in ts):
        fail("an echo client did not finish within 60 s", proc)
    for r in results:
        if r:
            fail(r, proc)
    print("e2e: ok: 7 x 1 MiB (one over IPv6) through the proxy intact both ways; the digest "
          "sent after each client's FIN arrived (half-close)", flush=True)
    idle.join(DEADLINE_S + 5)
    if "took" not in idle_out:
        fail("the idle client saw no close within 30 s", proc)
    rest, took = idle_out["rest"], idle_out["took"]
    if rest:
        fail(f"the idle client got {rest!r} instead of a close", proc)
    if took < IDLE_MS / 1000 * 0.9 or took > DEADLINE_S:
        fail(f"the idle client was closed after {took:.2f} s (timeouts.idle_ms = {IDLE_MS})",
             proc)
    print(f"e2e: ok: an idle client closed by the idle deadline after {took:.2f} s", flush=True)

    # UDP: two clients, two flows.
    udp_sent = 0
    for seed in (1, 2):
        err, n = udp_round(dgram_port, seed)
        if err:
            fail(err, proc)
        udp_sent += n
    print("e2e: ok: UDP: 2 flows x 20 datagrams echoed intact", flush=True)

    # The HTTP mode: two requests on one keep-alive connection, a 256 KiB body intact.
    c = socket.create_connection(("127.0.0.1", found["web"]), timeout=DEADLINE_S)
    c.settimeout(DEADLINE_S)
    f = c.makefile("rb")
    c.sendall(b"GET /hello?x=1 HTTP/1.1\r\nHost: web.test\r\n\r\n")
    st, _, body = read_response(f)
    if st != 200 or body != b"upstream saw /hello?x=1 host web.test":
        fail(f"HTTP GET through the proxy: {st} {body!r}", proc)
    post = random.Random(9).randbytes(256 << 10)
    c.sendall(b"POST /sum HTTP/1.1\r\nHost: web.test\r\nContent-Length: " +
              str(len(post)).encode() + b"\r\n\r\n" + post)
    st, _, body = read_response(f)
    if st != 200 or body != hashlib.sha256(post).hexdigest().encode():
        fail(f"HTTP POST through the proxy: {st}, the upstream's digest {body!r} differs", proc)
    f.close()
    c.close()
    print("e2e: ok: HTTP listener: GET and a 256 KiB POST on one keep-alive connection",
          flush=True)

    # The admin page.
    head, body = http_get(admin_port, "/healthz")
    if " 200 " not in head.splitlines()[0] or body != "ok\n":
        fail(f"/healthz: {head!r} {body!r}", proc)
    head, body = http_get(admin_port, "/metrics")
    conns = metric(body, "ringpoll_proxy_connections_total")
    up_bytes = metric(body, 'ringpoll_proxy_bytes_total{direction="client_to_upstream"}')
    dgrams = metric(body, 'ringpoll_proxy_udp_datagrams_total{direction="client_to_upstream"}')
    if " 200 " not in head.splitlines()[0] or conns is None or conns < 8:
        fail(f"/metrics: {head.splitlines()[:1]}, connections_total {conns} (want >= 8)", proc)
    # Each datagram came back, so each reached the proxy; a retried one may count twice.
    if up_bytes is None or up_bytes < 7 << 20 or dgrams is None or not 40 <= dgrams <= udp_sent:
        fail(f"/metrics: client_to_upstream bytes {up_bytes} (want >= {7 << 20}), UDP "
             f"datagrams {dgrams} (want 40..{udp_sent})", proc)
    print(f"e2e: ok: admin page: /healthz ok; /metrics: {conns} connections, {up_bytes} bytes "
          f"up, {dgrams} datagrams up", flush=True)

    # Reload by the named event.
    if greeting(greet_port) != b"A\n":
        fail("the greeter pool did not answer A before the reload", proc)
    with open(cfg, "w") as f:
        f.write(config_text(echo, greet_b, udp, web))
    p = run_wine(wine, exe, ["--reload", str(pid)])
    if p.returncode != 0 or f"asked process {pid} to reload" not in p.stdout.decode():
        fail(f"--reload {pid}: exit {p.returncode}: {p.stdout!r} {p.stderr!r}", proc)
    stderr.wait_for("reloaded: new connections use the new config", proc)
    got = greeting(greet_port)
    if got != b"B\n":
        fail(f"after the reload the greeter pool answered {got!r}, not B", proc)
    with open(cfg, "w") as f:
        f.write(config_text(echo, greet_a, udp, web).replace("idle_ms", "idle_msx"))
    p = run_wine(wine, exe, ["--reload", str(pid)])
    if p.returncode != 0:
        fail(f"--reload {pid} (bad file): exit {p.returncode}", proc)
    stderr.wait_for("reload refused; still running the previous config", proc)
    got = greeting(greet_port)
    if got != b"B\n":
        fail(f"after a refused reload the greeter pool answered {got!r}, not B", proc)
    p = run_wine(wine, exe, ["--reload", "4000000"])
    perr = p.stderr.decode(errors="replace")
    if p.returncode != 1 or "waits for a reload" not in perr:
        fail(f"--reload of no proxy: exit {p.returncode} (want 1): {perr}", proc)
    print("e2e: ok: --reload PID: the greeter pool moved from A to B; a bad file was refused "
          "and B kept serving; --reload of no proxy exits 1", flush=True)

    # Graceful stop.
    proc.send_signal(signal.SIGINT)  # Wine's CTRL_C_EVENT
    try:
        rc = proc.wait(timeout=DEADLINE_S)
    except subprocess.TimeoutExpired:
        fail("no exit within 30 s of Ctrl-C", proc)
    stderr.t.join(10)
    if rc != 0 or "Ctrl-C: stopping gracefully" not in stderr.text:
        fail(f"Ctrl-C: exit {rc}; stderr:\n{stderr.text}")
    print("e2e: ok: Ctrl-C stopped it gracefully, exit 0", flush=True)
    print("e2e: PASS", flush=True)


if __name__ == "__main__":
    main()
