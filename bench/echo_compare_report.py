#!/usr/bin/env python3
"""Helpers of bench/echo-compare.sh (one run's figures, and the final report).

  echo_compare_report.py run RUNS.jsonl SNAP_A SNAP_B CLIENT_OUT key=value...
      -> appends one JSON object to RUNS.jsonl (the run's key=values, echo-load's RESULT
         fields, the CPU split over the window between the two snapshots), prints one
         line, and exits 3 when the run was noisy
  echo_compare_report.py summarize RUNS.jsonl OUTDIR HEADER.md
      -> OUTDIR/results.json and OUTDIR/results.md (medians per workload and server)

A snapshot (written by the shell script) has the lines
  t NS                      CLOCK_REALTIME in ns
  cpu / cpu0 / cpu1 ...     the /proc/stat lines
  srv UTIME STIME           /proc/PID/stat ticks of the server
  cli UTIME STIME           /proc/PID/stat ticks of echo-load
CPU percentages are of ONE core; ticks are USER_HZ (getconf CLK_TCK).
"""
import json
import os
import statistics
import sys

HZ = os.sysconf("SC_CLK_TCK")
# Plain-C peers: the baselines ringpoll is measured against.
C_BASELINES = ("c-epoll-echo", "c-uring-echo", "c-uring-echo:defer")


def read_snap(path):
    snap = {"cpus": {}}
    with open(path) as f:
        for line in f:
            fields = line.split()
            if not fields:
                continue
            key = fields[0]
            if key == "t":
                snap["t"] = int(fields[1])
            elif key.startswith("cpu"):
                snap["cpus"][key] = [int(x) for x in fields[1:]]
            elif key in ("srv", "cli"):
                snap[key] = (int(fields[1]), int(fields[2]))
    return snap


def busy_ticks(v):
    # user nice system idle iowait irq softirq steal ...: everything but idle, iowait, steal
    return v[0] + v[1] + v[2] + v[5] + v[6]


def cpu_split(a, b):
    secs = (b["t"] - a["t"]) / 1e9
    core_ticks = secs * HZ  # ticks one fully busy core accumulates over the window

    def pct(ticks):
        return 100.0 * ticks / core_ticks if core_ticks > 0 else 0.0

    su = b["srv"][0] - a["srv"][0]
    ss = b["srv"][1] - a["srv"][1]
    cu = b["cli"][0] - a["cli"][0]
    cs = b["cli"][1] - a["cli"][1]
    box = busy_ticks(b["cpus"]["cpu"]) - busy_ticks(a["cpus"]["cpu"])
    out = {
        "window_s": round(secs, 4),
        "srv_usr_ticks": su,
        "srv_sys_ticks": ss,
        "srv_usr_pct": round(pct(su), 1),
        "srv_sys_pct": round(pct(ss), 1),
        "cli_pct": round(pct(cu + cs), 1),
        # Foreign load: whatever the box burnt that neither our server nor our client did
        # (other tenants, builds, kworkers, ksoftirqd).
        "other_pct": round(max(0.0, pct(box - su - ss - cu - cs)), 1),
    }
    c0a, c0b = a["cpus"].get("cpu0"), b["cpus"].get("cpu0")
    if c0a and c0b:
        out["cpu0_softirq_pct"] = round(pct(c0b[6] - c0a[6]), 1)
    return out


def parse_result(path):
    res = {}
    with open(path, errors="replace") as f:
        for line in f:
            if line.startswith("RESULT "):
                for kv in line.split()[1:]:
                    k, _, v = kv.partition("=")
                    try:
                        res[k] = float(v)
                    except ValueError:
                        res[k] = v
    return res


