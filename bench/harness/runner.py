"""One measured run: start the client, take a CPU snapshot of every process of interest at
the start and the end of a window inside the client's measured seconds, wait for the
client (bounded), and turn the figures into per-request CPU."""
import time

from procs import HZ, Snapshot, window


def _sleep_until(t, client):
    """Sleep until monotonic time t; return False early if the client has exited."""
    while True:
        left = t - time.monotonic()
        if left <= 0:
            return True
        if not client.alive():
            return False
        time.sleep(min(left, 0.1))


def measured_run(reg, client_argv, groups, win_start, win_len, timeout, cpu=None,
                 log_path=None, inherit_output=False, name="client", core=None):
    """groups: {name: pid} of the servers to account (the client is added as 'client');
    core: the CPU whose whole busy time the window reports too (the pinned server core).
    Returns (window dict or None when the client ended before the window closed,
    client exit status or None when it had to be stopped)."""
    client = reg.start(name, client_argv, cpu=cpu, log_path=log_path,
                       inherit_output=inherit_output)
    t0 = time.monotonic()
    groups = dict(groups, client=client.pid)
    win = None
    if _sleep_until(t0 + win_start, client):
        a = Snapshot(groups, reg, core)
        if _sleep_until(t0 + win_start + win_len, client):
            b = Snapshot(groups, reg, core)
            win = window(a, b)
    rc = reg.wait(client, timeout=max(1.0, t0 + timeout - time.monotonic()))
    return win, rc


def per_request(win, group, rps):
    """(user µs, sys µs) per request of one group over the window, at the client's rate."""
    if not win or not rps or group not in win["groups"]:
        return (None, None)
    reqs = rps * win["window_s"]
    if reqs <= 0:
        return (None, None)
    g = win["groups"][group]
    return (round(g["usr_ticks"] * 1e6 / HZ / reqs, 3), round(g["sys_ticks"] * 1e6 / HZ / reqs, 3))


def core_per_request(win, rps):
    """µs of the watched core's whole busy time per request over the window, or None."""
    if not win or not rps or win.get("core_ticks") is None:
        return None
    reqs = rps * win["window_s"]
    return round(win["core_ticks"] * 1e6 / HZ / reqs, 3) if reqs > 0 else None
