"""The side-by-side matrix: echo, HTTP plaintext and L4 proxy, ringpoll against its peers.

For each repetition, each workload, each candidate in turn, the order rotated by one
place each repetition (A B C, B C A, C A B, ...): fresh
server(s) on free ports, pinned to CPU 0, the client pinned to CPU 1, CPU sampled from
/proc over a window inside the client's measured seconds. A run during which foreign
processes burnt more than --max-other % of a core is retried (bounded) and marked noisy.
"""
import json
import os
import platform
import statistics
import sys
import time

import clients
import report
from procs import StartError, busy_pct, free_port
from runner import core_per_request, measured_run, per_request

SECTIONS = [("echo", "Echo"), ("http", "HTTP plaintext"), ("proxy", "L4 proxy")]
# The baseline of each section, first one present wins.
BASELINES = {"echo": ["c-epoll-echo", "ringpoll-serve epoll", "ringpoll-echo epoll"], "http": ["nginx (1 worker)"],
             "proxy": ["haproxy (1 thread)"]}
SRV_CPU, CLI_CPU = 0, 1


class Candidate:
    def __init__(self, name, argv_fn):
        self.name = name
        self.argv_fn = argv_fn  # (port, backend_port) -> argv


class Workload:
    def __init__(self, section, label, client, conns, size, candidates):
        self.section = section
        self.label = label
        self.client = client  # "load" or "wrk"
        self.conns = conns
        self.size = size
        self.candidates = candidates


def plan(tools, quick):
    """The workloads and their candidates, given what exists."""
    t = tools
    echo_c, proxy_c = [], []
    # The three modes of issue 3 side by side: io_uring completion (the default), io_uring
    # readiness (multishot poll) and epoll.
    for backend in ("io_uring-completion", "io_uring-readiness", "epoll"):
        if t.serve_echo_argv(backend, 1):
            echo_c.append(Candidate(t.serve_echo_argv(backend, 1)[1],
                                    lambda p, b, be=backend: t.serve_echo_argv(be, p)[0]))
    # One connection is latency-bound: every request is a sleep and a wake-up of the server,
    # which the `latency` profile (it busy-polls) avoids. Its two modes run beside the
    # default ones at 1 connection only (at 50 and 500 the loop seldom sleeps).
    echo_lat = []
    if t.serve:
        for backend in ("io_uring-completion", "epoll"):
            echo_lat.append(Candidate(
                f"ringpoll-serve {backend} --profile latency",
                lambda p, b, be=backend: t.serve_echo_argv(be, p)[0] + ["--profile", "latency"]))
    if not t.serve:
        t.skip("ringpoll-serve (echo, http)",
               f"no {t.build_dir}/bin/ringpoll-serve yet: echo rows use ringpoll-echo as a stand-in"
               if t.echo else f"no {t.build_dir}/bin/ringpoll-serve nor ringpoll-echo")
    for p in ("c-epoll-echo", "c-uring-echo", "go-echo"):
        if t.peer[p]:
            echo_c.append(Candidate(p, lambda port, b, exe=t.peer[p]: [exe, str(port)]))
        else:
            t.skip(p, "peers not built" if t.peers_bin else "no peers folder")

    http_c = []
    if t.serve:
        pin = ["--set", "engine.cpus=[0]"] if t.pinned else []
        http_c.append(Candidate("ringpoll-serve http", lambda p, b: [
            t.serve, "--mode", "http", "--listen", f"127.0.0.1:{p}", "--set", "engine.shards=1"] + pin))
    if t.nginx:
        http_c.append(Candidate("nginx (1 worker)", lambda p, b: t.nginx_http_conf(p, f"nginx-http-{p}")))
    else:
        t.skip("nginx", "nginx is not installed")
    if t.peer["go-http"]:
        http_c.append(Candidate("go-http", lambda p, b: [t.peer["go-http"], str(p)]))
    else:
        t.skip("go-http", "peers not built (Go missing?)" if t.peers_bin else "no peers folder")
    if not t.wrk:
        t.skip("wrk rows", "wrk is not installed")

    if t.proxy:
        pin = ["--set", "engine.cpus=[0]"] if t.pinned else []
        # The default (io_uring completion mode, copying relay), and epoll with the relay
        # copying and splicing: splice is only measured where it runs (readiness backends).
        variants = [("ringpoll-proxy", []),
                    ("ringpoll-proxy epoll copy", ["--set", "engine.backend=epoll"]),
                    ("ringpoll-proxy epoll splice", ["--set", "engine.backend=epoll",
                                                     "--set", "proxy.splice=on"])]
        for name, extra in variants:
            proxy_c.append(Candidate(name, lambda p, b, extra=extra: [
                t.proxy, "--listen", f"127.0.0.1:{p}", "--upstream", f"127.0.0.1:{b}",
                "--set", "engine.shards=1"] + pin + extra))
    else:
        t.skip("ringpoll-proxy", f"no {t.build_dir}/bin/ringpoll-proxy yet (issue 5)")
    if t.haproxy:
        proxy_c.append(Candidate("haproxy (1 thread)", lambda p, b: t.haproxy_conf(p, b, f"haproxy-{p}")))
    else:
        t.skip("haproxy", "haproxy is not installed")
    if t.nginx_stream:
        proxy_c.append(Candidate("nginx stream (1 worker)",
                                 lambda p, b: t.nginx_stream_conf(p, b, f"nginx-stream-{p}")))
    else:
        t.skip("nginx stream", "nginx or its stream module (libnginx-mod-stream) is missing")

    if quick:
        echo_loads, proxy_loads = [(50, 64)], [(50, 64)]
    else:
        echo_loads = [(c, m) for c in (1, 50, 500) for m in (64, 4096)]
        proxy_loads = [(c, m) for c in (50, 500) for m in (64, 4096)]
    wls = []
    for c, m in echo_loads:
        cands = echo_c[:3] + echo_lat + echo_c[3:] if c == 1 else echo_c
        wls.append(Workload("echo", f"echo {c} conn × {_size(m)}", "load", c, m, cands))
    if t.wrk:
        wls.append(Workload("http", "HTTP wrk -t1 -c100", "wrk", 100, 0, http_c))
    wls.append(Workload("http", "HTTP ringpoll-load -c100", "load", 100, 0, http_c))
    for c, m in proxy_loads:
        wls.append(Workload("proxy", f"proxy {c} conn × {_size(m)}", "load", c, m, proxy_c))
    return [w for w in wls if w.candidates]


