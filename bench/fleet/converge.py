#!/usr/bin/env python3
"""A fleet's DNS convergence and upstream death side by side (issue 21), for the lead.

  sudo python3 bench/fleet/converge.py --bin build/bin [--changes 20] [--ttl 1]
          [--requests 400] [--proxies ringpoll,haproxy,nginx]

Builds hosts out of network namespaces (as tests/fleet/fleet_netns_test.cc does): a DNS
host running dnsmasq (app.fleet.test from a hosts file, TTL --ttl, SIGHUP to reload),
four upstream hosts (a tiny TCP server each that answers every chunk with "uN:" and the
chunk), one proxy host and a client host, on a bridge in a switch namespace. Then, for
each proxy in turn, in the proxy host:
  ringpoll  ringpoll-proxy, pool upstreams = ["app.fleet.test:8080"], resolvers the DNS
            host, resolve_min/max_ttl_s = --ttl, fail_threshold 2, connect 300 ms
  haproxy   a `resolvers` section (hold valid --ttl) and `server-template` on the name;
            passive checks: `observe layer4 error-limit 2 on-error mark-down`, redispatch
  nginx     Debian's nginx 1.22 has no `resolve` on upstream servers (that came to the
            open-source build in 1.27.3): the stream proxy_pass takes the name through a
            variable, which nginx resolves with `resolver ... valid=--ttl`; its passive
            equivalent (max_fails=2 fail_timeout=10s, proxy_next_upstream) needs a static
            upstream block, so the death test runs on fixed addresses
and measures
  - convergence: --changes record changes alternately removing and re-adding u4 (the
    hosts file rewritten, dnsmasq SIGHUPed); the time from the change until probes (a new
    connection every 10 ms) see it: the first answer from u4 after an add, the last one
    after a removal (watched for 3 x TTL + 2 s). p50 and p99 over the changes;
  - death: --requests requests, one new connection each every 10 ms, while u2's link is
    cut after the first quarter: the requests that failed, and those that took longer
    than 250 ms (a connect to the dead host that timed out before a retry elsewhere).
Prints each change's time and a table; --json FILE keeps every raw figure. These are
times and counts, not CPU figures; nothing here asserts.
Needs root, iproute2, dnsmasq; haproxy and nginx (stream module) for their rows.
"""
import argparse
import ctypes
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time

P = "rfb%d" % os.getpid()
DNS, PROXY, CLIENT = "10.99.0.53", "10.99.0.11", "10.99.0.100"
UPS = {i: "10.99.0.%d" % (20 + i) for i in range(1, 5)}
PORT, UP_PORT = 7000, 8080
libc = ctypes.CDLL("libc.so.6", use_errno=True)
CLONE_NEWNET = 0x40000000

UPSTREAM_SERVER = r"""
import socket, sys, threading
tag, ip = sys.argv[1], sys.argv[2]
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind((ip, %d)); s.listen(512)
def serve(c):
    with c:
        while True:
            d = c.recv(512)
            if not d: return
            c.sendall(tag.encode() + b":" + d)
while True:
    c, _ = s.accept()
    threading.Thread(target=serve, args=(c,), daemon=True).start()
""" % UP_PORT


