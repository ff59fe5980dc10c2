"""The side-by-side runs of bench/tls/compare.py and bench/http/compare.py.

A Session runs workloads; a workload has candidates (servers or proxies), an optional
upstream started fresh beside each candidate, and a drive function (a client run). Each
repetition runs every workload's candidates in an order rotated by one place (A B C,
B C A, ...). Each run: the upstream pinned to its CPU, the candidate pinned to the
server CPU (taskset; ringpoll's programs also get one shard on that CPU), the client
pinned to the client CPU, CPU sampled over a window inside the client's measured seconds:
the candidate's process tree (user+sys) and its pinned core's whole busy time
(/proc/stat, softirq work included), both per request at the client's rate. Medians per
workload and candidate, Markdown tables, and every raw output in --out. Every process is
stopped by its PID at the end, also on errors, Ctrl-C and SIGTERM.
"""
import argparse
import json
import os
import re
import socket
import sys
import time
import urllib.request

sys.path.append(os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "hardening"))
import clients  # noqa: E402
from common import read_http_response  # noqa: E402
from bench import _median, client_figures, run_rotated  # noqa: E402
from procs import HZ, Registry, StartError, children_of, free_port, install_signal_handlers  # noqa: E402
from report import fmt_ratio, fmt_rps, fmt_us  # noqa: E402
from runner import measured_run, per_request  # noqa: E402
from servers import Tools  # noqa: E402


def main(doc, name, title, plan, sections, add_args=None, before=None):
    """A compare script's main: the common options (and add_args(ap)'s), before(args),
    then the Session; plan(session, args) -> workloads. Returns the exit status."""
    ap = argparse.ArgumentParser(description=doc.split("\n\n")[0])
    add_common_args(ap)
    if add_args:
        add_args(ap)
    args = ap.parse_args()
    if before:
        before(args)
    s = Session(args, name, title)
    return s.main(plan(s, args), sections)


def add_common_args(ap):
    ap.add_argument("--bin", default="build/bin", help="where ringpoll-serve, ringpoll-proxy and ringpoll-load are")
    ap.add_argument("--reps", type=int, default=3, help="repetitions, candidates rotated each time (3)")
    ap.add_argument("--seconds", type=float, default=10, help="measured seconds per run (10)")
    ap.add_argument("--warmup", type=float, default=2, help="warm-up seconds per run (2)")
    ap.add_argument("--out", help="folder for the raw output, results.json and results.md "
                                  "(default results/<name>-<stamp>)")
    ap.add_argument("--max-other", type=float, default=10.0,
                    help="%% of a core burnt by other processes above which a run is marked noisy (10)")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                    help="--set for every ringpoll program measured (not the upstream; repeatable)")
    ap.add_argument("--variant", action="append", default=[], metavar="LABEL=KEY=VALUE[,KEY=VALUE]",
                    help="another candidate: ringpoll's, with these --set keys (repeatable), e.g. "
                         "epoll=engine.backend=epoll")
    ap.add_argument("--only", default="", metavar="WORDS",
                    help="comma-separated; run only workloads or candidates whose name holds one")


class Candidate:
    """argv_fn(port, upstream_port) -> argv; after(session, proc, port) -> dict of extra
    figures, called while the candidate still runs, after the client."""

    def __init__(self, name, argv_fn, after=None):
        self.name = name
        self.argv_fn = argv_fn
        self.after = after


class Workload:
    """drive(session, port, groups, rec_name) -> dict; upstream: (name, argv_fn(port)) or
    None; est_s: seconds one run takes (for the printed estimate)."""

    def __init__(self, section, label, candidates, drive, est_s, upstream=None, baseline=None):
        self.section = section
        self.label = label
        self.candidates = candidates
        self.drive = drive
        self.est_s = est_s
        self.upstream = upstream
        self.baseline = baseline  # name of the candidate the × columns divide by


def slug(text):
    return re.sub(r"[^A-Za-z0-9]+", "-", text).strip("-").lower()[:48]