def apply_filter(workloads, words):
    """Keep the (workload, candidate) pairs whose "workload / server" text holds every
    word of --filter (case-insensitive)."""
    if not words:
        return workloads
    out = []
    for w in workloads:
        cands = [c for c in w.candidates
                 if all(x.lower() in f"{w.label} / {c.name}".lower() for x in words)]
        if cands:
            out.append(Workload(w.section, w.label, w.client, w.conns, w.size, cands))
    return out


def proxy_backend(tools):
    """(name, argv function) of the echo server every proxy forwards to."""
    t = tools
    if t.peer["c-epoll-echo"]:
        return "c-epoll-echo", lambda p: [t.peer["c-epoll-echo"], str(p)]
    if t.serve_echo_argv("epoll", 1):
        return t.serve_echo_argv("epoll", 1)[1], lambda p: t.serve_echo_argv("epoll", p)[0]
    return None, None


def _size(m):
    return f"{m // 1024} KiB" if m >= 1024 and m % 1024 == 0 else f"{m} B"


class Bench:
    def __init__(self, args, reg, tools, outdir):
        self.a = args
        self.reg = reg
        self.t = tools
        self.out = outdir
        self.runs = []
        self.log = os.path.join(outdir, "servers.log")
        self.cpu_srv = SRV_CPU if tools.pinned else None
        self.cpu_cli = CLI_CPU if tools.pinned else None
        self.bk_name, self.bk_argv = proxy_backend(tools)
        self.quiet_spent = 0.0

    def _append_log(self, proc, heading):
        with open(self.log, "a") as f:
            f.write(f"--- {heading} (pid {proc.pid})\n")
            f.write(proc.output())

    def _start(self, name, argv, heading):
        port_log = os.path.join(self.t.tmpdir, f"srv-{len(self.runs)}-{name.split()[0]}.log")
        proc = self.reg.start(name, argv, cpu=self.cpu_srv, log_path=port_log)
        return proc

    def run_one(self, wl, cand, rep):
        a = self.a
        for attempt in range(a.retries + 1):
            rec = {"section": wl.section, "workload": wl.label, "server": cand.name, "rep": rep,
                   "try": attempt, "client": wl.client, "conns": wl.conns, "size": wl.size,
                   "ok": False, "noisy": False}
            started = []
            try:
                groups = {}
                bport = None
                if wl.section == "proxy":
                    if not self.bk_argv:
                        raise StartError("no echo backend for the proxy")
                    bport = free_port()
                    bk = self._start("backend", self.bk_argv(bport), f"backend {self.bk_name}")
                    started.append(bk)
                    self.reg.wait_listening(bk, bport)
                    groups["backend"] = bk.pid
                    rec["backend"] = self.bk_name
                port = free_port()
                srv = self._start(cand.name, cand.argv_fn(port, bport), cand.name)
                started.append(srv)
                self.reg.wait_listening(srv, port)
                groups["server"] = srv.pid
                rec.update(self._drive(wl, port, groups))
            except StartError as e:
                rec["error"] = str(e)
            finally:
                for p in reversed(started):
                    self.reg.stop(p)
                    self._append_log(p, f"{p.name} — {wl.label}, rep {rep}, try {attempt}")
                if started:
                    rec["banner"] = started[-1].first_line()
                    if wl.section == "proxy" and len(started) > 1:
                        rec["backend_banner"] = started[0].first_line()
            self.runs.append(rec)
            self._print(rec)
            if not (rec["ok"] and rec["noisy"]):
                break
            if attempt < a.retries:
                self._wait_quiet()

    def _drive(self, wl, port, groups):
        a, t = self.a, self.t
        rec = {}
        cli_log = os.path.join(t.tmpdir, "client.out")
        if wl.client == "wrk":
            script = clients.wrk_script(t.tmpdir)
            # warm-up: its own short wrk run, not measured
            measured_run(self.reg, clients.wrk_argv(port, wl.conns, max(1, round(a.warmup)), script),
                         {}, 0, 0, timeout=a.warmup + 15, cpu=self.cpu_cli,
                         log_path=os.path.join(t.tmpdir, "wrk-warmup.out"), name="wrk warm-up")
            win, rc = measured_run(self.reg, clients.wrk_argv(port, wl.conns, a.duration, script),
                                   groups, 0.4, a.duration - 0.8, timeout=a.duration + 20,
                                   cpu=self.cpu_cli, log_path=cli_log, name="wrk",
                                   core=self.cpu_srv)
            res = clients.parse_wrk(cli_log)
        else:
            jpath = os.path.join(t.tmpdir, "load.json")
            if os.path.exists(jpath):
                os.unlink(jpath)
            mode = "http" if wl.section == "http" else "echo"
            argv = clients.load_argv(t.load, mode, port, wl.conns, wl.size, a.duration,
                                     a.warmup, jpath)
            win, rc = measured_run(self.reg, argv, groups, a.warmup + 0.3, a.duration - 0.6,
                                   timeout=a.warmup + a.duration + 20, cpu=self.cpu_cli,
                                   log_path=cli_log, name="ringpoll-load", core=self.cpu_srv)
            res = clients.parse_load_json(jpath)
        rec.update(client_figures(res, rc, cli_log))
        if not res:
            return rec
        if win:
            rec["cpu_window"] = win  # raw: ticks and % of a core per process group
            rec["window_s"] = win["window_s"]
            rec["other_pct"] = win["other_pct"]
            rec["noisy"] = win["other_pct"] > a.max_other
            for g, v in win["groups"].items():
                rec[f"{g}_cpu_pct"] = round(v["usr_pct"] + v["sys_pct"], 1)
            rec["srv_usr_us"], rec["srv_sys_us"] = per_request(win, "server", res["rps"])
            rec["core_us"] = core_per_request(win, res["rps"])
            if "backend" in groups:
                rec["bk_usr_us"], rec["bk_sys_us"] = per_request(win, "backend", res["rps"])
        else:
            rec["ok"] = False
            rec.setdefault("error", "the client ended before the CPU window closed")
        return rec

    def _wait_quiet(self):
        """Up to 5 s (and --quiet-budget s over the session) for the machine to calm down
        before a retry."""
        t0 = time.monotonic()
        while time.monotonic() - t0 < 5 and self.quiet_spent + time.monotonic() - t0 < self.a.quiet_budget:
            if busy_pct(0.5) <= self.a.max_other:
                break
        self.quiet_spent += time.monotonic() - t0

    def _print(self, r):
        def g(k, f="{:.0f}"):
            return "-" if r.get(k) is None else f.format(r[k])
        if r.get("ok") or r.get("rps"):
            cpu = ("-" if r.get("srv_usr_us") is None else
                   f"{r['srv_usr_us']:.2f}+{r['srv_sys_us']:.2f}")
            bk = "" if r.get("bk_usr_us") is None else f" backend {r['bk_usr_us']:.2f}+{r['bk_sys_us']:.2f}"
            line = (f"{r['rps'] or 0:>9.0f} req/s  p50 {g('p50_us')}  p99 {g('p99_us')}  "
                    f"p99.9 {g('p999_us')} µs  CPU µs/req {cpu}{bk}  other {g('other_pct')}%")
        else:
            line = "FAILED"
        flags = (" NOISY" if r.get("noisy") else "") + ("" if r.get("ok") else
                                                        f" FAILED: {r.get('error', '?')}")
        print(f"  {r['server']:<44.44} rep {r['rep']} try {r['try']}: {line}{flags}"[:400],
              flush=True)

    def loop(self, workloads):
        return run_rotated(self.a.reps, workloads, self.run_one)


