#!/usr/bin/env python3
"""ringpoll-proxy on epoll (and in io_uring completion mode) beside haproxy and nginx
stream, at issue 23's four points: 50 and 500 connections × 64 B and 4 KiB echo.

For each repetition, each point, each candidate in turn — the order rotated by one place
each repetition (A B C D, B C D A, ...) — a fresh echo backend and a fresh proxy, both
pinned to CPU 0, and ringpoll-load (closed loop) pinned to CPU 1. Over a window inside
the measured seconds it reads:
  - the proxy's process CPU (utime + stime of the proxy and its children, /proc/PID/stat),
  - the server core's whole busy time (CPU 0's line of /proc/stat: the proxy, the backend
    and the kernel's loopback work there, which no process is charged for),
  - requests/s and p99 from the client.
Prints the medians per point with the ratios against haproxy and nginx stream and the
issue's targets (proxy CPU/request ≤ 0.8× both, requests/s ≥ 1.1× both, epoll), and
writes every run to results.json. Meant for a quiet machine; it measures, it does not
judge a noisy one (runs during which other processes burnt more than --max-other % of a
core are marked noisy and retried up to --retries times).

  python3 bench/proxy/epoll_vs_peers.py [--build build] [--reps 3] [--duration 5]
      [--warmup 2] [--points 50x64 500x4096 ...] [--peers ../shared/peers] [--out DIR]

The echo backend is the peers' c-epoll-echo when the peers folder builds (--peers), else
ringpoll-serve --mode echo on epoll. Everything started is stopped by PID on every exit.
"""
import argparse
import importlib.util
import json
import os
import resource
import statistics
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, os.path.join(ROOT, "bench", "harness"))

import clients  # noqa: E402
from bench import rotated  # noqa: E402
from procs import Registry, StartError, free_port, install_signal_handlers, run_guarded  # noqa: E402
from runner import core_per_request, measured_run, per_request  # noqa: E402
from servers import PIN_CPU0, Tools  # noqa: E402

SRV_CPU, CLI_CPU = 0, 1
POINTS = [(50, 64), (50, 4096), (500, 64), (500, 4096)]
PEERS = ("haproxy (1 thread)", "nginx stream (1 worker)")
EPOLL = "ringpoll-proxy epoll"


def candidates(t):
    """(name, argv_fn(port, backend_port)) of every proxy that exists here."""
    out = []
    if t.proxy:
        for name, sets in ((EPOLL, ["engine.backend=epoll"]),
                           ("ringpoll-proxy io_uring completion",
                            ["engine.backend=io_uring", "io_uring.mode=completion"])):
            extra = [x for kv in sets for x in ("--set", kv)]
            out.append((name, lambda p, b, extra=extra: [
                t.proxy, "--listen", f"127.0.0.1:{p}", "--upstream", f"127.0.0.1:{b}",
                "--set", "engine.shards=1"] + PIN_CPU0 + extra))
    else:
        print(f"SKIPPED: ringpoll-proxy: no {t.build_dir}/bin/ringpoll-proxy", flush=True)
    if t.haproxy:
        out.append((PEERS[0], lambda p, b: t.haproxy_conf(p, b, f"haproxy-{p}")))
    else:
        print("SKIPPED: haproxy is not installed (apt-get install haproxy)", flush=True)
    if t.nginx_stream:
        out.append((PEERS[1], lambda p, b: t.nginx_stream_conf(p, b, f"nginx-stream-{p}")))
    else:
        print("SKIPPED: nginx stream: apt-get install nginx libnginx-mod-stream", flush=True)
    return out


def echo_backend(t, peers_src):
    """(name, argv_fn(port)) of the echo server behind every proxy."""
    if peers_src and os.path.isdir(peers_src):
        spec = importlib.util.spec_from_file_location(
            "harness_main", os.path.join(ROOT, "bench", "harness", "__main__.py"))
        mod = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(mod)
        peers_bin, why = mod.build_peers(peers_src, t.tmpdir)
        exe = os.path.join(peers_bin, "c-epoll-echo") if peers_bin else None
        if exe and os.access(exe, os.X_OK):
            return "c-epoll-echo", lambda p: [exe, str(p)]
        print(f"note: the peers did not build ({why}); ringpoll-serve epoll echoes instead",
              flush=True)
    got = t.serve_echo_argv("epoll", 1)
    if not got:
        return None, None
    return got[1], lambda p: t.serve_echo_argv("epoll", p)[0]


