"""The demo: ringpoll-serve (echo) on loopback, driven by ringpoll-load directly and then
through each proxy in turn — ringpoll-proxy on the backend that runs (io_uring completion
mode when it can start) and on epoll, haproxy (1 thread) and nginx stream (1 worker) when
installed — with live progress, a table (process CPU and the pinned server core's whole
busy time per request), and an HTML report with requests/s, p99, latency-percentile and
requests/s-over-time charts. Everything it starts is stopped by PID on every exit path."""
import html
import os
import re
import sys
import threading
import time

import clients
import report
from procs import StartError, free_port
from runner import core_per_request, measured_run, per_request
from servers import backend_args

LABELS = {"srv": "server CPU µs/req user+sys", "bk": "proxy CPU µs/req user+sys"}

# The busy-poll comparison (issue 24): ringpoll-serve with the adaptive default, with
# balanced's old fixed setting (block at once), and with the latency profile's fixed 50 µs
# spin. Two loads each: one connection closed loop (where spinning pays) and one
# connection at a low open-loop rate (where a fixed spin burns CPU between requests).
POLL_SETTINGS = [("balanced (busy_poll auto)", []),
                 ("balanced, busy_poll_us=0", ["--set", "engine.busy_poll_us=0"]),
                 ("latency (busy_poll_us=50)", ["--profile", "latency"])]
POLL_LOW_RATE = 1000  # req/s: a request every 1 ms, far longer than any spin


def busy_poll_rows(args, reg, t, backend):
    """Runs the three settings of POLL_SETTINGS; returns one dict per setting."""
    rows = []
    srv_cpu = 0 if t.pinned else None
    cli_cpu = 1 if t.pinned else None
    for name, extra in POLL_SETTINGS:
        port = free_port()
        argv = [t.serve, "--mode", "echo", "--listen", f"127.0.0.1:{port}", *extra,
                "--set", "engine.shards=1"] + (["--set", "engine.cpus=[0]"] if t.pinned else [])
        argv += backend_args(backend)
        srv = reg.start("ringpoll-serve", argv, cpu=srv_cpu,
                        log_path=os.path.join(t.tmpdir, "poll-server.log"))
        row = {"setting": name}
        try:
            reg.wait_listening(srv, port)
            for key, rate in (("closed", 0), ("low", POLL_LOW_RATE)):
                jpath = os.path.join(t.tmpdir, f"poll-{key}.json")
                largv = clients.load_argv(t.load, "echo", port, 1, 64, args.poll_duration, 0.5,
                                          jpath)
                if rate:
                    largv += ["--rate", str(rate)]
                win, _ = measured_run(reg, largv, {"server": srv.pid}, 0.6,
                                      args.poll_duration - 0.2,
                                      timeout=args.poll_duration + 20, cpu=cli_cpu,
                                      log_path=os.path.join(t.tmpdir, "poll-load.log"),
                                      name="ringpoll-load")
                res = clients.parse_load_json(jpath) or {}
                g = (win or {}).get("groups", {}).get("server")
                row[key] = {**res, "cpu_pct": g["usr_pct"] + g["sys_pct"] if g else None,
                            "cpu_us": sum(x or 0 for x in per_request(win, "server",
                                                                    res.get("rps")))
                            if res.get("rps") else None}
        except StartError as e:
            row["error"] = str(e).splitlines()[0]
        finally:
            reg.stop(srv)
        rows.append(row)
    return rows


def busy_poll_table(rows):
    """The comparison as text: one line per setting."""
    head = (f"{'setting':<28} {'1 conn req/s':>12} {'p50':>8} {'p99':>8} "
            f"{'CPU µs/req':>10} | {'at ' + str(POLL_LOW_RATE) + ' req/s: CPU %':>20} {'p99':>8}")
    lines = [head, "-" * len(head)]
    for r in rows:
        if "error" in r:
            lines.append(f"{r['setting']:<28} did not start: {r['error']}")
            continue
        c, lo = r.get("closed", {}), r.get("low", {})
        lines.append(f"{r['setting']:<28} {report.fmt_rps(c.get('rps')):>12} "
                     f"{report.fmt_us(c.get('p50_us')):>8} {report.fmt_us(c.get('p99_us')):>8} "
                     f"{_num(c.get('cpu_us')):>10} | {_num(lo.get('cpu_pct')):>20} "
                     f"{report.fmt_us(lo.get('p99_us')):>8}")
    return "\n".join(lines)


