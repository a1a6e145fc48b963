#!/usr/bin/env python3
"""CPU seconds per process group while a command runs, net of idle.

    bench_cpu.py --group write-api=pid:123 --group postgres=comm:postgres \
        --idle 5 --out cost.json -- catalog-bench load ...

Each group is a set of processes: `pid:N[,M...]` (those processes) or
`comm:NAME` (every process whose command name is NAME, looked up at the start
and at the end of the window so that backends forked in between count too).
A process's CPU is user + system time from /proc/PID/stat, plus the time of
its children that have already exited (cutime + cstime), so a Postgres
backend that ends inside the window is not lost.

First the groups are measured for `--idle` seconds with nothing running (the
background cost: timers, heartbeats, the auditor); then the command runs and
its window is measured. The JSON keeps both, and `net_s` is the command's
window minus the idle rate over the same wall time.
"""

import argparse
import json
import os
import subprocess
import sys
import time

TICKS = os.sysconf("SC_CLK_TCK")


def pids_of(spec):
    kind, _, value = spec.partition(":")
    if kind == "pid":
        return {int(p) for p in value.split(",") if p}
    if kind == "comm":
        found = set()
        for entry in os.listdir("/proc"):
            if entry.isdigit():
                try:
                    with open(f"/proc/{entry}/comm") as f:
                        if f.read().strip() == value:
                            found.add(int(entry))
                except OSError:
                    pass
        return found
    raise SystemExit(f"bench_cpu: unknown group spec {spec!r} (pid:N or comm:NAME)")


def cpu_of(pid):
    try:
        with open(f"/proc/{pid}/stat") as f:
            stat = f.read()
    except OSError:
        return None
    # The command name may hold spaces: the fields start after its ')'.
    fields = stat[stat.rindex(")") + 2:].split()
    utime, stime, cutime, cstime = (int(x) for x in fields[11:15])
    return (utime + stime + cutime + cstime) / TICKS


def snapshot(groups):
    return {name: {pid: cpu_of(pid) for pid in pids_of(spec)} for name, spec in groups.items()}


def used(groups, before, after):
    """CPU seconds each group used between two snapshots."""
    out = {}
    for name, spec in groups.items():
        late = pids_of(spec) | set(after[name])
        total = 0.0
        for pid in late | set(before[name]):
            start = before[name].get(pid)
            end = after[name].get(pid)
            if end is None:
                end = cpu_of(pid)
            if end is None:
                continue  # gone before the end: its time is in a parent's cutime
            total += end - (start or 0.0)
        out[name] = max(total, 0.0)
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--group", action="append", default=[], metavar="NAME=SPEC")
    ap.add_argument("--idle", type=float, default=5.0, help="seconds of idle measurement first")
    ap.add_argument("--out", required=True)
    ap.add_argument("command", nargs=argparse.REMAINDER)
    a = ap.parse_args()
    command = a.command[1:] if a.command[:1] == ["--"] else a.command
    if not command:
        raise SystemExit("bench_cpu: no command to run")
    groups = dict(g.split("=", 1) for g in a.group)

    before = snapshot(groups)
    t0 = time.monotonic()
    time.sleep(a.idle)
    idle_wall = time.monotonic() - t0
    idle = used(groups, before, snapshot(groups))

    start = snapshot(groups)
    t1 = time.monotonic()
    status = subprocess.call(command)
    wall = time.monotonic() - t1
    busy = used(groups, start, snapshot(groups))

    report = {
        "command": command,
        "wall_s": wall,
        "idle_wall_s": idle_wall,
        "groups": {
            name: {
                "busy_s": busy[name],
                "idle_per_s": idle[name] / idle_wall if idle_wall > 0 else 0.0,
                "net_s": max(busy[name] - idle[name] / idle_wall * wall, 0.0) if idle_wall > 0 else busy[name],
            }
            for name in groups
        },
    }
    with open(a.out, "w") as f:
        json.dump(report, f, indent=2)
    sys.exit(status)


if __name__ == "__main__":
    main()