def run_rotated(reps, workloads, run_one):
    """run_one(workload, candidate, rep) for every workload's candidates, repetition by
    repetition, in the rotated order; returns the seconds it took."""
    t0 = time.monotonic()
    for rep in range(1, reps + 1):
        for wl in workloads:
            cands = rotated(wl.candidates, rep)
            print(f"== rep {rep}/{reps}: {wl.label} "
                  f"(elapsed {time.monotonic() - t0:.0f} s; order: "
                  f"{', '.join(c.name for c in cands)})", flush=True)
            for cand in cands:
                run_one(wl, cand, rep)
    return time.monotonic() - t0


def client_figures(res, rc, cli_log):
    """A record's client part: the parsed figures (res, None when the client left none),
    ok (figures and no error), and the error: the client's errors, or the tail of its
    output (cli_log) when it left no figures."""
    rec = {"client_rc": rc}
    if not res:
        try:
            with open(cli_log, errors="replace") as f:
                tail = f.read()[-600:]
        except OSError:
            tail = ""
        rec["error"] = f"no result from the client (exit {rc}): {tail.strip()}"
        return rec
    rec.update(res)
    rec["ok"] = bool(res.get("rps")) and not res.get("errors") and not res.get("failure")
    if res.get("errors"):
        rec["error"] = f"{res['errors']} client errors" + (
            f": {res['first_error']}" if res.get("first_error") else "")
    return rec


