"""A watch of the whole machine: `memsnap record --all --every 10`, CPU time and memory
per round, to show that neither grows with rounds.

    python benchmarks/watch_bench.py --minutes 10
    python benchmarks/watch_bench.py --minutes 10 --churn 5   # 5 new processes a round

The watch runs as a child process, as a user runs it (one long-lived process: start-up
counts only in round 1). It writes one summary line to stderr at the end of each round;
on each line this script samples the watch's CPU time (user + system, /proc/PID/stat),
its resident size (VmRSS) and its peak resident size (VmHWM, /proc/PID/status), so each
row is exactly one round's cost. The peak is reset after each sample (`clear_refs`),
so it is the round's own peak; where that is refused it is the peak so far.

`--churn N` starts N short-lived processes after each round and stops them after the
next: each is a copy of `sleep` under a new name, so every round meets new pids and new
executable files (what a busy host has), and the watch's caches must not grow with them.

Round 1 (every process new, plus start-up) is shown apart. Rounds 2 on are summarised
three ways: median, first half against second half (medians), and the slope of a
least-squares line through them (per round, and what it adds up to over the run).
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

SUMMARY = re.compile(r"memsnap: recorded (\d+) process")


@dataclass(frozen=True)
class Row:
    round: int
    cpu: float  # seconds, user + system, of this round
    rss: float  # MiB at the end of the round
    peak: float  # MiB, the round's peak (or the peak so far: see `reset_peak`)
    recorded: int  # processes recorded in the round


def cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def memory(pid: int) -> tuple[float, float]:
    """(VmRSS, VmHWM) in MiB."""
    values = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            key, _, rest = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                values[key] = int(rest.split()[0]) / 1024
    return values["VmRSS"], values["VmHWM"]


def reset_peak(pid: int) -> bool:
    """Set VmHWM back to the current VmRSS (Linux 4.0 on; needs the rights to write the
    process's clear_refs). False when refused: the peaks are then peaks so far."""
    try:
        with open(f"/proc/{pid}/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        return False
    return True


def slope(values: list[float]) -> float:
    """The slope of the least-squares line through `values` (one per round)."""
    n = len(values)
    if n < 2:
        return 0.0
    xs = range(n)
    mx, my = (n - 1) / 2, statistics.fmean(values)
    sxx = sum((x - mx) ** 2 for x in xs)
    return sum((x - mx) * (y - my) for x, y in zip(xs, values, strict=True)) / sxx


class Churn:
    """N short-lived processes a round, each a copy of `sleep` under a new name."""

    def __init__(self, folder: Path, count: int) -> None:
        self.folder = folder
        self.count = count
        self.started = 0
        self.running: list[tuple[subprocess.Popen[bytes], Path]] = []
        sleep = shutil.which("sleep")
        if count and sleep is None:
            sys.exit("--churn needs a sleep program on PATH")
        self.sleep = sleep or ""

    def next_round(self) -> None:
        """Stop the previous round's processes and start new ones."""
        self.stop()
        for _ in range(self.count):
            self.started += 1
            program = self.folder / f"churn{self.started}"
            shutil.copy(self.sleep, program)
            self.running.append((subprocess.Popen([str(program), "3600"]), program))

    def stop(self) -> None:
        for process, program in self.running:
            process.kill()
            process.wait()
            program.unlink()
        self.running = []


def summary(name: str, unit: str, values: list[float]) -> str:
    half = len(values) // 2
    first, second = values[:half], values[half:]
    per_round = slope(values)
    halves = (
        f"first half {statistics.median(first):.3f}, second half {statistics.median(second):.3f}"
        if first
        else "too few rounds for halves"
    )
    median = statistics.median(values)
    # What the fitted line gains over the whole run, against the median.
    gained = per_round * (len(values) - 1)
    share = f" ({gained / median:+.0%} of the median)" if median else ""
    return (
        f"{name}: median {median:.3f} {unit} (min {min(values):.3f}, max {max(values):.3f}); "
        f"{halves}; slope {per_round:+.5f} {unit}/round, {gained:+.3f} {unit} over the "
        f"run{share}"
    )


def by_window(rows: list[Row], windows: int) -> str:
    """Medians of CPU and resident size over consecutive windows of rounds: where a
    bounded cache fills, the resident size climbs and then levels off."""
    size = max(1, -(-len(rows) // windows))
    parts = []
    for i in range(0, len(rows), size):
        window = rows[i : i + size]
        parts.append(
            f"  rounds {window[0].round}-{window[-1].round}: "
            f"cpu {statistics.median(r.cpu for r in window):.3f} s, "
            f"rss {statistics.median(r.rss for r in window):.1f} MiB, "
            f"peak {max(r.peak for r in window):.1f} MiB"
        )
    return "\n".join(parts)


def run_watch(memsnap: str, db: str, every: float, minutes: float, churn: Churn) -> list[Row]:
    watch = subprocess.Popen(
        [memsnap, "--db", db, "record", "--all", "--every", str(every)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert watch.stderr is not None
    rows: list[Row] = []
    peaks_reset = False
    try:
        end = time.monotonic() + minutes * 60
        last = 0.0
        print("round  cpu s  rss MiB  peak MiB  recorded", flush=True)
        for line in watch.stderr:
            found = SUMMARY.match(line)
            if found is None:
                print(line.rstrip(), file=sys.stderr)
                continue
            cpu = cpu_seconds(watch.pid)
            rss, peak = memory(watch.pid)
            peaks_reset = reset_peak(watch.pid)
            row = Row(len(rows) + 1, cpu - last, rss, peak, int(found.group(1)))
            rows.append(row)
            last = cpu
            print(
                f"{row.round:5d}  {row.cpu:5.3f}  {row.rss:7.1f}  {row.peak:8.1f}  "
                f"{row.recorded:8d}",
                flush=True,
            )
            churn.next_round()
            if time.monotonic() >= end:
                break
    finally:
        watch.send_signal(signal.SIGINT)
        watch.wait()
        churn.stop()
    if not peaks_reset:
        print("(clear_refs refused: each peak is the peak so far)")
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--every", type=float, default=10.0)
    parser.add_argument("--churn", type=int, default=0, metavar="N",
                        help="start N new short-lived processes every round")  # fmt: skip
    parser.add_argument("--windows", type=int, default=6,
                        help="consecutive windows of rounds to give medians of")  # fmt: skip
    parser.add_argument("--memsnap", default=shutil.which("memsnap"),
                        help="the memsnap command to run (default: the one on PATH)")  # fmt: skip
    args = parser.parse_args()
    if args.memsnap is None:
        sys.exit("needs an installed memsnap on PATH (or --memsnap PATH)")
    pids = sum(1 for name in os.listdir("/proc") if name.isdigit())
    load = os.getloadavg()
    print(
        f"watch of {pids} pids every {args.every:g} s for {args.minutes:g} minutes, "
        f"churn {args.churn} a round; load average {load[0]:.2f} at the start",
        flush=True,
    )
    with tempfile.TemporaryDirectory() as tmp:
        churn = Churn(Path(tmp), args.churn)
        rows = run_watch(args.memsnap, str(Path(tmp) / "watch.db"), args.every, args.minutes, churn)
    print(f"load average {os.getloadavg()[0]:.2f} at the end")
    if not rows:
        sys.exit("the watch ended before its first round")
    first = rows[0]
    print(
        f"\nround 1 (start-up and every process new): cpu {first.cpu:.3f} s, "
        f"rss {first.rss:.1f} MiB, peak {first.peak:.1f} MiB"
    )
    later = rows[1:]
    if not later:
        return
    print(f"rounds 2-{rows[-1].round} ({len(later)} rounds):")
    print("  " + summary("cpu per round", "s", [r.cpu for r in later]))
    print("  " + summary("rss", "MiB", [r.rss for r in later]))
    print("  " + summary("peak", "MiB", [r.peak for r in later]))
    print(f"  processes recorded per round: median {statistics.median(r.recorded for r in later)}")
    print(f"medians by window (rounds 2 on, {args.windows} windows):")
    print(by_window(later, args.windows))


if __name__ == "__main__":
    main()
