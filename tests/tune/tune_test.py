"""ringpoll-tune end to end on a small budget against ringpoll-serve (ctest: Tune.*).

  python3 tune_test.py --tune apps/tune/ringpoll-tune --bin build/bin

1. A run interrupted with SIGINT after its third measurement exits 130 and leaves the
   state file holding those measurements.
2. The same command again resumes: it says so, keeps the saved measurements unchanged,
   measures none of them again, and finishes within the budget.
3. The profile it writes loads (ringpoll-serve --profile FILE --print-config, exit 0, and
   the keys it set are in the printed config); its comments hold the table of what was
   measured (a row for every candidate), the noise, the verdict and the command; the HTML
   report has inline SVG plots.
4. Bad arguments and a state file of another run exit 2 naming the flag or the file.
5. --verify measures the written profile again and compares with its recorded figure:
   it prints both; a copy whose recorded figure is 100 times off is reported as not
   reproducing (exit 1); a TOML file without the recorded lines is refused (exit 2).
Structure only: no figure of this machine is asserted (it is shared), so whether the
profile itself reproduces here may go either way (exit 0 or 1).
"""
import argparse
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
import tomllib


def check(cond, msg):
    if not cond:
        print(f"FAIL: {msg}", flush=True)
        sys.exit(1)


def measured_ids(text):
    return re.findall(r"measured (\S+#\d+ .*?): ", text)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--tune", required=True)
    p.add_argument("--bin", required=True)
    a = p.parse_args()
    with tempfile.TemporaryDirectory(prefix="ringpoll-tune-test-") as d:
        out = os.path.join(d, "tuned.toml")
        state = os.path.join(d, "tuned.state.json")
        # A budget that holds the baseline and part of one knob's step, with two knobs
        # named so that the descent has something to do.
        cmd = [sys.executable, a.tune, "--bin", a.bin, "--workload", "echo", "--connections", "2",
               "--size", "64", "--budget", "20", "--run-seconds", "0.4", "--warmup", "0.2",
               "--repeats", "2", "--knobs", "busy_poll,fairness_batch", "--out", out]

        # 1. Interrupted after the third measurement.
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, encoding="utf-8", errors="replace")
        first = []
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            line = proc.stdout.readline()
            if not line:
                break
            print("run 1:", line, end="", flush=True)
            first.append(line)
            if len(measured_ids("".join(first))) == 3:
                proc.send_signal(signal.SIGINT)
                break
        rest, _ = proc.communicate(timeout=60)
        print("run 1:", rest, flush=True)
        text1 = "".join(first) + rest
        check(proc.returncode == 130, f"an interrupted run exits 130, got {proc.returncode}")
        check("run the same command to continue" in text1, "the interrupted run says how to go on")
        ids1 = measured_ids(text1)
        check(len(ids1) == 3, f"three measurements before the interrupt, got {ids1}")
        check(os.path.exists(state), "the state file is left for the rerun")
        with open(state) as f:
            saved = json.load(f)["measurements"]
        check(sorted(saved) == sorted(ids1), f"the state holds what was measured: {sorted(saved)}")
        check(not os.path.exists(out), "no profile is written by an interrupted run")

        # 2. Resumed.
        r = subprocess.run(cmd, capture_output=True, text=True, encoding="utf-8", errors="replace", timeout=180)
        print("run 2:", r.stdout, r.stderr, flush=True)
        check(r.returncode == 0, f"the rerun finishes, exit {r.returncode}")
        check("resuming from" in r.stdout and "3 measurements kept" in r.stdout,
              "the rerun says it resumes with the three saved measurements")
        ids2 = measured_ids(r.stdout)
        check(ids2, "the rerun measured more")
        check(not set(ids1) & set(ids2), f"measured again: {set(ids1) & set(ids2)}")
        with open(state) as f:
            st = json.load(f)
        for mid in ids1:
            check(st["measurements"][mid] == saved[mid], f"{mid} changed on the rerun")
        # The last measurement is started only when its expected length fits; one that runs
        # longer than expected (a loaded machine) may overrun by a little.
        check(st["spent_s"] <= 20 + 5, f"within the budget: {st['spent_s']:.1f} s")
        check(re.search(r"noise \d+\.\d %", r.stdout), "the noise is stated")

        # 3. The profile and the report.
        with open(out, encoding="utf-8") as f:
            prof = f.read()
        check("# reproduce: ringpoll-tune " in prof, "the profile holds the reproducing command")
        check("# noise: " in prof and "# verdict: " in prof, "noise and verdict are in the comments")
        check("# | step | candidate | runs |" in prof, "the table's header is in the comments")
        keys = {m["candidate"] for m in st["measurements"].values()}
        rows = [ln for ln in prof.splitlines() if ln.startswith("# | ") and "---" not in ln][1:]
        check(len(rows) >= len(keys), f"a row per candidate: {len(rows)} rows, {len(keys)} candidates")
        for name in ("balanced", "latency", "throughput"):
            check(any(f"| {name} |" in ln for ln in rows), f"the built-in {name} has a row")
        doc = tomllib.loads(prof)
        check(doc.get("profile") in ("balanced", "latency", "throughput"),
              f"the profile starts from a built-in one: {doc.get('profile')}")
        r = subprocess.run([os.path.join(a.bin, "ringpoll-serve"), "--mode", "echo", "--listen",
                            "127.0.0.1:0", "--profile", out, "--print-config"], capture_output=True, text=True, encoding="utf-8", errors="replace", timeout=30)
        check(r.returncode == 0, f"ringpoll-serve loads the profile: {r.stderr}")
        printed = tomllib.loads(r.stdout)
        for sec, table in doc.items():
            if isinstance(table, dict):
                for k, v in table.items():
                    check(printed[sec][k] == v, f"{sec}.{k} = {v!r} is in effect")
        with open(out[:-5] + ".html", encoding="utf-8") as f:
            page = f.read()
        check(page.count("<svg") >= 2 and "http://" not in page.replace(
            'xmlns="http://www.w3.org/2000/svg"', ""), "the report has inline SVG, no links out")

        # 4. Refusals.
        other = list(cmd)
        other[other.index("--connections") + 1] = "3"
        r = subprocess.run(other, capture_output=True, text=True, encoding="utf-8", errors="replace", timeout=60)
        check(r.returncode == 2 and state in r.stderr and "another run" in r.stderr,
              f"a state file of another run is refused naming it: {r.returncode} {r.stderr}")
        r = subprocess.run(cmd + ["--knobs", "warp"], capture_output=True, text=True, encoding="utf-8", errors="replace", timeout=60)
        check(r.returncode == 2 and "--knobs" in r.stderr and "warp" in r.stderr,
              f"an unknown knob is refused: {r.stderr}")

        # 5. --verify.
        recorded = [ln for ln in prof.splitlines() if ln.startswith("# recorded: ")]
        check(len(recorded) == 1, "the profile holds one '# recorded:' line")
        rec = json.loads(recorded[0][len("# recorded: "):])
        check(rec.get("value") and rec.get("noise") is not None, f"a figure and a noise: {rec}")
        vcmd = [sys.executable, a.tune, "--verify", out, "--bin", a.bin, "--repeats", "1"]
        r = subprocess.run(vcmd, capture_output=True, text=True, encoding="utf-8", errors="replace", timeout=120)
        print("verify:", r.stdout, r.stderr, flush=True)
        check(r.returncode in (0, 1), f"--verify ends with a verdict, exit {r.returncode}")
        check(re.search(r"(reproduces|does not reproduce): measured \d+\.\d .* recorded "
                        + re.escape(f"{rec['value']:.1f}"), r.stdout),
              "the verdict names the measured and the recorded figure")
        off = os.path.join(d, "off.toml")
        with open(off, "w", encoding="utf-8") as f:
            f.write(prof.replace(recorded[0], "# recorded: " + json.dumps(
                {**rec, "value": rec["value"] * 100, "noise": 0.01})))
        r = subprocess.run(vcmd[:3] + [off] + vcmd[4:], capture_output=True, text=True, encoding="utf-8", errors="replace", timeout=120)
        print("verify (100x off):", r.stdout, r.stderr, flush=True)
        check(r.returncode == 1 and "does not reproduce" in r.stdout,
              f"a figure 100 times off does not reproduce: exit {r.returncode}")
        bare = os.path.join(d, "bare.toml")
        with open(bare, "w", encoding="utf-8") as f:
            f.write('profile = "balanced"\n')
        r = subprocess.run(vcmd[:3] + [bare] + vcmd[4:], capture_output=True, text=True, encoding="utf-8", errors="replace", timeout=60)
        check(r.returncode == 2 and bare in r.stderr and "recorded" in r.stderr,
              f"a profile without the recorded lines is refused naming it: {r.returncode} {r.stderr}")
    print("PASS", flush=True)


if __name__ == "__main__":
    main()
