#!/usr/bin/env python3
"""CPU, run-queue wait and time slices per process group over an interval.

    bench/schedstat.py SECONDS [PER]

Reads /proc/*/task/*/schedstat (time on a CPU, time runnable but waiting for
one, number of time slices) at the start and the end of SECONDS and prints
the difference per group: Parley's threads by name (`parley:deliver`,
`parley:worker`, `parley:dispatcher`, `parley:committer`,
`parley:MHD-worker`), PostgreSQL's backends and each auxiliary process,
fakeup, loadgen. With PER (e.g. the number of replies in the interval) it
also prints each figure divided by PER. A thread that exits before the end
of the interval is not counted (start it after the load's processes).

Run it beside a load, e.g. during the paced (d) scenario, to see what a
reply costs in CPU and in wake-ups and how long each wake-up waits for a
core. Standard library only; Linux only.
"""
import glob
import os
import sys
import time


def group(pid, comm):
    try:
        exe = os.readlink("/proc/%s/exe" % pid).split("/")[-1]
    except OSError:
        return None
    if exe == "postgres":
        try:
            argv = open("/proc/%s/cmdline" % pid).read().split("\0")
        except OSError:
            return None
        title = " ".join(argv[0:3]).strip()
        if not title.startswith("postgres:"):
            return "pg:postmaster"
        # "postgres: USER DB HOST(PORT) STATE" for a backend, else
        # "postgres: walwriter", "postgres: autovacuum launcher", ...
        word = title.split()[1] if len(title.split()) > 1 else "?"
        aux = {"walwriter", "checkpointer", "background", "autovacuum",
               "logical", "stats", "archiver", "walsender", "startup"}
        return "pg:" + (word if word in aux else "backend")
    if exe in ("parley", "fakeup"):
        return exe + ":" + comm.rstrip("0123456789-") if comm else exe
    return exe


def snapshot():
    out = {}
    for task in glob.glob("/proc/[0-9]*/task/[0-9]*"):
        pid = task.split("/")[2]
        try:
            comm = open(task + "/comm").read().strip()
            run, wait, slices = (int(x) for x in open(task + "/schedstat").read().split())
        except (OSError, ValueError):
            continue
        g = group(pid, comm)
        if g:
            out[task] = (g, run, wait, slices)
    return out


def main():
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    secs = float(sys.argv[1])
    per = float(sys.argv[2]) if len(sys.argv) > 2 else None
    a = snapshot()
    time.sleep(secs)
    b = snapshot()
    tot = {}
    for task, (g, run, wait, slices) in b.items():
        r0, w0, s0 = a[task][1:] if task in a else (0, 0, 0)
        t = tot.setdefault(g, [0, 0, 0])
        t[0] += run - r0
        t[1] += wait - w0
        t[2] += slices - s0
    rows = sorted(((g, t) for g, t in tot.items() if t[2] > 0), key=lambda x: -x[1][0])
    print("%-22s %10s %12s %9s %11s%s" % (
        "group", "CPU ms", "runq wait ms", "slices", "wait/slice",
        "   per %g: CPU ms, slices" % per if per else ""))
    for g, (run, wait, slices) in rows:
        extra = ("   %8.3f %7.1f" % (run / 1e6 / per, slices / per)) if per else ""
        print("%-22s %10.1f %12.1f %9d %8.3f ms%s" % (
            g, run / 1e6, wait / 1e6, slices, wait / 1e6 / slices, extra))


if __name__ == "__main__":
    main()