def one_run(a, reg, t, bk_argv, name, argv_fn, conns, size):
    """One measured run; returns its record."""
    rec = {"proxy": name, "conns": conns, "size": size, "ok": False}
    started = []
    try:
        bport = free_port()
        bk = reg.start("backend", bk_argv(bport), cpu=SRV_CPU,
                       log_path=os.path.join(t.tmpdir, f"backend-{bport}.log"))
        started.append(bk)
        reg.wait_listening(bk, bport)
        port = free_port()
        px = reg.start(name, argv_fn(port, bport), cpu=SRV_CPU,
                       log_path=os.path.join(t.tmpdir, f"proxy-{port}.log"))
        started.append(px)
        reg.wait_listening(px, port)
        jpath = os.path.join(t.tmpdir, "load.json")
        if os.path.exists(jpath):
            os.unlink(jpath)
        argv = clients.load_argv(t.load, "echo", port, conns, size, a.duration, a.warmup, jpath)
        win, rc = measured_run(reg, argv, {"proxy": px.pid, "backend": bk.pid},
                               a.warmup + 0.3, a.duration - 0.6,
                               timeout=a.warmup + a.duration + 30, cpu=CLI_CPU,
                               log_path=os.path.join(t.tmpdir, "load.out"), core=SRV_CPU)
        res = clients.parse_load_json(jpath)
        if not res or not res.get("rps") or not win:
            rec["error"] = f"no result (ringpoll-load exit {rc})"
            return rec
        rps = res["rps"]
        pu, ps = per_request(win, "proxy", rps)
        bu, bs = per_request(win, "backend", rps)
        rec.update(ok=not res.get("errors"), rps=rps, p99_us=res.get("p99_us"),
                   p50_us=res.get("p50_us"), proxy_us=pu + ps, backend_us=bu + bs,
                   core_us=core_per_request(win, rps), other_pct=win["other_pct"],
                   noisy=win["other_pct"] > a.max_other, errors=res.get("errors"))
        if res.get("errors"):
            rec["error"] = f"{res['errors']} client errors: {res.get('first_error')}"
    except StartError as e:
        rec["error"] = str(e)
    finally:
        for p in reversed(started):
            reg.stop(p)
        if started:
            rec["banner"] = started[-1].first_line()
    return rec


def med(rs, k):
    xs = [r[k] for r in rs if r.get(k) is not None]
    return statistics.median(xs) if xs else None


def summary(runs, names):
    """Medians per (point, proxy) over its clean runs (noisy ones only when no clean one)."""
    rows = []
    for conns, size in dict.fromkeys((r["conns"], r["size"]) for r in runs):
        for name in names:
            rs = [r for r in runs if (r["conns"], r["size"], r["proxy"]) == (conns, size, name)]
            good = [r for r in rs if r.get("ok")]
            use = [r for r in good if not r.get("noisy")] or good
            row = {"point": f"{conns} × {size} B" if size < 1024 else f"{conns} × {size // 1024} KiB",
                   "conns": conns, "size": size, "proxy": name, "runs": len(rs), "used": len(use),
                   "noisy": bool(use) and not any(not r.get("noisy") for r in use)}
            for k in ("rps", "p99_us", "proxy_us", "core_us", "backend_us"):
                row[k] = med(use, k)
            rows.append(row)
    for row in rows:
        peers = [r for r in rows if r["point"] == row["point"] and r["proxy"] in PEERS]
        for p in peers:
            tag = "haproxy" if p["proxy"].startswith("haproxy") else "nginx"
            if row["proxy_us"] and p["proxy_us"]:
                row[f"cpu_vs_{tag}"] = row["proxy_us"] / p["proxy_us"]
            if row["rps"] and p["rps"]:
                row[f"rps_vs_{tag}"] = row["rps"] / p["rps"]
        if row["proxy"] == EPOLL and peers:
            cpu_ok = all(row.get(f"cpu_vs_{t}") is not None and row[f"cpu_vs_{t}"] <= 0.8
                         for t in ("haproxy", "nginx") if any(
                             p["proxy"].startswith(t) for p in peers))
            rps_ok = all(row.get(f"rps_vs_{t}") is not None and row[f"rps_vs_{t}"] >= 1.1
                         for t in ("haproxy", "nginx") if any(
                             p["proxy"].startswith(t) for p in peers))
            row["target"] = ("met" if cpu_ok and rps_ok else
                             "not met (" + ", ".join(w for w, ok in (("CPU ≤ 0.8×", cpu_ok),
                                                                    ("req/s ≥ 1.1×", rps_ok))
                                                     if not ok) + ")")
    return rows


