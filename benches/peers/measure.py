#!/usr/bin/env python3
"""Run one benchmark client against a running `turnbench sim` and measure what it cost.

    measure.py --sim-url URL --sim-pid PID --secs S --out RESULT.json --log CLIENT.log \
               [--own-duration] -- CMD [ARG...]

* Client CPU: user + sys of the client's whole process tree. This process makes itself a child
  subreaper (prctl PR_SET_CHILD_SUBREAPER), so workers the client spawns and orphans are
  re-parented here instead of to init; every descendant is reaped here, and
  getrusage(RUSAGE_CHILDREN) then holds the CPU of all of them.
* Requests: the sim's `vllm:request_success_total` (all label sets summed) before and after, and
  sampled every 0.25 s while the client runs; "steady" req/s is the slope between 10 % and 90 % of
  the completions, so start-up and wind-down do not count in it.
* Sim CPU: utime + stime of the sim's PID from /proc/PID/stat, before and after.

The load window is --secs seconds from the first completed request. A client that stops by itself
(--own-duration: it was given the same duration) gets 60 s more before it is stopped; any other
client is stopped at the end of the window: SIGINT to its process group, SIGTERM 15 s later,
SIGKILL 10 s after that (descendants re-parented here get the same). A client that completes no
request within --startup-timeout seconds is stopped too, and so is the client when this process
gets SIGINT or SIGTERM (it then exits 128 + the signal, after writing what it measured). Standard library only; Linux only.
"""

import argparse
import ctypes
import json
import os
import resource
import signal
import subprocess
import sys
import time
import urllib.request

PR_SET_CHILD_SUBREAPER = 36
TICK = os.sysconf("SC_CLK_TCK")


def success_total(url):
    with urllib.request.urlopen(url.rstrip("/") + "/metrics", timeout=5) as r:
        text = r.read().decode()
    total = 0.0
    for line in text.splitlines():
        if line.startswith("vllm:request_success_total"):
            name = line.split("{", 1)[0].split(" ", 1)[0]
            if name == "vllm:request_success_total":
                total += float(line.rsplit(" ", 1)[1])
    return total


