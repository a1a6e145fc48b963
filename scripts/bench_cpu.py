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

With `--threads`, each group also gets `threads` (net CPU seconds) and
`thread_switches` (net voluntary context switches: the thread went to sleep
and was woken), by thread name: threads of one name summed, their number
dropped (the Erlang VM's `1_scheduler` and `2_scheduler` are one line),
read from /proc/PID/task. Only threads alive at the window's end count; a
short-lived thread's time is left out there (it stays in the group's
total).
"""

import argparse
import json
import os
import re
import subprocess
import sys
import time

TICKS = os.sysconf("SC_CLK_TCK")
# The longest thread name the kernel keeps (TASK_COMM_LEN less its NUL).
COMM_LEN = 15


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


def read_stat(path):
    """A /proc stat file as (command name, the fields after it)."""
    with open(path) as f:
        stat = f.read()
    # The command name may hold spaces: the fields start after its ')'.
    return stat[stat.index("(") + 1:stat.rindex(")")], stat[stat.rindex(")") + 2:].split()


def cpu_of(pid):
    try:
        _, fields = read_stat(f"/proc/{pid}/stat")
    except OSError:
        return None
    utime, stime, cutime, cstime = (int(x) for x in fields[11:15])
    return (utime + stime + cutime + cstime) / TICKS


def thread_name(comm):
    """A thread's name without its ordinal: `actix-rt|system:0|arbiter:1` and
    `actix-rt|system:0|arbiter:2` are one line of the report, and so are
    the Erlang VM's `1_scheduler` and `2_scheduler`."""
    return re.sub(r"^\d+_|[\d:]+$", "", comm).rstrip("-_|") or comm


def threads_of(pids):
    """[CPU seconds, voluntary context switches] by thread name, summed over
    the processes."""
    out = {}
    cut = set()  # names whose thread names the kernel truncated
    for pid in pids:
        try:
            tids = os.listdir(f"/proc/{pid}/task")
        except OSError:
            continue
        for tid in tids:
            try:
                comm, fields = read_stat(f"/proc/{pid}/task/{tid}/stat")
                with open(f"/proc/{pid}/task/{tid}/status") as f:
                    status = f.read()
            except OSError:
                continue
            secs = (int(fields[11]) + int(fields[12])) / TICKS
            switches = int(re.search(r"^voluntary_ctxt_switches:\s*(\d+)", status, re.M).group(1))
            name = thread_name(comm)
            total = out.setdefault(name, [0.0, 0])
            total[0] += secs
            total[1] += switches
            if len(comm) == COMM_LEN:
                cut.add(name)
    # The kernel keeps 15 bytes of a name, so a longer number leaves less of
    # it (`2_dirty_io_sche`, `10_dirty_io_sch`): of two truncated names, one
    # that begins the other is the same name.
    for name in sorted(cut, key=len):
        if name not in out:
            continue  # already merged into a shorter one
        for longer in [n for n in cut if n != name and n.startswith(name) and n in out]:
            gone = out.pop(longer)
            out[name][0] += gone[0]
            out[name][1] += gone[1]
    return out


def thread_snapshot(groups):
    return {name: threads_of(pids_of(spec)) for name, spec in groups.items()}


def thread_used(before, after):
    """Per group and thread name: [CPU seconds, voluntary switches] between
    two snapshots."""
    out = {}
    for group, threads in after.items():
        out[group] = {}
        for t, (secs, switches) in threads.items():
            start = before[group].get(t, [0.0, 0])
            out[group][t] = [max(secs - start[0], 0.0), max(switches - start[1], 0)]
    return out


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
    ap.add_argument("--threads", action="store_true", help="also break each group down by thread name")
    ap.add_argument("command", nargs=argparse.REMAINDER)
    a = ap.parse_args()
    command = a.command[1:] if a.command[:1] == ["--"] else a.command
    if not command:
        raise SystemExit("bench_cpu: no command to run")
    groups = dict(g.split("=", 1) for g in a.group)

    threads = thread_snapshot(groups) if a.threads else None
    before = snapshot(groups)
    t0 = time.monotonic()
    time.sleep(a.idle)
    idle_wall = time.monotonic() - t0
    idle = used(groups, before, snapshot(groups))
    if a.threads:
        idle_threads = thread_used(threads, thread_snapshot(groups))
        threads = thread_snapshot(groups)

    start = snapshot(groups)
    t1 = time.monotonic()
    status = subprocess.call(command)
    wall = time.monotonic() - t1
    busy = used(groups, start, snapshot(groups))
    if a.threads:
        busy_threads = thread_used(threads, thread_snapshot(groups))

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
    if a.threads and idle_wall > 0:
        # The idle window's figures, scaled to the command's wall time.
        scale = wall / idle_wall
        for name, group in report["groups"].items():
            net = {}
            for t, (secs, switches) in busy_threads[name].items():
                idle_secs, idle_switches = idle_threads[name].get(t, [0.0, 0])
                net[t] = [max(secs - idle_secs * scale, 0.0), max(switches - idle_switches * scale, 0.0)]
            order = sorted(net, key=lambda t: -net[t][0])
            group["threads"] = {t: net[t][0] for t in order}
            group["thread_switches"] = {t: net[t][1] for t in order}
    with open(a.out, "w") as f:
        json.dump(report, f, indent=2)
    sys.exit(status)


if __name__ == "__main__":
    main()