def _num(x):
    return "–" if x is None else f"{x:.1f}"


def backend_of(banner):
    """The backend a ringpoll program says it runs in its first line ("..., backend NAME, ...")."""
    m = re.search(r"\bbackend ([\w-]+)", banner or "")
    return m.group(1) if m else None


def selection_line(proc):
    """The engine's log line on stderr saying which backend runs and why, or ""."""
    try:
        with open(proc.log_path + ".err", errors="replace") as f:
            for line in f:
                if line.startswith("ringpoll: backend ") or line.startswith("ringpoll: error"):
                    return line.strip()
    except (OSError, TypeError):
        pass
    return ""


def run(args, reg, tools, outdir):
    t = tools
    srv_cpu = 0 if t.pinned else None
    cli_cpu = 1 if t.pinned else None
    notes, rows = [], []
    if not t.load:
        print(f"demo: no {t.build_dir}/bin/ringpoll-load: the build did not produce it",
              file=sys.stderr)
        return 1

    # Without --backend: io_uring completion mode when io_uring can start, else epoll (the
    # engine's automatic choice); the report names the backend the server says it runs.
    backend = args.backend
    port = free_port()
    got = t.serve_echo_argv(backend, port)
    if not got:
        print(f"demo: neither {t.build_dir}/bin/ringpoll-serve nor ringpoll-echo exists",
              file=sys.stderr)
        return 1
    argv, server_name = got
    if not t.serve:
        notes.append(f"ringpoll-serve is not built yet: {server_name} stands in for it.")
    srv = reg.start(server_name, argv, cpu=srv_cpu, log_path=os.path.join(t.tmpdir, "server.log"))
    try:
        reg.wait_listening(srv, port)
    except StartError as e:
        print(f"demo: the echo server did not start: {e}", file=sys.stderr)
        return 1
    print(f"demo: {server_name} (pid {srv.pid}) listening on 127.0.0.1:{port}"
          + (", pinned to CPU 0" if t.pinned else ""), flush=True)

    legs = [Leg("direct", "load → server", None, None)]
    if t.proxy:
        # The proxy on the backend asked for (by default the engine's own choice) and on
        # epoll, the fallback where io_uring is blocked (containers' seccomp profiles).
        for be in dict.fromkeys([backend, "epoll"]):
            name = "ringpoll-proxy" + ("" if be == "auto" else f" {be}")
            legs.append(Leg(f"through {name}", f"load → {name} → server", name,
                            lambda p, b, be=be: [
                                t.proxy, "--listen", f"127.0.0.1:{p}", "--upstream",
                                f"127.0.0.1:{b}", "--set", "engine.shards=1"]
                            + (["--set", "engine.cpus=[0]"] if t.pinned else [])
                            + backend_args(be)))
    else:
        notes.append(f"SKIPPED: the runs through ringpoll-proxy: no {t.build_dir}/bin/"
                     f"ringpoll-proxy yet.")
    if t.haproxy:
        legs.append(Leg("through haproxy (1 thread)", "load → haproxy → server",
                        "haproxy (1 thread)",
                        lambda p, b: t.haproxy_conf(p, b, f"haproxy-{p}")))
    else:
        notes.append("SKIPPED: haproxy is not installed (./ringpoll.sh demo installs it).")
    if t.nginx_stream:
        legs.append(Leg("through nginx stream (1 worker)", "load → nginx stream → server",
                        "nginx stream (1 worker)",
                        lambda p, b: t.nginx_stream_conf(p, b, f"nginx-stream-{p}")))
    else:
        notes.append("SKIPPED: nginx stream: nginx or libnginx-mod-stream is not installed "
                     "(./ringpoll.sh demo installs them).")
    size = f"{args.size} B" if args.size < 1024 else f"{args.size // 1024} KiB"
    curves, timelines, banners = [], [], {}
    for leg in legs:
        groups, target, proxy = {"server": srv.pid}, port, None
        if leg.argv_fn:
            target = free_port()
            proxy = reg.start(leg.proxy, leg.argv_fn(target, port), cpu=srv_cpu,
                              log_path=os.path.join(t.tmpdir, f"proxy-{target}.log"))
            try:
                reg.wait_listening(proxy, target)
            except StartError as e:
                print(f"demo: {leg.proxy} did not start: {e}", file=sys.stderr)
                return 1
            groups["proxy"] = proxy.pid
            print(f"\ndemo: {leg.proxy} (pid {proxy.pid}) on 127.0.0.1:{target} -> "
                  f"127.0.0.1:{port}", flush=True)
        print(f"\n== {leg.name}: ringpoll-load, {args.connections} connections × {size}, "
              f"{args.warmup} s warm-up + {args.duration} s", flush=True)
        jpath = os.path.join(t.tmpdir, f"load-{len(rows)}.json")
        cli_log = os.path.join(t.tmpdir, f"load-{len(rows)}.out")
        argv = clients.load_argv(t.load, "echo", target, args.connections, args.size,
                                 args.duration, args.warmup, jpath)
        # The client's one-line-a-second progress goes to a file (the requests/s-over-time
        # chart) and, as it comes, to the terminal: the live view.
        stop = threading.Event()
        tail = threading.Thread(target=_tail, args=(cli_log, stop), daemon=True)
        tail.start()
        try:
            win, rc = measured_run(reg, argv, groups, args.warmup + 0.3, args.duration - 0.6,
                                   timeout=args.warmup + args.duration + 20, cpu=cli_cpu,
                                   log_path=cli_log, name="ringpoll-load", core=srv_cpu)
        finally:
            stop.set()
            tail.join(timeout=2)
        res = clients.parse_load_json(jpath)
        for p, what in ((srv, server_name), (proxy, leg.proxy)):
            if p and not p.alive():
                print(f"demo: {what} exited during the run (status {p.popen.returncode}):\n"
                      f"{p.log_tail()}", file=sys.stderr)
                return 1
        if proxy:
            reg.stop(proxy)  # its first output line (the banner) is flushed by now
            banners[leg.proxy] = proxy.first_line()
        if not res or not res.get("rps"):
            print(f"demo: the load run {leg.name} produced no result (ringpoll-load exit {rc})",
                  file=sys.stderr)
            return 1
        row = {"section": "demo", "workload": f"{args.connections} conn × {size}",
               "server": leg.path, "runs": 1, "used": 1, **res}
        row["srv_usr_us"], row["srv_sys_us"] = per_request(win, "server", res["rps"])
        if proxy:
            row["bk_usr_us"], row["bk_sys_us"] = per_request(win, "proxy", res["rps"])
        row["core_us"] = core_per_request(win, res["rps"])
        if win:
            row["other_pct"] = win["other_pct"]
            if win["other_pct"] > args.max_other:
                row["noisy"] = True
        if res.get("errors"):
            row["note"] = f"{res['errors']} errors"
        rows.append(row)
        curves.append((leg.path, res))
        try:
            with open(cli_log, errors="replace") as f:
                timelines.append((leg.path, clients.parse_load_progress(f.read())))
        except OSError:
            timelines.append((leg.path, []))

    # Stopped here (not only at exit) so that its first output line is flushed.
    reg.stop(srv)
    poll_rows = []
    if t.serve and args.poll_duration > 0:
        print(f"\n== busy poll: the adaptive default against fixed settings, ringpoll-load 1 "
              f"connection × 64 B, closed loop and at {POLL_LOW_RATE} req/s, "
              f"{args.poll_duration:g} s each", flush=True)
        poll_rows = busy_poll_rows(args, reg, t, backend)
    banner = srv.first_line()
    pbanner = banners.get("ringpoll-proxy" + ("" if backend == "auto" else f" {backend}"), "")
    used = backend_of(banner)
    if used:
        if backend != "auto":
            how = f"--backend {backend}"
        elif t.serve:
            how = "chosen automatically: io_uring completion mode, else epoll"
        else:
            how = "the ringpoll-echo stand-in, pinned"
        used_note = f"server backend: {used} ({how})"
        if backend_of(pbanner):
            used_note += f"; proxy backend: {backend_of(pbanner)}"
        notes.insert(0, used_note)
    if backend == "auto":
        why = selection_line(srv)
        if why and "epoll" in why.split(":", 2)[1]:
            notes.append(f"server: {why}")
    print("\n" + report.text_table(rows, LABELS), flush=True)
    if poll_rows:
        print("\n" + busy_poll_table(poll_rows), flush=True)
    if banner:
        print(f"server: {banner}")
    for name, b in banners.items():
        if b:
            print(f"{name}: {b}")
    for n in notes:
        print(f"note: {n}")
    for r in rows:
        if r.get("noisy"):
            print(f"note: {r['server']}: other processes used {r['other_pct']:.0f}% of a core "
                  f"during the run; the figures are noisy")

    os.makedirs(outdir, exist_ok=True)
    svgs = list(report.charts(rows, [("demo", "ringpoll demo")]).values())
    svgs.append(report.percentile_chart("Latency percentiles", curves))
    svgs.append(report.timeline_chart("Requests/s over time", timelines))
    e = html.escape
    intro = [f"<p>{e(time.strftime('%Y-%m-%d %H:%M:%S %Z'))}, {os.cpu_count()} CPU. "
             f"{e(server_name)} on 127.0.0.1:{port}"
             + (f"; in front of it in turn: {', '.join(l.proxy for l in legs if l.proxy)}"
                if len(legs) > 1 else "")
             + (". Server and proxy pinned to CPU 0, ringpoll-load to CPU 1." if t.pinned else ".")
             + f" ringpoll-load: closed loop, {args.connections} connections, {e(size)} echo, "
             f"{args.warmup} s warm-up, {args.duration} s measured. CPU µs per request from "
             f"/proc/PID/stat over the measured window; server core µs/req (all): CPU 0's whole "
             f"busy time from /proc/stat over the same window (the server, the proxy and the "
             f"kernel's loopback work there).</p>"]
    if banner:
        intro.append(f"<p>Server: <code>{e(banner)}</code></p>")
    for name, b in banners.items():
        if b:
            intro.append(f"<p>{e(name)}: <code>{e(b)}</code></p>")
    intro += [f"<p><b>{e(n)}</b></p>" for n in notes]
    if poll_rows:
        intro.append("<h2>Busy poll: adaptive against fixed</h2><pre>"
                     + e(busy_poll_table(poll_rows)) + "</pre>")
    page = report.html_page("ringpoll demo", "\n".join(intro), rows, svgs, LABELS)
    path = os.path.abspath(os.path.join(outdir, "report.html"))
    with open(path, "w") as f:
        f.write(page)
    print(f"\nreport: {path}")
    if not t.proxy:
        print("demo incomplete: the run through ringpoll-proxy was skipped (not built yet)",
              file=sys.stderr)
        return 3
    return 0


class Leg:
    """One run of the demo: straight to the server, or through one proxy (argv_fn(port,
    server_port) -> its command line)."""

    def __init__(self, name, path, proxy, argv_fn):
        self.name = name
        self.path = path
        self.proxy = proxy
        self.argv_fn = argv_fn


def _tail(path, stop):
    """Copies what the client writes to `path` to the terminal as it comes, until stop."""
    pos = 0
    while True:
        done = stop.is_set()
        try:
            with open(path, errors="replace") as f:
                f.seek(pos)
                chunk = f.read()
                pos = f.tell()
        except OSError:
            chunk = ""
        if chunk:
            sys.stdout.write(chunk)
            sys.stdout.flush()
        if done:
            return
        time.sleep(0.2)
