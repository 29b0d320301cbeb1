"""How often the cheap "unchanged" signal disagrees with a full read of smaps.

`record` decides a process is unchanged when its maps text, its smaps_rollup text and
its threads' stack pointers are the same as at its latest snapshot, without reading the
whole smaps. Equal totals can hide pages that moved between regions: this script reads
every process of the machine each round, both ways, and counts the rounds where the
cheap signal said "unchanged" while the full smaps text had changed (a missed change),
and those where it said "changed" while smaps had not (a wasted full read).

    python benchmarks/quick_signal.py --every 10 --minutes 60

The three texts are not read in one instant, so a change between the reads counts as a
disagreement too: the figure is an upper bound.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import time

from memsnap.capture.procfs import Proc


def texts(proc: Proc, pid: int) -> tuple[bytes, bytes] | None:
    """(cheap signal, full smaps) of a process, or None when it cannot be read."""
    try:
        threads = proc.thread_stack_pointers(pid)
        with open(f"/proc/{pid}/maps", "rb", buffering=0) as f:
            maps = f.readall()
        with open(f"/proc/{pid}/smaps_rollup", "rb", buffering=0) as f:
            rollup = f.readall()
        with open(f"/proc/{pid}/smaps", "rb", buffering=0) as f:
            smaps = f.readall()
    except OSError:
        return None
    if not maps:
        return None
    quick = hashlib.blake2b(maps + b"\0" + rollup + repr(threads).encode()).digest()
    return quick, hashlib.blake2b(smaps).digest()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--every", type=float, default=10.0)
    parser.add_argument("--minutes", type=float, default=60.0)
    args = parser.parse_args()
    proc = Proc()
    me = os.getpid()
    previous: dict[tuple[int, int], tuple[bytes, bytes]] = {}
    compared = missed = wasted = same = rounds = 0
    end = time.monotonic() + args.minutes * 60
    while time.monotonic() < end:
        rounds += 1
        now: dict[tuple[int, int], tuple[bytes, bytes]] = {}
        for pid in proc.pids():
            if pid == me:
                continue
            try:
                key = (pid, proc.start_ticks(pid))
            except Exception:
                continue
            read = texts(proc, pid)
            if read is None:
                continue
            now[key] = read
            if key in previous:
                compared += 1
                quick_same = previous[key][0] == read[0]
                full_same = previous[key][1] == read[1]
                same += full_same
                missed += quick_same and not full_same
                wasted += full_same and not quick_same
        previous = now
        print(
            f"round {rounds}: {compared} comparisons, smaps unchanged in {same}, "
            f"missed changes {missed}, wasted full reads {wasted}",
            flush=True,
        )
        time.sleep(args.every)


if __name__ == "__main__":
    main()
