"""Processes the harness starts, and the CPU they (and everything else) burn.

Every process goes through Registry.start(); Registry.stop_all() ends each one by its PID
(SIGTERM, then SIGKILL after a grace period), including the children a server forked
(nginx workers), which are remembered by PID whenever the tree is sampled. Nothing is
ever killed by name.
"""
import os
import shutil
import signal
import socket
import subprocess
import sys
import time

HZ = os.sysconf("SC_CLK_TCK")


def free_port():
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def port_accepts(port, timeout=0.2):
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=timeout):
            return True
    except OSError:
        return False


def _stat_fields(pid):
    """Fields of /proc/PID/stat after the command name, or None when PID is gone."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            text = f.read()
    except OSError:
        return None
    # The command name is in parentheses and may itself hold spaces or parentheses.
    return text[text.rindex(")") + 2:].split()


def children_of(pid):
    """Direct children of PID (scanning /proc: works without CONFIG_PROC_CHILDREN)."""
    kids = []
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        f = _stat_fields(int(name))
        if f and int(f[1]) == pid:  # f[1] is ppid (field 4 of stat)
            kids.append(int(name))
    return kids


def tree_ticks(pid, seen_children=None):
    """(utime, stime) ticks of PID and its direct children; children are added to
    seen_children so that they can be stopped by PID later."""
    if pid is None:
        return (0, 0)
    u = s = 0
    pids = [pid] + children_of(pid)
    for p in pids:
        f = _stat_fields(p)
        if not f:
            continue
        u += int(f[11])  # utime (field 14)
        s += int(f[12])  # stime (field 15)
        if seen_children is not None and p != pid:
            seen_children[p] = f[19]  # starttime (field 22): tells a reused PID apart
    return (u, s)


def _busy(fields):
    """Busy ticks of one /proc/stat cpu line: user nice system irq softirq (idle, iowait
    and steal left out)."""
    v = [int(x) for x in fields]
    return v[0] + v[1] + v[2] + v[5] + v[6]


def box_busy_ticks():
    """Busy ticks of the whole machine."""
    with open("/proc/stat") as f:
        return _busy(f.readline().split()[1:])


def cpu_busy_ticks():
    """Busy ticks of each CPU: {cpu number: ticks} (a pinned server's core, softirq
    work done there included)."""
    out = {}
    with open("/proc/stat") as f:
        for line in f:
            name, _, rest = line.partition(" ")
            if name.startswith("cpu") and name[3:].isdigit():
                out[int(name[3:])] = _busy(rest.split())
    return out


class Snapshot:
    """One instant: wall time, the machine's busy ticks, each named group's ticks, and
    (core given) that CPU's busy ticks."""

    def __init__(self, groups, registry=None, core=None):
        self.t = time.monotonic()
        self.box = box_busy_ticks()
        self.cpus = cpu_busy_ticks()
        self.core = self.cpus.get(core) if core is not None else None
        self.ticks = {}
        for name, pid in groups.items():
            seen = registry.children if registry else None
            self.ticks[name] = tree_ticks(pid, seen)


def window(a, b):
    """CPU use between two snapshots: per group user/sys ticks and % of one core, and
    'other_pct', what the rest of the machine burnt (builds, other tenants, kworkers), and
    'cpu_busy_ticks', each CPU's busy ticks."""
    secs = b.t - a.t
    core = secs * HZ
    out = {"window_s": round(secs, 4), "groups": {}}
    ours = 0
    for name in a.ticks:
        du = max(0, b.ticks[name][0] - a.ticks[name][0])
        ds = max(0, b.ticks[name][1] - a.ticks[name][1])
        ours += du + ds
        out["groups"][name] = {"usr_ticks": du, "sys_ticks": ds,
                               "usr_pct": round(100.0 * du / core, 1) if core else 0.0,
                               "sys_pct": round(100.0 * ds / core, 1) if core else 0.0}
    out["other_pct"] = round(max(0.0, 100.0 * (b.box - a.box - ours) / core), 1) if core else 0.0
    out["cpu_busy_ticks"] = {n: b.cpus[n] - a.cpus[n] for n in a.cpus if n in b.cpus}
    if a.core is not None and b.core is not None:
        out["core_ticks"] = max(0, b.core - a.core)
        out["core_pct"] = round(100.0 * out["core_ticks"] / core, 1) if core else 0.0
    return out


def busy_pct(seconds=0.5):
    """How busy the whole machine is, in % of one core, over a short sample."""
    a = box_busy_ticks()
    time.sleep(seconds)
    return 100.0 * (box_busy_ticks() - a) / (seconds * HZ)


class StartError(Exception):
    pass


