"""ringpoll's bench harness (python3, standard library only).

  python3 bench/harness bench [--quick] [--reps N] [--out DIR] ...   the side-by-side matrix
  python3 bench/harness demo [--duration S] ...                      serve + proxy + load, report
  python3 bench/harness render DIR                                   redo results.md/SVG from DIR/results.json

Usually run by ./ringpoll.sh bench / ./ringpoll.sh demo, which install and build first.
See bench/README.md.
"""
import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time

sys.dont_write_bytecode = True  # leave no __pycache__ in the checkout
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import bench  # noqa: E402
import demo  # noqa: E402
from procs import Registry, install_signal_handlers, run_guarded  # noqa: E402
from servers import Tools  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def build_peers(src, tmpdir):
    """Build the peers in a scratch copy (the shared folder may be read-only) and return
    the bin folder, or None with the reason."""
    if not src or not os.path.isdir(src):
        return None, f"no peers folder at {src}"
    work = os.path.join(tmpdir, "peers")
    shutil.copytree(src, work, symlinks=True)
    for dirpath, dirnames, filenames in os.walk(work):
        for n in dirnames + filenames:
            p = os.path.join(dirpath, n)
            if not os.path.islink(p):
                os.chmod(p, os.stat(p).st_mode | 0o200)
    log = os.path.join(tmpdir, "peers-build.log")
    env = dict(os.environ, GOCACHE=os.environ.get("GOCACHE", "/tmp/ringpoll-bench-gocache"))
    with open(log, "w") as f:
        # build.sh stops at the first failure (Go missing: after the C peers); what it built
        # is used, what it did not is reported as skipped.
        try:
            subprocess.run(["bash", os.path.join(work, "build.sh")], cwd=work, stdout=f,
                           stderr=subprocess.STDOUT, timeout=600, stdin=subprocess.DEVNULL)
        except subprocess.TimeoutExpired:
            f.write("build.sh: timed out after 600 s\n")
    return os.path.join(work, "bin"), None


def main():
    ap = argparse.ArgumentParser(prog="harness", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    b = sub.add_parser("bench", help="the side-by-side matrix")
    b.add_argument("--quick", action="store_true", help="a subset that takes about 2 minutes")
    b.add_argument("--reps", type=int, help="repetitions (default 3; --quick: 1)")
    b.add_argument("--duration", type=float, help="measured seconds per run (5; --quick: 2)")
    b.add_argument("--warmup", type=float, help="warm-up seconds per run (2; --quick: 1)")
    b.add_argument("--max-other", type=float, default=10.0,
                   help="%% of one core used by other processes above which a run is noisy (10)")
    b.add_argument("--retries", type=int, help="extra tries of a noisy run (2; --quick: 1)")
    b.add_argument("--quiet-budget", type=float, default=120.0,
                   help="seconds in all spent waiting for a quiet machine before retries (120)")
    b.add_argument("--filter", nargs="+", metavar="WORD",
                   help='run only the rows whose "workload / server" holds every WORD, '
                        'e.g. --filter proxy "500 conn"')
    b.add_argument("--microbench", help="the micro-benchmarks' JSON, named in the results")
    d = sub.add_parser("demo", help="ringpoll-serve + ringpoll-proxy + ringpoll-load, with a report")
    d.add_argument("--duration", type=float, default=10.0, help="measured seconds per leg (10)")
    d.add_argument("--warmup", type=float, default=1.0)
    d.add_argument("--connections", type=int, default=50)
    d.add_argument("--size", type=int, default=64)
    d.add_argument("--backend", default="auto", choices=["auto", "io_uring-completion", "epoll"],
                   help="auto (default): io_uring completion mode, epoll when io_uring cannot "
                        "start; the others pin that backend")
    d.add_argument("--max-other", type=float, default=10.0)
    d.add_argument("--poll-duration", type=float, default=2.0,
                   help="seconds per run of the busy-poll comparison (2; 0: leave it out)")
    for p in (b, d):
        p.add_argument("--out", help="results folder (default results/<stamp> or results/demo-<stamp>)")
        p.add_argument("--build", default=os.path.join(ROOT, "build"), help="build folder")
        p.add_argument("--no-pin", action="store_true", help="do not pin with taskset")
    b.add_argument("--peers", default=os.environ.get("RINGPOLL_PEERS",
                                                     os.path.join(ROOT, "..", "shared", "peers")))
    r = sub.add_parser("render", help="rewrite results.md and the SVG charts from results.json")
    r.add_argument("dir")
    args = ap.parse_args()

    if args.cmd == "render":
        with open(os.path.join(args.dir, "results.json")) as f:
            j = json.load(f)
        bench.write_outputs(args.dir, j["meta"], j["runs"])
        print(f"rewrote {args.dir}/results.md and its charts")
        return 0

    stamp = time.strftime("%Y%m%d-%H%M%S")
    if args.cmd == "bench":
        if args.reps is not None and args.reps < 1:
            ap.error("--reps must be at least 1")
        q = args.quick
        args.reps = args.reps or (1 if q else 3)
        args.duration = args.duration or (2.0 if q else 5.0)
        args.warmup = args.warmup if args.warmup is not None else (1.0 if q else 2.0)
        args.retries = args.retries if args.retries is not None else (1 if q else 2)
        if args.duration < 1.5:
            ap.error("--duration must be at least 1.5 s (the CPU window sits inside it)")
        outdir = args.out or os.path.join(ROOT, "results", stamp)
    else:
        if args.duration < 1.5:
            ap.error("--duration must be at least 1.5 s")
        if args.poll_duration and args.poll_duration < 1:
            ap.error("--poll-duration must be 0 or at least 1 s")
        outdir = args.out or os.path.join(ROOT, "results", f"demo-{stamp}")
    os.makedirs(outdir, exist_ok=True)

    # 500 connections through a proxy are 1,000+ descriptors: lift the soft limit for
    # everything started from here.
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = hard if hard == resource.RLIM_INFINITY else min(hard, 65536)
    if soft != resource.RLIM_INFINITY and soft < want:
        resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))

    pinned = (os.cpu_count() or 1) >= 2 and not args.no_pin and shutil.which("taskset")
    if not pinned:
        print("harness: not pinning (fewer than 2 CPUs, no taskset, or --no-pin): server and "
              "client share the CPUs as the scheduler likes", flush=True)
    install_signal_handlers()
    reg = Registry()
    tmpdir = tempfile.mkdtemp(prefix="ringpoll-harness.")
    def go():
        peers_bin = None
        if args.cmd == "bench":
            print(f"== building the peers from {args.peers} (in a scratch copy)", flush=True)
            peers_bin, why = build_peers(args.peers, tmpdir)
            if why:
                print(f"   SKIPPED: the peers ({why}): c-epoll-echo, c-uring-echo, go-echo and "
                      f"go-http rows are left out; ringpoll, nginx and haproxy still run", flush=True)
            elif os.path.exists(os.path.join(tmpdir, "peers-build.log")):
                shutil.copy(os.path.join(tmpdir, "peers-build.log"), outdir)
        tools = Tools(args.build, peers_bin, tmpdir, bool(pinned))
        if args.cmd == "bench":
            if not tools.load:
                print(f"bench: no {args.build}/bin/ringpoll-load: nothing can drive the servers",
                      file=sys.stderr)
                return 1
            return bench.run(args, reg, tools, outdir)
        return demo.run(args, reg, tools, outdir)
    return run_guarded("harness", go, reg, tmpdir)


if __name__ == "__main__":
    sys.exit(main())