def rotated(candidates, rep):
    """The candidates in the order repetition `rep` (1-based) runs them: rotated by one
    place each repetition (A B C, B C A, C A B, ...), so no candidate always runs first
    (a cold machine) or always right after the same neighbour (its leftovers).

    >>> [''.join(rotated('ABC', rep)) for rep in (1, 2, 3, 4)]
    ['ABC', 'BCA', 'CAB', 'ABC']
    """
    if not candidates:
        return []
    k = (rep - 1) % len(candidates)
    return list(candidates[k:]) + list(candidates[:k])


# ---------------------------------------------------------------------------- summary

def _median(xs):
    xs = [x for x in xs if x is not None]
    return statistics.median(xs) if xs else None


def summarize(runs):
    """Medians per (workload, server), in the order they ran, with ratios to the baseline."""
    order, groups = [], {}
    for r in runs:
        key = (r["workload"], r["server"])
        if key not in groups:
            order.append(key)
            groups[key] = []
        groups[key].append(r)
    rows = []
    for key in order:
        rs = groups[key]
        good = [r for r in rs if r.get("ok")]
        clean = [r for r in good if not r.get("noisy")]
        used = clean or good
        row = {"section": rs[0]["section"], "workload": key[0], "server": key[1],
               "runs": len(rs), "used": len(used), "noisy": bool(used) and not clean,
               "failed": len(rs) - len(good)}
        for k in ("rps", "p50_us", "p99_us", "p999_us", "srv_usr_us", "srv_sys_us",
                  "bk_usr_us", "bk_sys_us", "core_us", "other_pct", "server_cpu_pct",
                  "client_cpu_pct"):
            row[k] = _median([r.get(k) for r in used])
        if used:
            row["rps_lo"], row["rps_hi"] = min(r["rps"] for r in used), max(r["rps"] for r in used)
            p99s = [r["p99_us"] for r in used if r.get("p99_us") is not None]
            if p99s:
                row["p99_lo"], row["p99_hi"] = min(p99s), max(p99s)
        if row["failed"]:
            row["note"] = f"{row['failed']} failed"
        rows.append(row)
    for wl in dict.fromkeys(r["workload"] for r in rows):
        rs = [r for r in rows if r["workload"] == wl]
        base = None
        for name in BASELINES.get(rs[0]["section"], []):
            base = next((r for r in rs if r["server"].startswith(name) and r.get("rps")), None)
            if base:
                break
        for r in rs:
            r["baseline"] = r is base
            r["baseline_name"] = base["server"] if base else None
            if base:
                r["rps_ratio"] = r["rps"] / base["rps"] if r.get("rps") else None
                tot = lambda x: (None if x.get("srv_usr_us") is None
                                 else x["srv_usr_us"] + x["srv_sys_us"])
                r["cpu_ratio"] = tot(r) / tot(base) if tot(r) and tot(base) else None
    return rows