class Proc:
    def __init__(self, name, popen, log_path):
        self.name = name
        self.popen = popen
        self.pid = popen.pid
        self.log_path = log_path

    def alive(self):
        return self.popen.poll() is None

    def output(self):
        """What the process printed: stdout, then stderr."""
        text = ""
        for path in (self.log_path, (self.log_path or "") + ".err"):
            try:
                with open(path, errors="replace") as f:
                    text += f.read()
            except (OSError, TypeError):
                pass
        return text

    def log_tail(self, lines=8):
        return "\n".join(self.output().rstrip().splitlines()[-lines:])

    def first_line(self):
        try:
            with open(self.log_path, errors="replace") as f:
                return f.readline().strip()
        except (OSError, TypeError):
            return ""


class Registry:
    """Everything started here, so that it can be stopped by PID on any exit path."""

    def __init__(self):
        self.procs = []
        # forked children seen while sampling (nginx workers): PID -> starttime
        self.children = {}

    def start(self, name, argv, cpu=None, log_path=None, inherit_output=False, env=None):
        if cpu is not None:
            argv = ["taskset", "-c", str(cpu)] + list(argv)  # taskset execs: same PID
        # stdout and stderr go to two files: the first stdout line is the program's
        # banner ("ringpoll-serve: echo on ..."), which log lines on stderr must not hide.
        out = err = None
        if not inherit_output:
            out = open(log_path, "w") if log_path else subprocess.DEVNULL
            err = open(log_path + ".err", "w") if log_path else subprocess.DEVNULL
        try:
            p = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out, stderr=err, env=env)
        except OSError as e:
            raise StartError(f"{name}: cannot run {argv[0]}: {e}") from e
        finally:
            for f in (out, err):
                if f not in (None, subprocess.DEVNULL):
                    f.close()
        proc = Proc(name, p, log_path)
        self.procs.append(proc)
        return proc

    def wait_listening(self, proc, port, timeout=8.0):
        """Wait until PORT accepts a connection; StartError if PROC exits or time runs out."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not proc.alive():
                raise StartError(f"{proc.name} exited with status {proc.popen.returncode} "
                                 f"before listening on port {port}:\n{proc.log_tail()}")
            if port_accepts(port):
                return
            time.sleep(0.05)
        raise StartError(f"{proc.name} did not listen on port {port} within {timeout:.0f} s:\n"
                         f"{proc.log_tail()}")

    def wait(self, proc, timeout):
        """Wait for PROC to exit by itself; stop it when it overruns. Returns its status."""
        try:
            return proc.popen.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.stop(proc)
            return None

    def stop(self, proc, grace=5.0):
        for k in children_of(proc.pid):
            f = _stat_fields(k)
            if f:
                self.children[k] = f[19]
        kids = dict(self.children)
        if proc.alive():
            try:
                os.kill(proc.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
            try:
                proc.popen.wait(timeout=grace)
            except subprocess.TimeoutExpired:
                try:
                    os.kill(proc.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                proc.popen.wait()
        # Children of ours that outlived their parent (a master killed hard) are ended by
        # PID too; a PID whose parent is no longer ours is left alone.
        for k, start in kids.items():
            f = _stat_fields(k)
            if f is None or f[19] != start:
                self.children.pop(k, None)
                continue
            if int(f[1]) in (proc.pid, 1):
                try:
                    os.kill(k, signal.SIGKILL)
                except ProcessLookupError:
                    pass
        if proc in self.procs:
            self.procs.remove(proc)

    def stop_all(self):
        for proc in list(reversed(self.procs)):
            self.stop(proc, grace=3.0)


class Interrupted(Exception):
    pass


def run_guarded(what, fn, reg, tmpdir):
    """Runs fn() and returns its exit status; on Ctrl-C or SIGTERM says so and returns 130.
    Either way stops everything reg started (a second Ctrl-C cannot cut that short) and
    removes tmpdir."""
    try:
        return fn()
    except (Interrupted, KeyboardInterrupt) as e:
        print(f"\n{what}: interrupted ({e or 'SIGINT'}); stopping what was started",
              file=sys.stderr)
        return 130
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            signal.signal(sig, signal.SIG_IGN)
        reg.stop_all()
        shutil.rmtree(tmpdir, ignore_errors=True)


def install_signal_handlers():
    """SIGTERM (and SIGINT) become an Interrupted exception, so that finally blocks run."""
    def handler(signum, frame):
        raise Interrupted(signal.Signals(signum).name)
    signal.signal(signal.SIGTERM, handler)
    signal.signal(signal.SIGINT, handler)
    signal.signal(signal.SIGHUP, handler)