def cmd_run(argv):
    runs_path, snap_a, snap_b, client_out = argv[:4]
    rec = {}
    for kv in argv[4:]:
        k, _, v = kv.partition("=")
        rec[k] = int(v) if v.lstrip("-").isdigit() else v
    res = parse_result(client_out)
    rec["ok"] = bool(res) and res.get("errors", 1) == 0 and res.get("rps", 0) > 0
    for k in ("rps", "p50_us", "p99_us", "p999_us", "mean_us", "errors"):
        rec[k] = res.get(k)
    try:
        rec.update(cpu_split(read_snap(snap_a), read_snap(snap_b)))
    except (OSError, KeyError, ValueError) as e:
        rec["ok"] = False
        rec["cpu_error"] = str(e)
    if rec["ok"] and rec.get("window_s", 0) > 0:
        reqs = rec["rps"] * rec["window_s"]  # requests in our CPU window at echo-load's rate
        rec["srv_usr_us_req"] = round(rec["srv_usr_ticks"] * 1e6 / HZ / reqs, 3)
        rec["srv_sys_us_req"] = round(rec["srv_sys_ticks"] * 1e6 / HZ / reqs, 3)
        rec["srv_total_us_req"] = round(rec["srv_usr_us_req"] + rec["srv_sys_us_req"], 3)
    max_other = float(rec.get("max_other", 15))
    rec["noisy"] = bool(rec.get("other_pct", 0) > max_other)
    with open(runs_path, "a") as f:
        f.write(json.dumps(rec, sort_keys=True) + "\n")

    def g(k, nd=2):
        return "-" if rec.get(k) is None else f"{rec[k]:.{nd}f}"

    print(f"   {rec['server']:<22} rep{rec['rep']} try{rec['try']}: rps={g('rps', 0)} "
          f"p50={g('p50_us', 0)} p99={g('p99_us', 0)} us/req usr={g('srv_usr_us_req')} "
          f"sys={g('srv_sys_us_req')} srv={g('srv_usr_pct', 0)}+{g('srv_sys_pct', 0)}% "
          f"cli={g('cli_pct', 0)}% other={g('other_pct', 0)}%"
          + (" NOISY" if rec["noisy"] else "") + ("" if rec["ok"] else " FAILED"),
          flush=True)
    sys.exit(3 if rec["noisy"] and rec["ok"] else 0)


def median(xs):
    xs = [x for x in xs if x is not None]
    return statistics.median(xs) if xs else None


def fmt_rps(x):
    return "-" if x is None else (f"{x / 1000:.1f}k" if x >= 1000 else f"{x:.0f}")


def fmt(x, nd=2):
    return "-" if x is None else f"{x:.{nd}f}"


def fmt_ratio(x):
    return "-" if x is None else f"{x:.2f}x"


