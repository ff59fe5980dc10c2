#!/usr/bin/env python3
"""Adaptive polling figures of issue 24 side by side: ringpoll-serve's echo under the
balanced profile's busy_poll_us = "auto" against the settings it replaced, one run.

  python3 bench/tune/compare.py --bin build/bin [--reps 3] [--seconds 10] [--warmup 2]
          [--out DIR] [--tuned PROFILE.toml] [--only WORDS]

Candidates, each ringpoll-serve --mode echo with one shard pinned to the first CPU:
  balanced (auto)       the default profile, busy_poll_us = "auto" (engine/adaptive_poll.h)
  balanced, busy 0      the same with busy_poll_us = 0: the shard blocks at once (balanced
                        before "auto"; the baseline of the 50/500-connection rows)
  latency               --profile latency: a fixed 50 µs spin (the baseline of the
                        one-connection row)
  tuned                 with --tuned: the profile ringpoll-tune wrote (--profile FILE)
Rows (the client, ringpoll-load, on the second CPU):
  idle                  no client at all: the shard's CPU share over the window (%)
  1 conn × 64 B         closed loop: requests/s, p50, p99, server CPU µs/request
  50 / 500 conn × 64 B  closed loop: the same
Each row also gives the pinned core's whole busy time per request (/proc/stat). Prints
the expected duration first and Markdown tables at the end (also DIR/results.md). Numbers
only mean something on a quiet machine; nothing here asserts a figure.
"""
import os
import sys

sys.dont_write_bytecode = True
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "harness"))
from runner import measured_run  # noqa: E402
from sidebyside import Candidate, Workload, main  # noqa: E402

AUTO = "balanced (auto)"
BUSY0 = "balanced, busy_poll_us=0"
LATENCY = "latency profile"


def plan(s, args):
    a = args
    serve = os.path.join(a.bin, "ringpoll-serve")
    if not (os.access(serve, os.X_OK) and os.access(os.path.join(a.bin, "ringpoll-load"), os.X_OK)):
        sys.exit(f"tune: needs {a.bin}/ringpoll-serve and ringpoll-load")
    settings = [(AUTO, []), (BUSY0, ["--set", "engine.busy_poll_us=0"]),
                (LATENCY, ["--profile", "latency"])]
    if a.tuned:
        if not os.access(a.tuned, os.R_OK):
            sys.exit(f"tune: --tuned {a.tuned}: not readable")
        settings.append(("tuned (" + os.path.basename(a.tuned) + ")", ["--profile", a.tuned]))

    def argv(extra):
        # The profile first: --set keys after it win over it (engine.shards, engine.cpus).
        return lambda p, u: [serve, *extra, "--mode", "echo", "--listen",
                             f"127.0.0.1:{p}"] + s.ringpoll_pin()

    cands = [Candidate(name, argv(extra)) for name, extra in settings]
    load_s = a.warmup + a.seconds + 2

    def idle(s_, port, groups):
        log = s_.file("idle.out")
        win, rc = measured_run(s_.reg, ["sleep", str(a.warmup + a.seconds)], groups,
                               a.warmup + 0.3, max(0.5, a.seconds - 0.6),
                               timeout=a.warmup + a.seconds + 20, cpu=s_.cpu_cli, log_path=log,
                               name="sleep")
        g = (win or {}).get("groups", {}).get("server")
        if not g:
            return {"ok": False, "error": "no CPU window"}
        busy = win["cpu_busy_ticks"].get(s_.cpu_srv)
        return {"ok": rc == 0, "idle_cpu_pct": g["usr_pct"] + g["sys_pct"],
                "core_pct": 100.0 * busy / 100.0 / win["window_s"] if busy is not None else None,
                "other_pct": win["other_pct"], "noisy": win["other_pct"] > a.max_other}

    wls = [Workload("idle", "idle shard, no client", cands, idle, load_s, baseline=BUSY0)]
    wls.append(Workload("load", "1 conn × 64 B", cands,
                        lambda s_, p, g: s_.load(p, g, "echo", 1, 64), load_s, baseline=LATENCY))
    for c in (50, 500):
        wls.append(Workload("load", f"{c} conn × 64 B", cands,
                            lambda s_, p, g, c=c: s_.load(p, g, "echo", c, 64), load_s,
                            baseline=BUSY0))
    return wls


SECTIONS = [
    ("idle", "An idle shard (no client): CPU share", [
        ("process CPU %", "idle_cpu_pct", "us"), ("core busy %", "core_pct", "us")]),
    ("load", "Echo, 64 B, closed loop (ringpoll-load)", [
        ("req/s", "rps", "rps"), ("× base", "rps_x", "x"), ("p50", "p50_us", "lat"),
        ("× base", "p50_us_x", "x"), ("p99", "p99_us", "lat"), ("server CPU µs/req", "srv_us", "us"),
        ("× base", "srv_us_x", "x"), ("core busy µs/req", "core_us", "us")]),
]


def add_args(ap):
    ap.add_argument("--tuned", help="a profile ringpoll-tune wrote: one more candidate")


if __name__ == "__main__":
    sys.exit(main(__doc__, "tune", "Adaptive polling side by side (issue 24)", plan, SECTIONS,
                  add_args))