def metrics(admin_port):
    """A Prometheus page as {name: sum over its label sets}."""
    with urllib.request.urlopen(f"http://127.0.0.1:{admin_port}/metrics", timeout=5) as r:
        text = r.read().decode()
    out = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            name = name.split("{", 1)[0]
            try:
                out[name] = out.get(name, 0.0) + float(value)
            except ValueError:
                pass
    return out


class Session:
    def __init__(self, args, name, title):
        self.a = args
        self.title = title
        self.out = os.path.abspath(args.out or time.strftime(f"results/{name}-%Y%m%d-%H%M%S"))
        self.raw = os.path.join(self.out, "raw")
        os.makedirs(self.raw, exist_ok=True)
        os.chmod(self.out, 0o755)  # nginx workers run as nobody and read the certificate
        os.makedirs(os.path.join(self.out, "conf"), exist_ok=True)
        self.tools = Tools(None, None, os.path.join(self.out, "conf"), True, bin_dir=args.bin)
        cpus = sorted(os.sched_getaffinity(0))
        if len(cpus) < 2:
            sys.exit(f"{name}: needs two CPUs (one for the measured server, one for the client)")
        self.cpu_srv, self.cpu_cli = cpus[0], cpus[1]
        self.cpu_up = cpus[2] if len(cpus) > 2 else cpus[1]
        self.reg = Registry()
        self.runs = []
        self.missing = []  # (what, why): rows left out

    def need(self, what, path, why):
        if not path:
            self.missing.append((what, why))
        return bool(path)

    def ringpoll_pin(self, extra=(), upstream=False):
        """One shard on the CPU the process is pinned to; for the measured one also --set
        from the command line and `extra` (a variant's keys)."""
        cpu = self.cpu_up if upstream else self.cpu_srv
        sets = [] if upstream else sum((["--set", s] for s in list(self.a.set) + list(extra)), [])
        return ["--set", "engine.shards=1", "--set", f"engine.cpus=[{cpu}]"] + sets

    def variants(self, name):
        """[(candidate name, extra --set keys)]: ringpoll's default, then each --variant."""
        out = [(name, [])]
        for v in self.a.variant:
            label, _, keys = v.partition("=")
            if not label or not keys:
                sys.exit(f"--variant {v!r}: expected LABEL=KEY=VALUE[,KEY=VALUE...]")
            out.append((f"{name} {label}", keys.split(",")))
        return out

    def file(self, name):
        return os.path.join(self.raw, f"{len(self.runs):03d}-{name}")

    def start(self, name, argv, cpu, port):
        proc = self.reg.start(name, argv, cpu=cpu, log_path=self.file(slug(name) + ".log"))
        self.reg.wait_listening(proc, port)
        return proc

    # ------------------------------------------------------------------ clients
    def wrk(self, port, groups, conns, scheme="http"):
        a = self.a
        script = clients.wrk_script(self.raw)
        warm = max(1, round(a.warmup))
        measured_run(self.reg, clients.wrk_argv(port, conns, warm, script, scheme=scheme),
                     {}, 0, 0, timeout=warm + 15, cpu=self.cpu_cli,
                     log_path=self.file("wrk-warmup.out"), name="wrk warm-up")
        log = self.file("wrk.out")
        win, rc = measured_run(self.reg, clients.wrk_argv(port, conns, a.seconds, script, scheme=scheme,
                                                          latency=True),
                               groups, 0.4, max(0.5, a.seconds - 0.8), timeout=a.seconds + 20,
                               cpu=self.cpu_cli, log_path=log, name="wrk")
        return self.account(clients.parse_wrk(log), win, rc, groups, log)

    def load(self, port, groups, mode, conns, size=64, extra=()):
        a = self.a
        jpath, log = self.file("load.json"), self.file("load.out")
        argv = clients.load_argv(os.path.join(a.bin, "ringpoll-load"), mode, port, conns, size,
                                 a.seconds, a.warmup, jpath) + list(extra)
        win, rc = measured_run(self.reg, argv, groups, a.warmup + 0.3, max(0.5, a.seconds - 0.6),
                               timeout=a.warmup + a.seconds + 20, cpu=self.cpu_cli, log_path=log,
                               name="ringpoll-load")
        rec = self.account(clients.parse_load_json(jpath), win, rc, groups, log)
        try:
            with open(jpath) as f:
                j = json.load(f)
            rec["tls_handshakes"], rec["tls_resumed"] = j.get("tls_handshakes"), j.get("tls_resumed")
        except (OSError, ValueError):
            pass
        return rec

    def account(self, res, win, rc, groups, log):
        """The client's figures and the CPU window -> one record's figures."""
        rec = dict(client_figures(res, rc, log), client_output=os.path.basename(log))
        if not res:
            return rec
        if not win:
            rec["ok"] = False
            rec.setdefault("error", "the client ended before the CPU window closed")
            return rec
        rec["cpu_window"] = win
        rec["other_pct"] = win["other_pct"]
        rec["noisy"] = win["other_pct"] > self.a.max_other
        usr, sys_ = per_request(win, "server", res["rps"])
        rec["srv_us"] = None if usr is None else usr + sys_
        rec["srv_usr_us"], rec["srv_sys_us"] = usr, sys_
        if "upstream" in groups:
            usr, sys_ = per_request(win, "upstream", res["rps"])
            rec["up_us"] = None if usr is None else usr + sys_
        reqs = res["rps"] * win["window_s"]
        busy = win["cpu_busy_ticks"].get(self.cpu_srv)
        rec["core_us"] = busy * 1e6 / HZ / reqs if reqs > 0 and busy is not None else None
        return rec

    # ------------------------------------------------------------------ runs
    def run_one(self, wl, cand, rep):
        rec = {"section": wl.section, "workload": wl.label, "candidate": cand.name, "rep": rep,
               "ok": False}
        started = []
        try:
            groups = {}
            up_port = None
            if wl.upstream:
                up_port = free_port()
                up = self.start(wl.upstream[0], wl.upstream[1](up_port), self.cpu_up, up_port)
                started.append(up)
                groups["upstream"] = up.pid
            port = free_port()
            srv = self.start(cand.name, cand.argv_fn(port, up_port), self.cpu_srv, port)
            started.append(srv)
            groups["server"] = srv.pid
            rec.update(wl.drive(self, port, groups))
            if cand.after:
                rec.update(cand.after(self, srv, port))
            if not srv.alive():
                rec["ok"] = False
                rec["error"] = f"{cand.name} exited during the run: {srv.log_tail()}"
        except StartError as e:
            rec["error"] = str(e)
        finally:
            for p in reversed(started):
                self.reg.stop(p)
            if started:
                rec["banner"] = started[-1].first_line()
        self.runs.append(rec)
        print(f"  {cand.name:<40.40} rep {rep}: {describe(rec)}"[:600], flush=True)

    def main(self, workloads, sections):
        """Run everything, print and write the tables; sections: [(section, title,
        columns)] with columns [(header, key, kind)]. Returns the exit status."""
        words = [w for w in self.a.only.split(",") if w]
        if words:
            for wl in workloads:
                wl.candidates = [c for c in wl.candidates
                                 if any(w in wl.label or w in c.name for w in words)]
        workloads = [w for w in workloads if w.candidates]
        n = sum(len(w.candidates) for w in workloads) * self.a.reps
        est = sum(len(w.candidates) * w.est_s for w in workloads) * self.a.reps
        print(f"== {self.title}: {len(workloads)} workloads, {n} runs, about {est / 60:.1f} min; "
              f"server CPU {self.cpu_srv}, client CPU {self.cpu_cli}, upstream CPU {self.cpu_up}; "
              f"output in {self.out}", flush=True)
        for what, why in self.missing:
            print(f"   LEFT OUT: {what}: {why}", flush=True)
        install_signal_handlers()
        interrupted = None
        try:
            run_rotated(self.a.reps, workloads, self.run_one)
        except BaseException as e:  # Ctrl-C, SIGTERM: the runs so far are still written
            interrupted = e
        finally:
            self.reg.stop_all()
        md = self.write(workloads, sections, interrupted)
        print("\n" + md)
        if interrupted:
            raise interrupted
        return 0 if any(r.get("ok") for r in self.runs) else 1

    # ------------------------------------------------------------------ summary
    def medians(self, wl):
        rows = []
        for c in wl.candidates:
            rs = [r for r in self.runs if r["workload"] == wl.label and r["candidate"] == c.name]
            good = [r for r in rs if r.get("ok")]
            clean = [r for r in good if not r.get("noisy")]
            used = clean or good
            row = {"candidate": c.name, "runs": len(rs), "used": len(used),
                   "noisy": bool(used) and not clean, "failed": len(rs) - len(good)}
            keys = {k for r in used for k, v in r.items() if isinstance(v, (int, float))
                    and not isinstance(v, bool)}
            for k in keys:
                row[k] = _median([r.get(k) for r in used])
            rows.append(row)
        base = next((r for r in rows if r["candidate"] == wl.baseline and r["used"]), None)
        for r in rows:  # k_x: k against the baseline's median
            for k in [k for k in r if base and isinstance(r[k], float) and base.get(k)]:
                r[k + "_x"] = r[k] / base[k]
        return rows

    def write(self, workloads, sections, interrupted):
        md = [f"# {self.title} ({os.path.basename(self.out)})", ""]
        md.append(f"{self.a.reps} repetition(s), candidates rotated; {self.a.warmup} s warm-up, "
                  f"{self.a.seconds} s measured per run; medians over clean runs (noisy ones only "
                  f"when no clean one exists). Server pinned to CPU {self.cpu_srv}, client to CPU "
                  f"{self.cpu_cli}, upstream to CPU {self.cpu_up}. CPU µs/req: the server's process "
                  f"tree (user+sys); core µs/req: CPU {self.cpu_srv}'s busy time (/proc/stat). "
                  f"× columns: against the baseline of the table.")
        if interrupted:
            md.append(f"\nInterrupted ({type(interrupted).__name__}): only the runs made until then.")
        for what, why in self.missing:
            md.append(f"\nLeft out: {what}: {why}")
        for sec, title, cols in sections:
            wls = [w for w in workloads if w.section == sec]
            if not wls:
                continue
            md += ["", f"## {title}", ""]
            md.append("| workload | candidate | " + " | ".join(h for h, _, _ in cols) + " | runs |")
            md.append("|---|---|" + "---:|" * (len(cols) + 1))
            for wl in wls:
                for r in self.medians(wl):
                    name = r["candidate"] + (" (baseline)" if r["candidate"] == wl.baseline else "")
                    cells = [fmt_cell(r.get(k), kind) for _, k, kind in cols]
                    note = f"{r['used']}/{r['runs']}" + (" noisy" if r["noisy"] else "")
                    md.append(f"| {wl.label} | {name} | " + " | ".join(cells) + f" | {note} |")
        failed = [r for r in self.runs if not r.get("ok")]
        noisy = [r for r in self.runs if r.get("ok") and r.get("noisy")]
        md += ["", f"Runs: {len(self.runs)}; {len(noisy)} noisy (other processes above "
                   f"{self.a.max_other}% of a core), {len(failed)} failed."]
        md += [f"- failed: {r['candidate']}, {r['workload']}, rep {r['rep']}: "
               f"{(r.get('error') or '?').splitlines()[0][:300]}" for r in failed]
        banners = {}
        for r in self.runs:
            banners.setdefault(r["candidate"], r.get("banner"))
        md += ["", "What each candidate printed first:", ""]
        md += [f"- {c}: `{b}`" for c, b in banners.items() if b]
        text = "\n".join(md) + "\n"
        with open(os.path.join(self.out, "results.md"), "w") as f:
            f.write(text)
        with open(os.path.join(self.out, "results.json"), "w") as f:
            json.dump({"title": self.title, "args": vars(self.a), "runs": self.runs,
                       "medians": {w.label: self.medians(w) for w in workloads}}, f, indent=1)
        return text