def cmd_summarize(argv):
    runs_path, outdir, header = argv[:3]
    runs = []
    with open(runs_path) as f:
        for line in f:
            line = line.strip()
            if line:
                runs.append(json.loads(line))
    order_servers, order_loads = [], []
    groups = {}
    for r in runs:
        load = (r["conns"], r["msg"])
        if r["server"] not in order_servers:
            order_servers.append(r["server"])
        if load not in order_loads:
            order_loads.append(load)
        groups.setdefault((load, r["server"]), []).append(r)
    order_loads.sort()

    rows = []
    for load in order_loads:
        for srv in order_servers:
            rs = groups.get((load, srv))
            if not rs:
                continue
            good = [r for r in rs if r["ok"]]
            clean = [r for r in good if not r["noisy"]]
            used = clean or good  # noisy runs count only when no clean run exists
            row = {
                "conns": load[0],
                "msg": load[1],
                "server": srv,
                "runs": len(rs),
                "used": len(used),
                "clean": bool(clean),
                "failed": len(rs) - len(good),
            }
            for k in ("rps", "p50_us", "p99_us", "srv_usr_us_req", "srv_sys_us_req",
                      "srv_total_us_req", "srv_usr_pct", "srv_sys_pct", "cli_pct", "other_pct"):
                row[k] = median([r.get(k) for r in used])
            rpss = [r["rps"] for r in used]
            row["rps_spread_pct"] = (
                round(100 * (max(rpss) - min(rpss)) / row["rps"], 1) if len(rpss) > 1 else None)
            rows.append(row)

    # Ratios against the best plain-C peer at the same workload, metric by metric: the
    # highest req/s, the lowest p99, the lowest server CPU per request.
    for load in order_loads:
        base = [r for r in rows if (r["conns"], r["msg"]) == load and r["server"] in C_BASELINES
                and r["rps"] is not None]
        best_rps = max((r["rps"] for r in base), default=None)
        best_p99 = min((r["p99_us"] for r in base if r["p99_us"]), default=None)
        best_cpu = min((r["srv_total_us_req"] for r in base if r["srv_total_us_req"]),
                       default=None)
        for r in rows:
            if (r["conns"], r["msg"]) != load:
                continue
            r["rps_vs_best_c"] = r["rps"] / best_rps if best_rps and r["rps"] else None
            r["p99_vs_best_c"] = r["p99_us"] / best_p99 if best_p99 and r["p99_us"] else None
            r["cpu_vs_best_c"] = (r["srv_total_us_req"] / best_cpu
                                  if best_cpu and r["srv_total_us_req"] else None)

    with open(os.path.join(outdir, "results.json"), "w") as f:
        json.dump({"runs": runs, "medians": rows}, f, indent=1, sort_keys=True)

    lines = [open(header).read().rstrip(), ""]
    lines.append("| C | msg B | server | req/s | spread | p50 µs | p99 µs | srv usr µs/req | "
                 "srv sys µs/req | srv total µs/req | req/s vs best C | p99 vs best C | "
                 "µs/req vs best C | srv CPU% usr/sys | client CPU% | other% | used/runs |")
    lines.append("|" + "---|" * 17)
    for r in rows:
        note = "" if r["clean"] else " (noisy)"
        lines.append(
            f"| {r['conns']} | {r['msg']} | {r['server']} | {fmt_rps(r['rps'])} | "
            f"{'-' if r['rps_spread_pct'] is None else '±%.0f%%' % (r['rps_spread_pct'] / 2)} | "
            f"{fmt(r['p50_us'], 0)} | {fmt(r['p99_us'], 0)} | {fmt(r['srv_usr_us_req'])} | "
            f"{fmt(r['srv_sys_us_req'])} | {fmt(r['srv_total_us_req'])} | "
            f"{fmt_ratio(r['rps_vs_best_c'])} | {fmt_ratio(r['p99_vs_best_c'])} | "
            f"{fmt_ratio(r['cpu_vs_best_c'])} | "
            f"{fmt(r['srv_usr_pct'], 0)}/{fmt(r['srv_sys_pct'], 0)} | {fmt(r['cli_pct'], 0)} | "
            f"{fmt(r['other_pct'], 0)} | {r['used']}/{r['runs']}{note} |")
    failed = [r for r in runs if not r["ok"]]
    noisy = [r for r in runs if r["ok"] and r["noisy"]]
    lines.append("")
    lines.append(f"Runs: {len(runs)} in all; {len(noisy)} noisy (other% above the limit), "
                 f"{len(failed)} failed (no RESULT line, or echo-load reported errors).")
    for r in failed:
        lines.append(f"- failed: {r['server']} C={r['conns']} M={r['msg']} rep {r['rep']} "
                     f"try {r['try']}: rc={r.get('rc')} errors={r.get('errors')}")
    with open(os.path.join(outdir, "results.md"), "w") as f:
        f.write("\n".join(lines) + "\n")
    print("\n".join(lines[lines.index("") + 1:]))


def main():
    if len(sys.argv) < 2 or sys.argv[1] not in ("run", "summarize"):
        sys.exit(__doc__)
    if sys.argv[1] == "run":
        cmd_run(sys.argv[2:])
    else:
        cmd_summarize(sys.argv[2:])


if __name__ == "__main__":
    main()
