#!/usr/bin/env python3
"""System calls, epoll wake-ups and context switches per request of an L4 proxy: counts that
a busy machine does not change, for comparing ringpoll-proxy's epoll relay with haproxy's
and nginx stream's (issue 23) where requests/s and CPU time cannot be trusted.

For each candidate: an echo backend (ringpoll-serve --mode echo on epoll) and the proxy,
both on CPU 0, ringpoll-load (closed loop, no warm-up) through the proxy on CPU 1 for
--seconds. Over the whole client run, `perf stat` counts the proxy's system calls by name
(the syscalls:sys_enter_* tracepoints) and `perf record` its epoll_wait returns (events
per wake-up); /proc/PID/status gives its context switches. Each count is divided by the
requests the client had answered.

  python3 bench/proxy/syscall_counts.py [--build build] [--conns 50] [--size 64]
      [--seconds 3] [--proxy-bin LABEL=PATH ...]

--proxy-bin adds a ringpoll-proxy binary under a label (e.g. before=/tmp/old/ringpoll-proxy)
beside the build's own (label "ringpoll-proxy epoll"). Needs perf with tracepoint access
(root). Everything it starts is stopped by PID.
"""
import argparse
import os
import re
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, os.path.join(ROOT, "bench", "harness"))

import clients  # noqa: E402
from procs import (Registry, StartError, children_of, free_port,  # noqa: E402
                   install_signal_handlers, run_guarded)
from servers import PIN_CPU0, Tools  # noqa: E402

EPOLL_WAITS = ("epoll_wait", "epoll_pwait", "epoll_pwait2")


def ctx_switches(pids):
    n = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/status") as f:
                for line in f:
                    if line.startswith(("voluntary_ctxt_switches", "nonvoluntary_ctxt_switches")):
                        n += int(line.split()[1])
        except OSError:
            pass
    return n


def perf_counts(stat_path):
    """perf stat -x, output -> {syscall name: count}."""
    out = {}
    with open(stat_path, errors="replace") as f:
        for line in f:
            parts = line.strip().split(",")
            if len(parts) < 3 or not parts[0].strip().isdigit():
                continue
            m = re.search(r"syscalls:sys_enter_(\w+)", line)
            if m:
                out[m.group(1)] = out.get(m.group(1), 0) + int(parts[0])
    return out


def wait_events(data_path):
    """perf record's epoll_wait exits -> (calls, events returned)."""
    text = subprocess.run(["perf", "script", "-i", data_path], capture_output=True,
                          text=True, errors="replace").stdout
    calls = events = 0
    for m in re.finditer(r"sys_exit_epoll_\w+:\s+0x([0-9a-f]+)", text):
        v = int(m.group(1), 16)
        if v < 1 << 31:  # a negative return (EINTR) is no wake-up with events
            calls += 1
            events += v
    return calls, events