def table(rows):
    def f(x, fmt="{:.2f}"):
        return "-" if x is None else fmt.format(x)
    head = ["point", "proxy", "req/s", "p99 µs", "proxy CPU µs/req", "server core µs/req",
            "CPU vs haproxy", "CPU vs nginx", "req/s vs haproxy", "req/s vs nginx", "runs",
            "issue 23 target"]
    cells = [head]
    for r in rows:
        cells.append([r["point"], r["proxy"], f(r["rps"], "{:.0f}"), f(r["p99_us"], "{:.0f}"),
                      f(r["proxy_us"]), f(r["core_us"]), f(r.get("cpu_vs_haproxy"), "{:.2f}×"),
                      f(r.get("cpu_vs_nginx"), "{:.2f}×"), f(r.get("rps_vs_haproxy"), "{:.2f}×"),
                      f(r.get("rps_vs_nginx"), "{:.2f}×"),
                      f"{r['used']}/{r['runs']}" + (" noisy" if r["noisy"] else ""),
                      r.get("target", "")])
    w = [max(len(c[i]) for c in cells) for i in range(len(head))]
    lines = ["  ".join(v.ljust(w[i]) if i < 2 else v.rjust(w[i]) for i, v in enumerate(c))
             for c in cells]
    lines.insert(1, "  ".join("-" * x for x in w))
    return "\n".join(lines)


def parse_point(text):
    try:
        c, s = text.lower().split("x")
        return int(c), int(s)
    except ValueError:
        raise argparse.ArgumentTypeError(f"'{text}': a point is CONNSxBYTES, e.g. 50x64")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--build", default=os.path.join(ROOT, "build"))
    ap.add_argument("--peers", default=os.environ.get(
        "RINGPOLL_PEERS", os.path.join(os.path.dirname(ROOT), "shared", "peers")))
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--duration", type=float, default=5.0)
    ap.add_argument("--warmup", type=float, default=2.0)
    ap.add_argument("--points", nargs="+", type=parse_point, default=POINTS)
    ap.add_argument("--max-other", type=float, default=10.0)
    ap.add_argument("--retries", type=int, default=2)
    ap.add_argument("--out", default=os.path.join(
        ROOT, "results", "proxy-epoll-" + time.strftime("%Y%m%d-%H%M%S")))
    a = ap.parse_args()
    if a.reps < 1 or a.duration < 1.5:
        ap.error("--reps must be at least 1 and --duration at least 1.5 s")
    if (os.cpu_count() or 1) < 2:
        ap.error("needs 2 CPUs: the proxy and its backend on CPU 0, the client on CPU 1")
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = hard if hard == resource.RLIM_INFINITY else min(hard, 65536)
    if soft != resource.RLIM_INFINITY and soft < want:
        resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
    os.makedirs(a.out, exist_ok=True)
    install_signal_handlers()
    reg = Registry()
    tmp = tempfile.mkdtemp(prefix="ringpoll-proxy-epoll.")
    return run_guarded("epoll_vs_peers", lambda: run(a, reg, tmp), reg, tmp)


def run(a, reg, tmp):
    runs = []
    t = Tools(a.build, None, tmp, True)
    if not t.load:
        print(f"no {a.build}/bin/ringpoll-load: build it first", file=sys.stderr)
        return 1
    cands = candidates(t)
    bk_name, bk_argv = echo_backend(t, a.peers)
    if not cands or not bk_argv:
        print("nothing to run (see SKIPPED above)", file=sys.stderr)
        return 1
    print(f"== {len(a.points)} points × {len(cands)} proxies × {a.reps} reps, "
          f"{a.warmup} + {a.duration} s each; echo backend: {bk_name}", flush=True)
    for rep in range(1, a.reps + 1):
        for conns, size in a.points:
            for name, fn in rotated(cands, rep):
                for attempt in range(a.retries + 1):
                    r = one_run(a, reg, t, bk_argv, name, fn, conns, size)
                    r.update(rep=rep, attempt=attempt, backend=bk_name)
                    runs.append(r)
                    print(f"  rep {rep} {conns}×{size} {name:<36} "
                          + (f"{r['rps']:>8.0f} req/s p99 {r['p99_us']:.0f} µs proxy "
                             f"{r['proxy_us']:.2f} µs/req core {r['core_us'] or 0:.2f} µs/req "
                             f"other {r['other_pct']:.0f}%" if r.get("rps") else
                             f"FAILED: {r.get('error')}")
                          + (" NOISY" if r.get("noisy") else ""), flush=True)
                    if not (r.get("ok") and r.get("noisy")):
                        break
    rows = summary(runs, [n for n, _ in cands])
    print("\n" + table(rows))
    with open(os.path.join(a.out, "results.json"), "w") as f:
        json.dump({"args": dict(vars(a)), "backend": bk_name, "runs": runs, "medians": rows},
                  f, indent=1)
    print(f"\nresults: {os.path.join(a.out, 'results.json')}")
    return 0 if any(r.get("ok") for r in runs) else 1


if __name__ == "__main__":
    sys.exit(main())