def proc_cpu_s(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK  # utime, stime (fields 14 and 15)


def children_of(pid):
    """PIDs whose parent is `pid` (here: descendants re-parented to this subreaper)."""
    out = []
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                with open(f"/proc/{d}/stat") as f:
                    if int(f.read().rsplit(")", 1)[1].split()[1]) == pid:
                        out.append(int(d))
            except (OSError, ValueError, IndexError):
                pass
    return out


def steady_rate(samples, before):
    """Requests/s between 10 % and 90 % of the completions (linear interpolation)."""
    done = [(t, c - before) for t, c in samples]
    total = done[-1][1] if done else 0
    if total < 10:
        return None

    def time_at(level):
        for (t0, c0), (t1, c1) in zip(done, done[1:]):
            if c0 < level <= c1:
                return t0 + (t1 - t0) * (level - c0) / (c1 - c0)
        return None

    a, b = time_at(0.1 * total), time_at(0.9 * total)
    return 0.8 * total / (b - a) if a is not None and b is not None and b > a else None


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sim-url", required=True)
    ap.add_argument("--sim-pid", type=int, required=True)
    ap.add_argument("--secs", type=float, required=True)
    ap.add_argument("--own-duration", action="store_true", help="the client stops by itself after --secs")
    ap.add_argument("--startup-timeout", type=float, default=300)
    ap.add_argument("--out", required=True)
    ap.add_argument("--log", required=True)
    ap.add_argument("cmd", nargs=argparse.REMAINDER)
    a = ap.parse_args()
    cmd = a.cmd[1:] if a.cmd[:1] == ["--"] else a.cmd
    if not cmd:
        ap.error("no client command given")

    interrupted = []
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda signum, _frame: interrupted.append(signum))

    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) != 0:
        sys.exit("measure: prctl(PR_SET_CHILD_SUBREAPER) failed: " + os.strerror(ctypes.get_errno()))

    before = success_total(a.sim_url)
    sim_cpu0 = proc_cpu_s(a.sim_pid)
    ru0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.monotonic()
    with open(a.log, "wb") as log:
        proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                start_new_session=True)
    pgid = proc.pid
    main_rc = None
    samples = [(0.0, before)]
    first_load = None
    stopped_by = None
    stop_steps = []  # (time, signal) still to send

    def signal_all(sig):
        for target in [("pg", pgid)] + [("pid", p) for p in children_of(os.getpid())]:
            try:
                if target[0] == "pg":
                    os.killpg(target[1], sig)
                else:
                    os.kill(target[1], sig)
            except (ProcessLookupError, PermissionError):
                pass

    def begin_stop(reason, now):
        nonlocal stopped_by, stop_steps
        if stopped_by is None:
            stopped_by = reason
            stop_steps = [(now, signal.SIGINT), (now + 15, signal.SIGTERM), (now + 25, signal.SIGKILL)]

    while True:
        # Reap whatever finished: the client itself and any re-parented descendant.
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                pid = 0
            if pid == 0:
                break
            if pid == proc.pid:
                main_rc = os.waitstatus_to_exitcode(status)
                proc.returncode = main_rc
        now = time.monotonic() - t0
        try:
            count = success_total(a.sim_url)
        except OSError:
            count = samples[-1][1]
        samples.append((now, count))
        if first_load is None and count > before:
            first_load = now
        if interrupted:
            begin_stop("interrupted", now)
        if main_rc is not None:
            if not children_of(os.getpid()):
                break
            # The client is gone but left descendants: give them 10 s, then stop them.
            begin_stop("leftover descendants", now + 10)
        elif first_load is None and now > a.startup_timeout:
            begin_stop("startup timeout", now)
        elif first_load is not None and now >= first_load + a.secs + (60 if a.own_duration else 0):
            begin_stop("window end" if not a.own_duration else "overran its duration", now)
        while stop_steps and stop_steps[0][0] <= now:
            signal_all(stop_steps.pop(0)[1])
        if stopped_by is not None and not stop_steps:
            signal_all(signal.SIGKILL)  # whatever is still alive after the last step
        time.sleep(0.25)

    wall = time.monotonic() - t0
    time.sleep(0.3)
    try:
        after = success_total(a.sim_url)
    except OSError:  # the sim is gone (e.g. Ctrl-C reached it too): the last sample stands
        after = samples[-1][1]
    try:
        sim_cpu = proc_cpu_s(a.sim_pid) - sim_cpu0
    except OSError:
        sim_cpu = None
    ru = resource.getrusage(resource.RUSAGE_CHILDREN)
    client_cpu = (ru.ru_utime - ru0.ru_utime) + (ru.ru_stime - ru0.ru_stime)
    requests = int(round(after - before))
    load_s = None
    done = [t for t, c in samples if c >= after]
    if first_load is not None and done:
        load_s = done[0] - first_load
    result = {
        "cmd": cmd,
        "exit_code": main_rc,
        "stopped_by": stopped_by,
        "wall_s": round(wall, 3),
        "load_s": round(load_s, 3) if load_s is not None else None,
        "requests": requests,
        "client_cpu_s": round(client_cpu, 3),
        "client_user_s": round(ru.ru_utime - ru0.ru_utime, 3),
        "client_sys_s": round(ru.ru_stime - ru0.ru_stime, 3),
        "sim_cpu_s": round(sim_cpu, 3) if sim_cpu is not None else None,
        "client_cpu_ms_per_req": round(1000 * client_cpu / requests, 4) if requests else None,
        "sim_cpu_ms_per_req": round(1000 * sim_cpu / requests, 4) if requests and sim_cpu is not None else None,
        "steady_req_per_s": (lambda r: round(r, 1) if r else None)(steady_rate(samples, before)),
        "mean_req_per_s": round(requests / load_s, 1) if requests and load_s else None,
        "client_max_rss_kib": ru.ru_maxrss,
    }
    with open(a.out, "w") as f:
        json.dump(result, f, indent=1)
    sim_text = f"{sim_cpu:.2f} s" if sim_cpu is not None else "unknown"
    print(
        f"measure: {requests} requests, client CPU {client_cpu:.2f} s, sim CPU {sim_text}, "
        f"wall {wall:.1f} s, exit {main_rc}" + (f", stopped: {stopped_by}" if stopped_by else "")
    )
    if interrupted:
        sys.exit(128 + interrupted[0])


if __name__ == "__main__":
    main()
