"""A watch of the whole machine: `memsnap record --all --every 10`, CPU time and memory
per round, to show neither grows with rounds.

    python benchmarks/watch_bench.py --minutes 10

The watch runs as a child process; every interval its CPU time (user + system, from
/proc/PID/stat) and its resident size (VmRSS, and the high-water mark VmHWM from
/proc/PID/status) are sampled, half an interval after each round starts, so each row is
one round's cost. The first round (every process new) is shown but left out of the
summary.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def memory(pid: int) -> tuple[int, int]:
    """(VmRSS, VmHWM) in KiB."""
    values = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            key, _, rest = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                values[key] = int(rest.split()[0])
    return values["VmRSS"], values["VmHWM"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--every", type=int, default=10)
    args = parser.parse_args()
    memsnap = shutil.which("memsnap")
    if memsnap is None:
        sys.exit("needs an installed memsnap on PATH")
    with tempfile.TemporaryDirectory() as tmp:
        db = str(Path(tmp) / "watch.db")
        watch = subprocess.Popen(
            [memsnap, "--db", db, "record", "--all", "--every", str(args.every)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        rows: list[tuple[int, float, int, int]] = []
        try:
            time.sleep(args.every / 2)
            last = 0.0
            end = time.monotonic() + args.minutes * 60
            n = 0
            print("round  cpu s  rss MiB  peak MiB", flush=True)
            while time.monotonic() < end and watch.poll() is None:
                n += 1
                cpu = cpu_seconds(watch.pid)
                rss, hwm = memory(watch.pid)
                rows.append((n, cpu - last, rss, hwm))
                print(
                    f"{n:5d}  {cpu - last:5.3f}  {rss / 1024:7.1f}  {hwm / 1024:8.1f}", flush=True
                )
                last = cpu
                time.sleep(args.every)
        finally:
            watch.send_signal(signal.SIGINT)
            watch.wait()
    later = rows[1:]
    if later:
        cpus = [r[1] for r in later]
        print(
            f"\nrounds 2-{rows[-1][0]}: cpu per round median {statistics.median(cpus):.3f} s "
            f"(min {min(cpus):.3f}, max {max(cpus):.3f}); rss {later[0][2] / 1024:.1f} -> "
            f"{later[-1][2] / 1024:.1f} MiB; peak {later[-1][3] / 1024:.1f} MiB"
        )


if __name__ == "__main__":
    main()
