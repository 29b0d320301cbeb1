"""How a SQLite database grows: per unchanged snapshot, and under a watch that prunes.

Rows printed:
- `unchanged`: bytes added per snapshot over 1,000 records of an idle process of about
  500 regions (the file measured after `PRAGMA wal_checkpoint(TRUNCATE)`); issue 12
  asks for 256 at most.
- `pushed`: the same 1,000 snapshots pushed (`memsnap push`) into another SQLite file
  that had the first: the bytes each adds there.
- `watch`: the file after each simulated day of a watch every `--every` seconds under
  `--keep-within 1d --keep-hourly 168 --keep-daily 31` (the clock driven here, each
  recording real), so that a month's growth can be read off.

    python benchmarks/growth.py                 # both rows
    python benchmarks/growth.py --days 31 --every 60

Needs a C compiler (for the helper) and memsnap importable.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
from datetime import UTC, datetime, timedelta
from pathlib import Path

from memsnap.capture.procfs import Proc
from memsnap.capture.sweep import Sweep
from memsnap.cli.record_cmd import prune_round
from memsnap.retention import Policy
from memsnap.store.database import open_database
from memsnap.store.prune import space_used

HELPER_SOURCE = Path(__file__).resolve().parent.parent / "tests" / "helpers" / "target.c"


def helper(workdir: Path, pages: int) -> tuple[subprocess.Popen[str], int]:
    cc = shutil.which("cc") or shutil.which("gcc")
    if cc is None:
        raise SystemExit("needs a C compiler (cc)")
    binary = workdir / "target"
    subprocess.run(
        [cc, "-O1", "-o", str(binary), str(HELPER_SOURCE), "-ldl", "-lpthread"], check=True
    )
    proc = subprocess.Popen([str(binary)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert proc.stdin is not None and proc.stdout is not None
    pid = int(proc.stdout.readline().split()[1])
    proc.stdin.write(f"pages {pages}\n")
    proc.stdin.flush()
    proc.stdout.readline()
    return proc, pid


def push(local: Path, target: Path) -> int:
    """`memsnap push` from one file into another; the target's bytes after it."""
    subprocess.run(
        [sys.executable, "-m", "memsnap", "--db", str(local), "push", str(target)],
        check=True,
        capture_output=True,
    )
    db = open_database(str(target))
    try:
        return space_used(db)
    finally:
        db.close()


def unchanged(workdir: Path, pid: int, records: int) -> None:
    local, target = workdir / "unchanged.db", workdir / "pushed.db"
    db = open_database(str(local))
    try:
        sweep = Sweep(db, Proc())
        regions = sweep.run([pid]).recorded[0].totals.regions
        before = space_used(db)
        pushed_before = push(local, target)
        for _ in range(records):
            sweep.run([pid])
        grown = space_used(db) - before
    finally:
        db.close()
    print(f"unchanged  {regions} regions  {records} records  {grown / records:.0f} bytes each")
    pushed = push(local, target) - pushed_before
    print(f"pushed  {records} snapshots  {pushed / records:.0f} bytes each in the target")


def watch(workdir: Path, pid: int, days: int, every: int) -> None:
    policy = Policy(hourly=168, daily=31, within=timedelta(days=1))
    now = [datetime(2026, 11, 1, tzinfo=UTC)]
    db = open_database(str(workdir / "watch.db"))
    try:
        sweep = Sweep(db, Proc(), clock=lambda: now[0])
        per_day = 86400 // every
        for day in range(1, days + 1):
            for _ in range(per_day):
                done = sweep.run([pid])
                prune_round(sweep, policy, [r.snapshot_id for r in done.recorded])
                now[0] += timedelta(seconds=every)
            print(f"watch  day {day}  every {every}s  {space_used(db)} bytes")
    finally:
        db.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pages", type=int, default=460, help="extra one-page regions")
    parser.add_argument("--records", type=int, default=1000)
    parser.add_argument("--days", type=int, default=31)
    parser.add_argument("--every", type=int, default=60)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="memsnap-growth-") as tmp:
        proc, pid = helper(Path(tmp), args.pages)
        try:
            unchanged(Path(tmp), pid, args.records)
            watch(Path(tmp), pid, args.days, args.every)
        finally:
            proc.kill()
            proc.wait()


if __name__ == "__main__":
    main()
