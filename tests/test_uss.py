"""USS (private clean + private dirty, as psutil defines it) in totals, list and summaries."""

from __future__ import annotations

import csv
import io
import json
import re

import pytest

from conftest import Cli, Target
from memsnap.model import Region, Totals, columns_of, combine, totals_by_kind


def _private_bytes(pid: int) -> int:
    """Private_Clean + Private_Dirty over /proc/PID/smaps, in bytes."""
    with open(f"/proc/{pid}/smaps") as f:
        text = f.read()
    return 1024 * sum(
        int(kb) for kb in re.findall(r"^Private_(?:Clean|Dirty):\s+(\d+) kB$", text, re.M)
    )


def test_uss_is_private_clean_plus_private_dirty_per_kind() -> None:
    regions = [
        Region(
            0x1000,
            0x3000,
            "rw-p",
            0,
            "00:00",
            0,
            "[heap]",
            private_clean=4096,
            private_dirty=8192,
            rss=12288,
            kind="heap",
        ),
        Region(
            0x3000,
            0x4000,
            "rw-p",
            0,
            "00:00",
            0,
            "[heap]",
            private_clean=0,
            private_dirty=65536,
            rss=65536,
            kind="heap",
        ),
        Region(
            0x5000,
            0x6000,
            "r--p",
            0,
            "08:01",
            7,
            "/lib/x.so",
            private_clean=1024,
            private_dirty=None,
            kind="lib-rodata",
        ),
        Region(0x7000, 0x8000, "rw-p", 0, "00:00", 0, None, kind="anon"),  # no smaps
    ]
    kinds = totals_by_kind(columns_of(regions), [r.kind for r in regions])
    assert kinds["heap"].uss == 4096 + 8192 + 65536
    assert kinds["lib-rodata"].uss == 1024
    assert kinds["anon"].uss is None
    assert combine(kinds.values()).uss == 4096 + 8192 + 65536 + 1024
    assert combine([Totals(1, 4096)]).uss is None


@pytest.mark.live
def test_recorded_uss_is_the_kernels(cli: Cli, target: Target) -> None:
    target.send("heap 3000000")
    for _ in range(5):  # the kernel is the oracle: read it around the record, unchanged
        before = _private_bytes(target.pid)
        done = cli("record", str(target.pid))
        assert done.exit_code == 0, done.stderr
        if _private_bytes(target.pid) == before:
            break
    doc = json.loads(cli("list", "--format", "json", "--limit", "1").stdout)
    totals = doc["snapshots"][0]["totals"]
    assert totals["uss"] == before > 3000000
    shown = json.loads(
        cli("show", str(doc["snapshots"][0]["id"]), "--summary", "--format", "json").stdout
    )
    assert shown["snapshot"]["totals"]["uss"] == before
    assert sum(k["uss"] or 0 for k in shown["kinds"].values()) == before
    assert shown["kinds"]["heap"]["uss"] >= 3000000


@pytest.mark.live
def test_uss_in_list_and_summary_tables_and_csv(cli: Cli, target: Target) -> None:
    assert cli("record", str(target.pid)).exit_code == 0
    assert cli("record", str(target.pid)).exit_code == 0  # an unchanged copy: same totals
    snaps = json.loads(cli("list", "--format", "json").stdout)["snapshots"]
    assert all(s["totals"]["uss"] > 0 for s in snaps)
    table = cli("list").stdout.splitlines()
    assert "uss" in table[0].split()
    rows = list(csv.DictReader(io.StringIO(cli("list", "--format", "csv").stdout)))
    assert [int(r["uss"]) for r in rows] == [s["totals"]["uss"] for s in snaps]
    summary = cli("show", "1", "--summary").stdout
    assert "uss" in next(line for line in summary.splitlines() if "kind" in line).split()
    by_kind = list(
        csv.DictReader(io.StringIO(cli("show", "1", "--summary", "--format", "csv").stdout))
    )
    assert sum(int(r["uss"] or 0) for r in by_kind) == snaps[0]["totals"]["uss"]
    for snap in snaps:  # the kinds' USS add up to the snapshot's, copy or not
        doc = json.loads(cli("show", str(snap["id"]), "--summary", "--format", "json").stdout)
        assert sum(k["uss"] or 0 for k in doc["kinds"].values()) == snap["totals"]["uss"]


@pytest.mark.live
def test_uss_is_null_without_smaps(cli: Cli, target: Target) -> None:
    assert cli("record", str(target.pid), "--no-smaps").exit_code == 0
    (snap,) = json.loads(cli("list", "--format", "json").stdout)["snapshots"]
    assert snap["totals"]["uss"] is None
    rows = list(csv.DictReader(io.StringIO(cli("list", "--format", "csv").stdout)))
    assert rows[0]["uss"] == ""
