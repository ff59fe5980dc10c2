"""The demo: ringpoll-serve (echo) and ringpoll-proxy in front of it on loopback, driven by
ringpoll-load directly and through the proxy, with live progress, a table and an HTML
report. Everything it starts is stopped by PID on every exit path."""
import html
import os
import re
import sys
import time

import clients
import report
from procs import StartError, free_port
from runner import measured_run, per_request
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

    proxy = pport = None
    if t.proxy:
        pport = free_port()
        pargv = [t.proxy, "--listen", f"127.0.0.1:{pport}", "--upstream", f"127.0.0.1:{port}",
                 "--set", "engine.shards=1"] + (["--set", "engine.cpus=[0]"] if t.pinned else [])
        pargv += backend_args(backend)
        proxy = reg.start("ringpoll-proxy", pargv, cpu=srv_cpu,
                          log_path=os.path.join(t.tmpdir, "proxy.log"))
        try:
            reg.wait_listening(proxy, pport)
        except StartError as e:
            print(f"demo: ringpoll-proxy did not start: {e}", file=sys.stderr)
            return 1
        print(f"demo: ringpoll-proxy (pid {proxy.pid}) on 127.0.0.1:{pport} -> 127.0.0.1:{port}",
              flush=True)
    else:
        notes.append(f"SKIPPED: the run through the proxy: no {t.build_dir}/bin/ringpoll-proxy "
                     f"yet (issue 5).")
        print(f"demo: {notes[-1]}", flush=True)

    legs = [("direct", port, {"server": srv.pid}, "load → server")]
    if proxy:
        legs.append(("through ringpoll-proxy", pport, {"server": srv.pid, "proxy": proxy.pid},
                     "load → ringpoll-proxy → server"))
    size = f"{args.size} B" if args.size < 1024 else f"{args.size // 1024} KiB"
    for leg, target, groups, path in legs:
        print(f"\n== {leg}: ringpoll-load, {args.connections} connections × {size}, "
              f"{args.warmup} s warm-up + {args.duration} s", flush=True)
        jpath = os.path.join(t.tmpdir, f"load-{len(rows)}.json")
        argv = clients.load_argv(t.load, "echo", target, args.connections, args.size,
                                 args.duration, args.warmup, jpath)
        # The client writes to the terminal: its progress line is the live view.
        win, rc = measured_run(reg, argv, groups, args.warmup + 0.3, args.duration - 0.6,
                               timeout=args.warmup + args.duration + 20, cpu=cli_cpu,
                               inherit_output=True, name="ringpoll-load")
        res = clients.parse_load_json(jpath)
        for p, what in ((srv, server_name), (proxy, "ringpoll-proxy")):
            if p and not p.alive():
                print(f"demo: {what} exited during the run (status {p.popen.returncode}):\n"
                      f"{p.log_tail()}", file=sys.stderr)
                return 1
        if not res or not res.get("rps"):
            print(f"demo: the load run {leg} produced no result (ringpoll-load exit {rc})",
                  file=sys.stderr)
            return 1
        row = {"section": "demo", "workload": f"{args.connections} conn × {size}",
               "server": path, "runs": 1, "used": 1, **res}
        row["srv_usr_us"], row["srv_sys_us"] = per_request(win, "server", res["rps"])
        if "proxy" in groups:
            row["bk_usr_us"], row["bk_sys_us"] = per_request(win, "proxy", res["rps"])
        if win:
            row["other_pct"] = win["other_pct"]
            if win["other_pct"] > args.max_other:
                row["noisy"] = True
        if res.get("errors"):
            row["note"] = f"{res['errors']} errors"
        rows.append(row)

    # Stopped here (not only at exit) so that their first output lines are flushed.
    if proxy:
        reg.stop(proxy)
    reg.stop(srv)
    poll_rows = []
    if t.serve and args.poll_duration > 0:
        print(f"\n== busy poll: the adaptive default against fixed settings, ringpoll-load 1 "
              f"connection × 64 B, closed loop and at {POLL_LOW_RATE} req/s, "
              f"{args.poll_duration:g} s each", flush=True)
        poll_rows = busy_poll_rows(args, reg, t, backend)
    banner = srv.first_line()
    pbanner = proxy.first_line() if proxy else ""
    used = backend_of(banner)
    if used:
        if backend != "auto":
            how = f"--backend {backend}"
        elif t.serve:
            how = "chosen automatically: io_uring completion mode, else epoll"
        else:
            how = "the ringpoll-echo stand-in, pinned"
        used_note = f"server backend: {used} ({how})"
        if proxy and backend_of(pbanner):
            used_note += f"; proxy backend: {backend_of(pbanner)}"
        notes.insert(0, used_note)
    if backend == "auto":
        for p, what in ((srv, "server"), (proxy, "proxy")):
            why = selection_line(p) if p else ""
            if why and "epoll" in why.split(":", 2)[1]:
                notes.append(f"{what}: {why}")
    print("\n" + report.text_table(rows, LABELS), flush=True)
    if poll_rows:
        print("\n" + busy_poll_table(poll_rows), flush=True)
    if banner:
        print(f"server: {banner}")
    if pbanner:
        print(f"proxy:  {pbanner}")
    for n in notes:
        print(f"note: {n}")
    for r in rows:
        if r.get("noisy"):
            print(f"note: {r['server']}: other processes used {r['other_pct']:.0f}% of a core "
                  f"during the run; the figures are noisy")

    os.makedirs(outdir, exist_ok=True)
    svgs = list(report.charts(rows, [("demo", "ringpoll demo")]).values())
    e = html.escape
    intro = [f"<p>{e(time.strftime('%Y-%m-%d %H:%M:%S %Z'))}, {os.cpu_count()} CPU. "
             f"{e(server_name)} on 127.0.0.1:{port}"
             + (f", ringpoll-proxy on 127.0.0.1:{pport} in front of it" if proxy else "")
             + (". Server and proxy pinned to CPU 0, ringpoll-load to CPU 1." if t.pinned else ".")
             + f" ringpoll-load: closed loop, {args.connections} connections, {e(size)} echo, "
             f"{args.warmup} s warm-up, {args.duration} s measured. CPU µs per request from "
             f"/proc/PID/stat over the measured window.</p>"]
    if banner:
        intro.append(f"<p>Server: <code>{e(banner)}</code></p>")
    if pbanner:
        intro.append(f"<p>Proxy: <code>{e(pbanner)}</code></p>")
    intro += [f"<p><b>{e(n)}</b></p>" for n in notes]
    if poll_rows:
        intro.append("<h2>Busy poll: adaptive against fixed</h2><pre>"
                     + e(busy_poll_table(poll_rows)) + "</pre>")
    page = report.html_page("ringpoll demo", "\n".join(intro), rows, svgs, LABELS)
    path = os.path.abspath(os.path.join(outdir, "report.html"))
    with open(path, "w") as f:
        f.write(page)
    print(f"\nreport: {path}")
    if not proxy:
        print("demo incomplete: the run through ringpoll-proxy was skipped (not built yet)",
              file=sys.stderr)
        return 3
    return 0
