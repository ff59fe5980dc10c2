"""The load clients: ringpoll-load (echo and HTTP) and wrk (HTTP), their command lines and
what their output says. Every figure comes back in the same keys:
rps, p50_us, p99_us, p999_us, errors, requests, measured_s."""
import json
import os
import re

# wrk prints only p50/p75/p90/p99 with --latency; this script makes it print p99.9 as
# well, in microseconds, on one line the harness parses.
WRK_SCRIPT = """-- written by ringpoll's bench harness: one parsable line at the end of the run
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    "HARNESS requests=%d duration_us=%d errors=%d status_errors=%d p50=%.1f p99=%.1f p999=%.1f mean=%.1f\\n",
    summary.requests, summary.duration,
    e.connect + e.read + e.write + e.timeout, e.status,
    latency:percentile(50.0), latency:percentile(99.0), latency:percentile(99.9),
    latency.mean))
end
"""


# The client's own backend. ringpoll-load follows the programs' default (io_uring completion
# mode) since it runs on the engine; the harness keeps it on io_uring readiness mode, as in
# every run bench/runs/ holds, so that the servers' figures stay comparable across runs.
CLIENT_BACKEND = "io_uring-readiness"


def load_argv(binary, mode, port, conns, size, duration, warmup, json_path, host="127.0.0.1"):
    argv = ["env", f"RINGPOLL_BACKEND={CLIENT_BACKEND}", binary, "--mode", mode, "--target", f"{host}:{port}", "--connections", str(conns),
            "--duration", str(duration), "--warmup", str(warmup), "--json", json_path]
    if mode == "echo":
        argv += ["--size", str(size)]
    return argv


def parse_load_json(path):
    """ringpoll-load's --json file -> the common keys (None when it is missing)."""
    try:
        with open(path) as f:
            j = json.load(f)
    except (OSError, ValueError):
        return None
    lat = j.get("latency_us", {})
    errs = j.get("errors", {})
    return {
        "rps": j.get("requests_per_s"),
        "requests": j.get("requests"),
        "measured_s": j.get("measured_s"),
        "p50_us": lat.get("p50"),
        "p90_us": lat.get("p90"),
        "p99_us": lat.get("p99"),
        "p999_us": lat.get("p99_9"),
        "p9999_us": lat.get("p99_99"),
        "max_us": lat.get("max"),
        "mean_us": lat.get("mean"),
        "errors": errs.get("total", 0),
        "first_error": errs.get("first") or None,
        "failure": j.get("failure") or None,
        "client_backend": j.get("backend"),
        "client_cpu_us_req": j.get("cpu", {}).get("us_per_request"),
    }


def wrk_script(tmpdir):
    path = os.path.join(tmpdir, "harness-wrk.lua")
    if not os.path.exists(path):
        with open(path, "w") as f:
            f.write(WRK_SCRIPT)
    return path


def wrk_argv(port, conns, duration, script, threads=1, host="127.0.0.1", scheme="http",
             latency=False):
    """latency: also print wrk's own --latency table (kept in the raw output)."""
    return ["wrk", f"-t{threads}", f"-c{conns}", f"-d{max(1, int(round(duration)))}s", "--timeout", "5s",
            "-s", script] + (["--latency"] if latency else []) + [f"{scheme}://{host}:{port}/plaintext"]


def parse_wrk(path):
    try:
        with open(path, errors="replace") as f:
            text = f.read()
    except OSError:
        return None
    m = re.search(r"^HARNESS (.*)$", text, re.M)
    if not m:
        return None
    kv = dict(tok.split("=", 1) for tok in m.group(1).split())
    secs = float(kv["duration_us"]) / 1e6
    reqs = int(kv["requests"])
    return {
        "rps": reqs / secs if secs > 0 else 0.0,
        "requests": reqs,
        "measured_s": secs,
        "p50_us": float(kv["p50"]),
        "p99_us": float(kv["p99"]),
        "p999_us": float(kv["p999"]),
        "mean_us": float(kv["mean"]),
        "errors": int(kv["errors"]) + int(kv["status_errors"]),
        "first_error": None,
        "failure": None,
    }


PROGRESS = re.compile(r"^\[\s*([\d.]+) s\]\s+(warm-up|measuring)\s+([\d.]+) req/s", re.M)


def parse_load_progress(text):
    """ringpoll-load's progress lines (one a second when not on a terminal) ->
    [(seconds since start, req/s over that second)]."""
    return [(float(m.group(1)), float(m.group(3))) for m in PROGRESS.finditer(text or "")]
