#!/usr/bin/env python3
"""How long a small durable write takes on this disk, by how long it was left idle.

Writes 4 KiB and `fdatasync`s it in a loop, spinning GAP microseconds between
syncs, for each GAP given (default 0 50 100 200 400 1000), and prints the
syncs per second and the sync's p50/p90/p99 in microseconds. On the VMs
these benchmarks ran on, a sync right after the last one took about 40 us and
one after a few hundred microseconds of idling 150-800 us (BENCHMARKS.md,
"The disk is fast only while it is kept busy"). The file goes in DIR
(default: the current directory, which must be on the disk being measured;
a tmpfs syncs for free) and is removed afterwards.

    python3 deploy/sync-latency.py [--dir DIR] [--seconds S] [GAP ...]
"""
import argparse
import os
import time


def run(path, gap_us, seconds):
    fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        buf = os.urandom(4096)
        # The blocks exist before timing: overwrites sync data only, as the
        # engine's journal does once its file has grown.
        for off in range(0, 16 << 20, 4096):
            os.pwrite(fd, buf, off)
        os.fsync(fd)
        gap = gap_us / 1e6
        lat, off, end = [], 0, time.monotonic() + seconds
        while time.monotonic() < end:
            os.pwrite(fd, buf, off)
            off = (off + 4096) % (16 << 20)
            t = time.perf_counter()
            os.fdatasync(fd)
            lat.append(time.perf_counter() - t)
            t = time.perf_counter()
            while time.perf_counter() - t < gap:
                pass
    finally:
        os.close(fd)
    lat.sort()
    n = len(lat)
    pct = lambda q: lat[min(n - 1, int(n * q))] * 1e6
    print(f"gap {gap_us:>5} us: {n / seconds:>7.0f} syncs/s  p50 {pct(0.5):>5.0f}  "
          f"p90 {pct(0.9):>5.0f}  p99 {pct(0.99):>5.0f} us")


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dir", default=".")
    ap.add_argument("--seconds", type=float, default=3.0)
    ap.add_argument("gaps", nargs="*", type=int, default=[0, 50, 100, 200, 400, 1000])
    a = ap.parse_args()
    path = os.path.join(a.dir, f".qyzar-sync-latency-{os.getpid()}")
    try:
        for g in a.gaps:
            run(path, g, a.seconds)
    finally:
        try:
            os.remove(path)
        except FileNotFoundError:
            pass


if __name__ == "__main__":
    main()