def fmt_cell(v, kind):
    if v is None:
        return "-"
    if kind == "rps":
        return fmt_rps(v)
    if kind == "lat":
        return fmt_us(v)
    if kind == "x":
        return fmt_ratio(v)
    if kind == "pct":
        return f"{v:.0f} %"
    return f"{v:.2f}" if kind == "us" else f"{v:.0f}"


def describe(r):
    if r.get("rps"):
        def g(k, f="{:.2f}"):
            return "-" if r.get(k) is None else f.format(r[k])
        line = (f"{r['rps']:.0f} req/s, p99 {g('p99_us', '{:.0f}')} µs, server {g('srv_us')} µs/req, "
                f"core {g('core_us')} µs/req, other {g('other_pct', '{:.0f}')}%")
    else:
        line = ", ".join(f"{k} {v:.1f}" if isinstance(v, float) else f"{k} {v}"
                         for k, v in r.items() if k.startswith("mem_"))
    if r.get("noisy"):
        line += " NOISY"
    if not r.get("ok"):
        line += f" FAILED: {r.get('error', '?')}"
    return line


# ---------------------------------------------------------------------- memory
def tree_mem_kib(pid):
    """(RSS, PSS) in KiB of pid and its direct children (nginx's worker), from smaps_rollup."""
    rss = pss = 0
    for p in [pid] + children_of(pid):
        try:
            with open(f"/proc/{p}/smaps_rollup") as f:
                for line in f:
                    if line.startswith("Rss:"):
                        rss += int(line.split()[1])
                    elif line.startswith("Pss:"):
                        pss += int(line.split()[1])
        except OSError:
            pass
    return rss, pss