def write_outputs(outdir, meta, runs):
    rows = summarize(runs)
    with open(os.path.join(outdir, "results.json"), "w") as f:
        json.dump({"meta": meta, "runs": runs, "medians": rows}, f, indent=1)
    svgs = report.charts(rows, SECTIONS)
    for name, svg in svgs.items():
        with open(os.path.join(outdir, name), "w") as f:
            f.write(svg)
    md = [f"# ringpoll side by side ({meta['stamp']})", ""]
    md += [f"- {line}" for line in meta["method"]]
    if meta.get("skipped"):
        md.append("- SKIPPED: " + "; ".join(f"{w} ({why})" for w, why in meta["skipped"]))
    if meta.get("interrupted"):
        md.append("- Interrupted: the table holds only the runs made until then.")
    md.append("")
    for sec, title in SECTIONS:
        rs = [r for r in rows if r["section"] == sec]
        if not rs:
            continue
        md += [f"## {title}", "", report.markdown_table(rs), ""]
        md += [f"![{title} requests/s]({sec}-rps.svg) ![{title} p99]({sec}-p99.svg)", ""]
    banners = {}
    for r in runs:
        if r.get("banner") and r["server"] not in banners:
            banners[r["server"]] = r["banner"]
    if banners:
        md += ["What each server said at start (first line of its output):", ""]
        md += [f"- {s}: `{b}`" for s, b in banners.items()]
        md.append("")
    failed = [r for r in runs if not r.get("ok")]
    noisy = [r for r in runs if r.get("ok") and r.get("noisy")]
    md.append(f"Runs: {len(runs)}; {len(noisy)} noisy (foreign CPU above "
              f"{meta['max_other']}% of a core), {len(failed)} failed.")
    for r in failed:
        md.append(f"- failed: {r['server']}, {r['workload']}, rep {r['rep']} try {r['try']}: "
                  f"{(r.get('error') or '?').splitlines()[0][:200]}")
    with open(os.path.join(outdir, "results.md"), "w") as f:
        f.write("\n".join(md) + "\n")
    return rows


