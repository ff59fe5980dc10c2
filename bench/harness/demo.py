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