def idle_memory(session, port, groups, n, request):
    """Open n keep-alive connections, one request each, keep them idle: the server tree's
    RSS and PSS growth per connection. Every response must be a 200 and every connection
    still open when measured."""
    pid = groups["server"]
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:  # first use: lazily built state
        s.sendall(request)
        read_http_response(s)
    time.sleep(0.5)
    rss0, pss0 = tree_mem_kib(pid)
    socks, bad, deadline = [], [], time.monotonic() + 60
    rec = {"ok": False}
    try:
        for i in range(n):
            if time.monotonic() > deadline:
                rec["error"] = f"only {i} of {n} connections opened in 60 s"
                return rec
            s = socket.create_connection(("127.0.0.1", port), timeout=5)
            socks.append(s)
            s.sendall(request)
            head, _, _ = read_http_response(s)
            status = int(head.split(b" ", 2)[1])
            if status != 200:
                bad.append(status)
        time.sleep(1.0)
        rss1, pss1 = tree_mem_kib(pid)
        closed = 0
        for s in socks:
            s.setblocking(False)
            try:
                if s.recv(1, socket.MSG_PEEK) == b"":
                    closed += 1
            except BlockingIOError:
                pass  # open, nothing to read: idle as it should be
            except OSError:
                closed += 1
    except OSError as e:
        rec["error"] = f"connection {len(socks)} of {n}: {e}"
        return rec
    finally:
        for s in socks:
            s.close()
    rec.update({"mem_conns": n, "mem_rss_base_kib": rss0, "mem_rss_kib": rss1,
                "mem_rss_per_conn_b": (rss1 - rss0) * 1024 / n, "mem_pss_base_kib": pss0,
                "mem_pss_kib": pss1, "mem_pss_per_conn_b": (pss1 - pss0) * 1024 / n,
                "mem_closed": closed, "mem_not_200": len(bad)})
    rec["ok"] = not bad and not closed
    if bad or closed:
        rec["error"] = (f"{len(bad)} answers not 200 (first {bad[:1]}), {closed} connections closed "
                        f"by the server before they were measured")
    return rec