def run(args, reg, tools, outdir):
    workloads = apply_filter(plan(tools, args.quick), args.filter)
    if not workloads:
        print("bench: no workload left to run (see SKIPPED above, or --filter)", file=sys.stderr)
        return 1
    n_runs = sum(len(w.candidates) for w in workloads) * args.reps
    per_run = args.warmup + args.duration + 1.5
    stamp = os.path.basename(outdir.rstrip("/"))
    meta = {
        "stamp": stamp,
        "machine": f"{os.cpu_count()} CPU, kernel {platform.release()}",
        "max_other": args.max_other,
        "skipped": tools.skipped,
        "microbench": args.microbench,
        "args": vars(args),
        "method": [
            f"Machine: {os.cpu_count()} CPU ({_cpu_model()}), kernel {platform.release()}.",
            f"{'Server (and proxy + its backend) pinned to CPU 0, client to CPU 1 (taskset)' if tools.pinned else 'Not pinned (fewer than 2 CPUs)'}; "
            f"a fresh server per run on a free loopback port.",
            f"{args.reps} repetition(s), candidates interleaved and rotated each repetition "
            f"(A B C, B C A, C A B, ...); "
            f"{args.warmup} s warm-up, {args.duration} s measured; medians over clean runs "
            f"(noisy runs count only when no clean one exists).",
            "Clients: ringpoll-load (closed loop, one request in flight per connection) for echo, "
            "proxy and one HTTP row; wrk -t1 -c100 (p99.9 via a Lua done() hook) for the other.",
            "Server core µs/req (all): the pinned server core's whole busy time (its cpu0 "
            "line of /proc/stat: user nice system irq softirq) over the same window per "
            "request — the server's (proxy's and its backend's) CPU plus the loopback work "
            "the kernel does on that core outside any of our processes.",
            "CPU µs/req: /proc/PID/stat utime/stime deltas (server and its children; for the "
            "proxy rows the proxy, and its backend in its own column) over a window inside the "
            "measured seconds, divided by the requests in it at the client's rate.",
            f"Noisy: the rest of the machine burnt more than {args.max_other}% of a core over "
            f"the window (from /proc/stat, minus our processes); retried up to {args.retries} time(s).",
            "Ratios: against the baseline named in each table (marked), req/s above 1 and "
            "CPU/req below 1 are better.",
            f"Echo backend of the proxies: {proxy_backend(tools)[0] or 'none'}.",
        ] + ([f"Micro-benchmarks (Google Benchmark JSON): {args.microbench}"] if args.microbench else []),
    }
    print(f"== bench matrix: {len(workloads)} workloads, {n_runs} runs, about "
          f"{n_runs * per_run / 60:.1f} min plus retries; results in {outdir}", flush=True)
    for what, why in tools.skipped:
        print(f"   SKIPPED: {what}: {why}", flush=True)
    b = Bench(args, reg, tools, outdir)
    rc = 0
    try:
        took = b.loop(workloads)
        meta["took_s"] = round(took, 1)
        meta["method"].append(f"Took {took / 60:.1f} min.")
    except BaseException:
        meta["interrupted"] = True
        if b.runs:
            write_outputs(outdir, meta, b.runs)
            print(f"\nbench: interrupted; the runs so far are summarised in {outdir}",
                  file=sys.stderr)
        raise
    rows = write_outputs(outdir, meta, b.runs)
    print()
    for sec, title in SECTIONS:
        rs = [r for r in rows if r["section"] == sec]
        if rs:
            print(f"{title}\n{report.text_table(rs)}\n")
    for what, why in tools.skipped:
        print(f"SKIPPED: {what}: {why}")
    if not any(r.get("ok") for r in b.runs):
        rc = 1
        print("bench: no run succeeded", file=sys.stderr)
    print(f"\nresults: {os.path.abspath(outdir)}/results.md, results.json, *.svg")
    return rc


def _cpu_model():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "?"
