#!/usr/bin/env python3
"""Where each `fdatasync` of one thread spends its time, phase by phase.

An `fdatasync` that has data to write is two requests to the disk: the
data write, then a cache flush that the block layer issues once the write
has completed and the syncing thread has run again. This reads `perf
script` output of the block layer and the `fdatasync` system call and
splits every sync of the thread whose name starts with `--who` into

- the data write, issued to completed;
- completed to the flush issued (the syncing thread's wake-up and its wait
  for a core; a long wait here is the thread held behind a busier one);
- the flush, issued to completed;
- the flush completed to `fdatasync`'s return;

and prints each phase's p50 and p90 for fast syncs (under 100 us) and slow
ones (150 us and more), then counts the syncs by which phases took over
100 us (BENCHMARKS.md, "What a slow sync waits for"). Record one second
of the server under load with, for example:

    perf record -a -o /tmp/sync.data \\
      -e block:block_rq_issue,block:block_rq_complete \\
      -e syscalls:sys_enter_fdatasync,syscalls:sys_exit_fdatasync -- sleep 1
    perf script -i /tmp/sync.data -F comm,tid,cpu,time,event,trace \\
      | python3 deploy/sync-phases.py [--who qyzar-ato]
"""
import argparse
import collections
import re
import sys

LINE = re.compile(r"^\s*(.+?)\s+(\d+)\s+\[(\d+)\]\s+(\d+\.\d+):\s+(\S+):\s*(.*)$")
SLOW = 100.0
# "<dev> <rwbs> [<bytes>] () <sector> + <count>": the request's first sector.
SECTOR = re.compile(r"\(\)\s+(\d+)\s+\+")


def events(lines):
    """(time in us, comm, tid, event, rest) of every line that parses, in time order."""
    out = []
    for line in lines:
        m = LINE.match(line)
        if m:
            comm, tid, _cpu, t, event, rest = m.groups()
            out.append((float(t) * 1e6, comm, int(tid), event.rstrip(":"), rest))
    out.sort(key=lambda e: e[0])
    return out


def syncs(evs, who):
    """Each sync of the first thread named `who`*: its enter and exit times and the
    first time of each milestone inside it."""
    tid = next((e[2] for e in evs if e[3] == "syscalls:sys_enter_fdatasync" and e[1].startswith(who)), None)
    if tid is None:
        return []
    done, cur = [], None
    for t, _comm, etid, event, rest in evs:
        if event == "syscalls:sys_enter_fdatasync" and etid == tid:
            cur = {"enter": t}
        elif cur is None:
            continue
        elif event == "syscalls:sys_exit_fdatasync" and etid == tid:
            cur["exit"] = t
            done.append(cur)
            cur = None
        elif event == "block:block_rq_issue" and " WS " in rest and "issue:WS" not in cur:
            # The syncing thread's own data write; its completion is
            # matched by sector, so another thread's write that completes
            # in the same window is not taken for it.
            m = SECTOR.search(rest)
            if m and who_comm(rest).startswith(who):
                cur["issue:WS"] = t
                cur["sector"] = m.group(1)
        elif event == "block:block_rq_complete" and " WS " in rest and "complete:WS" not in cur:
            m = SECTOR.search(rest)
            if m and m.group(1) == cur.get("sector"):
                cur["complete:WS"] = t
        elif event.startswith("block:block_rq_") and " FF " in rest:
            cur.setdefault(event.split("_")[-1] + ":FF", t)
    return done


def who_comm(rest):
    """The issuing thread's name at the end of a `block_rq_issue` line."""
    m = re.search(r"\[([^\]]*)\]\s*$", rest)
    return m.group(1) if m else ""


def quantiles(values):
    values = sorted(values)
    n = len(values)
    return f"n={n:5}  p50 {values[n // 2]:7.1f}  p90 {values[int(n * 0.9)]:7.1f}" if n else "n=    0"


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--who", default="qyzar-ato", help="name prefix of the syncing thread")
    args = ap.parse_args()
    all_syncs = syncs(events(sys.stdin), args.who)
    needed = ("issue:WS", "complete:WS", "issue:FF", "complete:FF")
    full = [s for s in all_syncs if all(k in s for k in needed)]
    print(f"{len(all_syncs)} syncs by {args.who}*, {len(full)} with a data write and a flush")
    phases = {
        "data write": lambda s: s["complete:WS"] - s["issue:WS"],
        "written -> flush issued": lambda s: s["issue:FF"] - s["complete:WS"],
        "flush": lambda s: s["complete:FF"] - s["issue:FF"],
        "flushed -> return": lambda s: s["exit"] - s["complete:FF"],
    }
    for label, group in (
        ("fast (under 100 us)", [s for s in full if s["exit"] - s["enter"] < SLOW]),
        ("slow (150 us and more)", [s for s in full if s["exit"] - s["enter"] >= 150]),
    ):
        print(label)
        for name, f in phases.items():
            print(f"  {name:24} {quantiles([f(s) for s in group])}")
    classes = collections.Counter()
    for s in full:
        slow = [name for name, f in phases.items() if name != "flushed -> return" and f(s) > SLOW]
        classes[", ".join(slow) or "none"] += 1
    print(f"phases over {SLOW:.0f} us")
    for name, n in classes.most_common():
        print(f"  {name:48} {n}")


if __name__ == "__main__":
    main()