def sh(cmd, check=True):
    r = subprocess.run(cmd, shell=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    if check and r.returncode != 0:
        raise RuntimeError("failed: " + cmd)
    return r.returncode == 0


def ns(h):
    return P + h


class Topology:
    def __init__(self, tmp):
        self.tmp, self.made, self.procs = tmp, [], []

    def build(self):
        sh("ip netns add " + ns("sw"))
        self.made.append(ns("sw"))
        sh("ip -n %s link add br0 type bridge && ip -n %s link set br0 up" % (ns("sw"), ns("sw")))
        hosts = [("dns", DNS), ("p", PROXY), ("c", CLIENT)] + [("u%d" % i, UPS[i]) for i in UPS]
        for h, ip in hosts:
            sh("ip netns add " + ns(h))
            self.made.append(ns(h))
            sh("ip link add s%sx%s netns %s type veth peer name eth0 netns %s"
               % (h, P, ns("sw"), ns(h)))
            sh("ip -n %s link set s%sx%s name s%s" % (ns("sw"), h, P, h))
            sh("ip -n %s link set s%s master br0 up" % (ns("sw"), h))
            sh("ip -n %s addr add %s/16 dev eth0 && ip -n %s link set eth0 up && "
               "ip -n %s link set lo up" % (ns(h), ip, ns(h), ns(h)))
        server = os.path.join(self.tmp, "upstream.py")
        with open(server, "w") as f:
            f.write(UPSTREAM_SERVER)
        for i, ip in UPS.items():
            self.spawn("u%d" % i, [sys.executable, server, "u%d" % i, ip])

    def spawn(self, host, argv, **kw):
        p = subprocess.Popen(["ip", "netns", "exec", ns(host)] + argv,
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, **kw)
        self.procs.append(p)
        return p

    def link(self, host, up):
        sh("ip -n %s link set s%s %s" % (ns("sw"), host, "up" if up else "down"))

    def teardown(self):
        for p in self.procs:
            if p.poll() is None:
                p.kill()
                p.wait()
        for n in reversed(self.made):
            sh("ip netns del " + n, check=False)


class Dns:
    def __init__(self, topo):
        self.topo, self.hosts = topo, os.path.join(topo.tmp, "hosts")

    def write(self, ups):
        with open(self.hosts, "w") as f:
            for i in ups:
                f.write("%s app.fleet.test\n" % UPS[i])

    def start(self, ttl):
        self.p = self.topo.spawn("dns", [
            "dnsmasq", "-k", "-C", "/dev/null", "-u", "root", "-g", "root", "--pid-file=",
            "--no-resolv", "--no-hosts", "--addn-hosts=" + self.hosts, "--local=/fleet.test/",
            "--local-ttl=%d" % ttl, "--listen-address=" + DNS, "--bind-interfaces"])
        time.sleep(0.5)

    def reload(self):
        self.p.send_signal(signal.SIGHUP)


def in_client(fn):
    """Runs fn on a thread joined to the client's namespace; returns its result."""
    out = {}

    def run():
        fd = os.open("/var/run/netns/" + ns("c"), os.O_RDONLY)
        if libc.setns(fd, CLONE_NEWNET) != 0:
            raise OSError(ctypes.get_errno(), "setns")
        os.close(fd)
        out["r"] = fn()
    t = threading.Thread(target=run)
    t.start()
    t.join()
    return out.get("r")


def probe(port=PORT):
    """One request on a new connection: the upstream's tag, or None."""
    return probe_timed(port)[0]


def probe_timed(port=PORT):
    """probe() and how long it took (s)."""
    t0 = time.monotonic()
    tag = probe_once(port)
    return tag, time.monotonic() - t0


def probe_once(port):
    try:
        with socket.create_connection((PROXY, port), timeout=2) as s:
            s.sendall(b"ping\n")
            d = s.recv(64).decode()
            return d.split(":")[0] if d.endswith(":ping\n") else None
    except OSError:
        return None


def converge(dns, changes, ttl, port):
    times = []

    def run():
        for k in range(changes):
            add = k % 2 == 1  # remove u4 first, then add it back
            dns.write([1, 2, 3, 4] if add else [1, 2, 3])
            t0 = time.monotonic()
            dns.reload()
            last_u4, first_u4 = None, None
            end = t0 + 3 * ttl + 2
            while time.monotonic() < end:
                tag = probe(port)
                now = time.monotonic()
                if tag == "u4":
                    last_u4 = now
                    if first_u4 is None:
                        first_u4 = now
                        if add:
                            break
                time.sleep(0.01)
            if add:
                times.append(first_u4 - t0 if first_u4 else float("inf"))
            else:
                times.append((last_u4 - t0) if last_u4 else 0.0)
    in_client(run)
    return times


def death(topo, requests, port):
    """(failed, slow, the latencies in ms) of --requests probes around u2's link cut."""
    def run():
        failed, slow, lat = 0, 0, []
        for i in range(requests):
            if i == requests // 4:
                topo.link("u2", False)
            tag, took = probe_timed(port)
            failed += tag is None
            slow += took > 0.25
            lat.append(round(took * 1e3, 2))
            time.sleep(0.01)
        return failed, slow, lat
    try:
        return in_client(run)
    finally:
        topo.link("u2", True)


def versions():
    """What ran: the comparison's programs as they name themselves."""
    out = {}
    for name, cmd in (("nginx", "nginx -v"), ("haproxy", "haproxy -v"),
                      ("dnsmasq", "dnsmasq --version")):
        r = subprocess.run(cmd, shell=True, capture_output=True, text=True)
        text = (r.stdout + r.stderr).strip()
        out[name] = text.splitlines()[0] if text else "absent"
    return out


def pct(v, q):
    v = sorted(v)
    return v[min(len(v) - 1, int(q * (len(v) - 1) + 0.5))]


def start_ringpoll(topo, args, tmp):
    conf = os.path.join(tmp, "ringpoll.toml")
    with open(conf, "w") as f:
        f.write('[proxy]\nresolvers = ["%s:53"]\n\n[timeouts]\nconnect_ms = 300\n\n'
                '[[proxy.listener]]\nname = "front"\nlisten = "%s:%d"\npool = "app"\n\n'
                '[[proxy.pool]]\nname = "app"\nupstreams = ["app.fleet.test:%d"]\n'
                'resolve_min_ttl_s = %d\nresolve_max_ttl_s = %d\nfail_threshold = 2\n'
                % (DNS, PROXY, PORT, UP_PORT, args.ttl, args.ttl))
    return topo.spawn("p", [os.path.join(args.bin, "ringpoll-proxy"), "--config", conf,
                            "--set", "engine.shards=1", "--set", "engine.pin=false"])


def start_haproxy(topo, args, tmp):
    conf = os.path.join(tmp, "haproxy.cfg")
    with open(conf, "w") as f:
        f.write("""global
  maxconn 4096
resolvers dns
  nameserver ns1 %s:53
  hold valid %ds
  hold obsolete 0s
  timeout resolve %ds
  timeout retry 1s
  accepted_payload_size 8192
defaults
  mode tcp
  timeout connect 300ms
  timeout client 10s
  timeout server 10s
  retries 2
  option redispatch 1
frontend f
  bind %s:%d
  default_backend b
backend b
  default-server observe layer4 error-limit 2 on-error mark-down check inter 10s
  server-template u 4 app.fleet.test:%d resolvers dns init-addr none resolve-prefer ipv4
""" % (DNS, args.ttl, args.ttl, PROXY, PORT, UP_PORT))
    return topo.spawn("p", ["haproxy", "-db", "-f", conf])


def start_nginx(topo, args, tmp):
    conf = os.path.join(tmp, "nginx.conf")
    mod = "/usr/lib/nginx/modules/ngx_stream_module.so"
    load = "load_module %s;\n" % mod if os.path.exists(mod) else ""
    ups = "".join("    server %s:%d max_fails=2 fail_timeout=10s;\n" % (ip, UP_PORT)
                  for ip in UPS.values())
    with open(conf, "w") as f:
        f.write("""%sdaemon off;
worker_processes 1;
pid %s/nginx.pid;
error_log stderr;
events { worker_connections 4096; }
stream {
  resolver %s valid=%ds ipv6=off;
  map $remote_addr $backend { default app.fleet.test:%d; }
  server { listen %s:%d; proxy_pass $backend; proxy_connect_timeout 300ms; }
  upstream fixed {
%s  }
  server { listen %s:%d; proxy_pass fixed; proxy_connect_timeout 300ms;
           proxy_next_upstream on; proxy_next_upstream_tries 3; }
}
""" % (load, tmp, DNS, args.ttl, UP_PORT, PROXY, PORT, ups, PROXY, PORT + 1))
    return topo.spawn("p", ["nginx", "-c", conf, "-e", "stderr"])


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--bin", default="build/bin")
    ap.add_argument("--changes", type=int, default=20)
    ap.add_argument("--ttl", type=int, default=1)
    ap.add_argument("--requests", type=int, default=400)
    ap.add_argument("--proxies", default="ringpoll,haproxy,nginx")
    ap.add_argument("--json", help="write every raw figure here")
    args = ap.parse_args()
    if os.geteuid() != 0:
        sys.exit("converge.py: needs root (network namespaces)")
    for tool in ("ip", "dnsmasq"):
        if not shutil.which(tool):
            sys.exit("converge.py: needs %s on PATH" % tool)
    starters = {"ringpoll": start_ringpoll, "haproxy": start_haproxy, "nginx": start_nginx}
    rows, raw = [], {}
    for name in args.proxies.split(","):
        if name != "ringpoll" and not shutil.which(name):
            print("converge.py: %s not on PATH, left out" % name)
            continue
        tmp = tempfile.mkdtemp(prefix="ringpoll-converge-")
        topo = Topology(tmp)
        try:
            topo.build()
            dns = Dns(topo)
            dns.write([1, 2, 3, 4])
            dns.start(args.ttl)
            proc = starters[name](topo, args, tmp)
            time.sleep(2 * args.ttl + 1)
            if proc.poll() is not None:
                print("converge.py: %s exited (%d), left out" % (name, proc.returncode))
                continue
            times = converge(dns, args.changes, args.ttl, PORT)
            dns.write([1, 2, 3, 4])
            dns.reload()
            time.sleep(args.ttl + 1)
            failed, slow, lat = death(topo, args.requests, PORT + 1 if name == "nginx" else PORT)
            print("%s: change times (s, removal then addition): %s" % (
                name, " ".join("%.3f" % t for t in times)))
            print("%s: u2 link cut: %d failed, %d over 250 ms of %d" % (
                name, failed, slow, args.requests))
            sys.stdout.flush()
            rows.append((name, pct(times, 0.5), pct(times, 0.99), failed, slow))
            raw[name] = {"change_s": times, "death_failed": failed, "death_slow": slow,
                         "death_latency_ms": lat}
        finally:
            topo.teardown()
            shutil.rmtree(tmp, ignore_errors=True)
    print("\n%-10s %14s %14s %22s %14s" % ("proxy", "converge p50", "converge p99",
                                          "failed (u2 link cut)", "over 250 ms"))
    for name, p50, p99, failed, slow in rows:
        print("%-10s %12.0f ms %12.0f ms %15d / %d %14d" % (name, p50 * 1e3, p99 * 1e3, failed,
                                                           args.requests, slow))
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"ttl_s": args.ttl, "changes": args.changes, "requests": args.requests,
                       "versions": versions(), "proxies": raw}, f, indent=1)
    print("(TTL %d s, %d changes; nginx 1.22: name via a variable, death on fixed addresses)"
          % (args.ttl, args.changes))


if __name__ == "__main__":
    main()
