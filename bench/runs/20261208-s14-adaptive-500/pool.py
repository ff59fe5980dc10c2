#!/usr/bin/env python3
"""Pools the 500-connection runs of 20261208-s14-adaptive (5 repetitions) and
20261208-s14-adaptive-500 (9 repetitions): same build, same machine, same command but
--reps and --only. Prints each candidate's runs and medians; run from bench/runs."""
import json
import statistics as st

runs = []
for d in ("20261208-s14-adaptive", "20261208-s14-adaptive-500"):
    for r in json.load(open(d + "/results.json"))["runs"]:
        if r["workload"].startswith("500 conn") and r["ok"] and not r["noisy"]:
            runs.append(r)
by = {}
for r in runs:
    by.setdefault(r["candidate"], []).append(r)
base = st.median(r["srv_us"] for r in by["balanced, busy_poll_us=0"])
for c, rs in by.items():
    cpu = st.median(r["srv_us"] for r in rs)
    print(f"{c:<28} runs {len(rs):>2}  req/s {st.median(r['rps'] for r in rs) / 1000:6.1f}k  "
          f"p99 {st.median(r['p99_us'] for r in rs):7.0f} µs  server CPU {cpu:5.2f} µs/req "
          f"({cpu / base:.2f}× busy 0)  runs' CPU {min(r['srv_us'] for r in rs):.2f}–"
          f"{max(r['srv_us'] for r in rs):.2f}")