def measure(a, reg, t, name, argv_fn, tmp):
    bport = free_port()
    bk = reg.start("backend", t.serve_echo_argv("epoll", bport)[0], cpu=0,
                   log_path=os.path.join(tmp, f"bk-{bport}.log"))
    started = [bk]
    try:
        reg.wait_listening(bk, bport)
        port = free_port()
        px = reg.start(name, argv_fn(port, bport), cpu=0,
                       log_path=os.path.join(tmp, f"px-{port}.log"))
        started.append(px)
        reg.wait_listening(px, port)
        time.sleep(0.3)
        pids = [px.pid] + children_of(px.pid)  # nginx: the worker does the relaying
        plist = ",".join(map(str, pids))
        stat_path = os.path.join(tmp, f"stat-{port}.txt")
        data_path = os.path.join(tmp, f"perf-{port}.data")
        span = str(a.seconds + 2)
        stat = subprocess.Popen(["perf", "stat", "-x,", "-o", stat_path, "-e",
                                 "syscalls:sys_enter_*", "-p", plist, "--", "sleep", span],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        rec = subprocess.Popen(["perf", "record", "-q", "-o", data_path, "-e",
                                ",".join(f"syscalls:sys_exit_{w}" for w in EPOLL_WAITS),
                                "-p", plist, "--", "sleep", span],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(0.5)
        cs0 = ctx_switches(pids)
        jpath = os.path.join(tmp, f"load-{port}.json")
        client = reg.start("ringpoll-load", clients.load_argv(
            t.load, "echo", port, a.conns, a.size, a.seconds, 0, jpath), cpu=1,
            log_path=os.path.join(tmp, f"load-{port}.out"))
        reg.wait(client, timeout=a.seconds + 30)
        cs1 = ctx_switches(pids)
        stat.wait(timeout=a.seconds + 30)
        rec.wait(timeout=a.seconds + 30)
        res = clients.parse_load_json(jpath) or {}
        reqs = res.get("requests") or 0
        if not reqs:
            return {"name": name, "error": "no requests answered"}
        counts = perf_counts(stat_path)
        calls, events = wait_events(data_path)
        return {"name": name, "requests": reqs, "counts": counts,
                "per_req": {k: v / reqs for k, v in counts.items() if v},
                "total_per_req": sum(counts.values()) / reqs,
                "waits_per_req": calls / reqs, "events_per_wait": events / calls if calls else 0,
                "ctx_per_req": (cs1 - cs0) / reqs}
    except StartError as e:
        return {"name": name, "error": str(e)}
    finally:
        for p in reversed(started):
            reg.stop(p)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--build", default=os.path.join(ROOT, "build"))
    ap.add_argument("--conns", type=int, default=50)
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--seconds", type=float, default=3.0)
    ap.add_argument("--proxy-bin", action="append", default=[], metavar="LABEL=PATH")
    ap.add_argument("--only", nargs="+", help="candidates whose name holds one of these words")
    a = ap.parse_args()
    tmp = tempfile.mkdtemp(prefix="ringpoll-syscalls.")
    t = Tools(a.build, None, tmp, True)
    if not t.load or not t.serve:
        print(f"needs {a.build}/bin/ringpoll-load and ringpoll-serve", file=sys.stderr)
        return 1

    def rp(binary):
        return lambda p, b: [binary, "--listen", f"127.0.0.1:{p}", "--upstream",
                             f"127.0.0.1:{b}", "--set", "engine.shards=1",
                             "--set", "engine.backend=epoll"] + PIN_CPU0
    cands = []
    for spec in a.proxy_bin:
        label, _, path = spec.partition("=")
        cands.append((f"ringpoll-proxy epoll ({label})", rp(path)))
    if t.proxy:
        cands.append(("ringpoll-proxy epoll", rp(t.proxy)))
    if t.haproxy:
        cands.append(("haproxy (1 thread)", lambda p, b: t.haproxy_conf(p, b, f"h-{p}")))
    if t.nginx_stream:
        cands.append(("nginx stream (1 worker)",
                      lambda p, b: t.nginx_stream_conf(p, b, f"n-{p}")))
    if a.only:
        cands = [c for c in cands if any(w in c[0] for w in a.only)]
    install_signal_handlers()
    reg = Registry()
    return run_guarded("syscall_counts", lambda: report(a, reg, t, cands, tmp), reg, tmp)


def report(a, reg, t, cands, tmp):
    rows = []
    for name, fn in cands:
        print(f"== {name}", flush=True)
        rows.append(measure(a, reg, t, name, fn, tmp))
    print(f"\n{a.conns} connections × {a.size} B, {a.seconds:g} s, per request:")
    for r in rows:
        if r.get("error"):
            print(f"  {r['name']}: FAILED: {r['error']}")
            continue
        top = sorted(r["per_req"].items(), key=lambda kv: -kv[1])[:8]
        print(f"  {r['name']:<34} {r['requests']:>8} req  syscalls {r['total_per_req']:.2f}  "
              f"epoll waits {r['waits_per_req']:.3f} ({r['events_per_wait']:.1f} events each)  "
              f"ctx switches {r['ctx_per_req']:.3f}")
        print("      " + "  ".join(f"{k} {v:.3f}" for k, v in top))
    return 0


if __name__ == "__main__":
    sys.exit(main())
