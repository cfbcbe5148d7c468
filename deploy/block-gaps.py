#!/usr/bin/env python3
"""What a block request costs on this disk, by how long the disk sat idle before it.

Reads `perf script` output of the block layer's issue and completion events
and prints, for one kind of request (`WS`, a synchronous data write, or
`FF`, a cache flush), its latency grouped by the time since the disk's last
completion when nothing else was in flight. A disk (or a VM's disk
emulation) that polls for a short while after each request and then sleeps
shows as fast requests after short gaps and slow ones after long gaps
(BENCHMARKS.md, "Syncs back to back: a sync thread, measured and not
kept"). Record with, for example, one second of the server under load:

    perf record -e block:block_rq_issue,block:block_rq_complete -a -o /tmp/blk.data -- sleep 1
    perf script -i /tmp/blk.data | python3 deploy/block-gaps.py [--kind WS|FF] [--who COMM]

`--who` keeps only requests issued by threads whose name starts with COMM
(the flush of an `fdatasync` is issued by a `kworker`, so leave it unset for
`FF`).
"""
import argparse
import bisect
import re
import sys

EVENT = re.compile(r"^\s*(\S.*?)\s+\d+\s+\[\d+\]\s+(\d+\.\d+):\s+block:(block_rq_issue|block_rq_complete):(.*)$")
EDGES = [0, 10, 20, 30, 50, 75, 100, 150, 200, 300, float("inf")]


def requests(lines):
    """(kind, issuer, issued, completed) of every request seen both ways, in issue order."""
    pending, done = {}, []
    for line in lines:
        m = EVENT.match(line)
        if not m:
            continue
        t, event, rest = float(m.group(2)), m.group(3), m.group(4).split()
        kind = rest[1]
        if event == "block_rq_issue":
            sector = "flush" if kind == "FF" else rest[4]
            pending.setdefault((kind, sector), []).append([kind, rest[-1].strip("[]"), t, None])
        else:
            sector = "flush" if kind == "FF" else rest[3]
            waiting = pending.get((kind, sector))
            if waiting:
                r = waiting.pop(0)
                r[3] = t
                done.append(r)
    done.sort(key=lambda r: r[2])
    return done


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--kind", default="WS", help="request kind as perf prints it (default WS)")
    ap.add_argument("--who", default="", help="issuing thread's name prefix")
    args = ap.parse_args()
    reqs = requests(sys.stdin)
    completions = sorted(r[3] for r in reqs)
    buckets = {}
    for i, (kind, who, issued, completed) in enumerate(reqs):
        if kind != args.kind or not who.startswith(args.who):
            continue
        # Only requests issued to an idle disk: nothing else in flight.
        near = reqs[max(0, i - 64) : i + 64]
        if any(o[2] < issued < o[3] for o in near if o is not reqs[i]):
            continue
        j = bisect.bisect_left(completions, issued)
        if j == 0:
            continue
        gap = (issued - completions[j - 1]) * 1e6
        edge = max(e for e in EDGES if e <= gap)
        buckets.setdefault(edge, []).append((completed - issued) * 1e6)
    print(f"{args.kind} requests{' from ' + args.who if args.who else ''}, by the disk's idle time before them (us)")
    for edge in sorted(buckets):
        v = sorted(buckets[edge])
        n = len(v)
        slow = sum(x > 100 for x in v) / n
        print(f"idle >= {edge:>4.0f}: n={n:6d}  p50={v[n // 2]:6.0f}  p90={v[9 * n // 10]:6.0f}  over 100 us: {slow:4.0%}")


if __name__ == "__main__":
    main()
