"""The SQL views (migration 0004_views) say what `show` and `list` say, on SQLite and
PostgreSQL: the same addresses (up to [vsyscall] at 0xffffffffff600000, above the signed
64-bit range), sizes, kinds and totals, read straight with SQL."""

from __future__ import annotations

import json
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import text

from conftest import Cli, Target, capture_path
from memsnap.store.database import open_database

# The maps line of a hostile import: offset, inode and end at the very top of 64 bits.
HOSTILE = (
    "00400000-ffffffffffffffff r-xp ffffffffffffffff fe:01 18446744073709551615  /bin/odd\n"
    "ffffffffff600000-ffffffffff601000 --xp 00000000 00:00 0  [vsyscall]\n"
)


def query(url: str, sql: str, **params: Any) -> list[dict[str, Any]]:
    db = open_database(url)
    try:
        with db.reading() as conn:
            return [dict(row._mapping) for row in conn.execute(text(sql), params)]
    finally:
        db.close()


def as_int(value: Any) -> Any:
    """PostgreSQL gives the 64-bit columns as exact numerics, SQLite as integers."""
    return int(value) if isinstance(value, (Decimal, float)) else value


def doc(cli: Cli, *args: str) -> Any:
    out = cli(*args, "--format", "json")
    assert out.exit_code == 0, out.stderr
    return json.loads(out.stdout)


def record_variety(cli: Cli, target: Target, tmp_path: Path) -> None:
    """A live process with one of most kinds (and [vsyscall]), recorded twice with a
    change between; two imported captures, one 32-bit."""
    out = cli("record", str(target.pid), "--label", "start")
    assert out.exit_code == 0, out.stderr
    target.send("dlopen libz.so.1")
    target.send("heap 3000000")
    target.send("anon 7340032")
    target.send("memfd")
    target.send(f"deleted {tmp_path}")
    target.send(f"weird {tmp_path}")
    for _ in range(2):
        out = cli("record", str(target.pid))
        assert out.exit_code == 0, out.stderr
    for name in (
        "local-linux6.18-x86_64-c-program-sysv-memfd-deleted-newline-rwx-thread-smaps.txt",
        "hs_err-jvm7-i386-32bit-jboss-2441-maps.txt",
    ):
        out = cli("record", "--from-file", str(capture_path(name)), "--pid", "4242")
        assert out.exit_code == 0, out.stderr


REGION_FIELDS = (
    "start",
    "end",
    "size",
    "perms",
    "offset",
    "device",
    "inode",
    "path",
    "deleted",
    "kind",
    "rss",
    "pss",
    "swap",
    "private_dirty",
)


def region_rows(url: str, view: str, where: str = "", **params: Any) -> list[dict[str, Any]]:
    rows = query(url, f"SELECT * FROM {view} {where}", **params)
    for row in rows:
        for key in ("size", "offset", "inode"):
            row[key] = as_int(row[key])
        row["deleted"] = bool(row["deleted"])
    return sorted(rows, key=lambda r: (r["snapshot_id"], int(r["start"], 16)))


@pytest.mark.live
def test_views_say_what_show_and_list_say(
    cli: Cli, db_url: str, target: Target, tmp_path: Path
) -> None:
    record_variety(cli, target, tmp_path)
    listed = doc(cli, "list")["snapshots"]
    assert len(listed) == 5

    by_id = {row["snapshot_id"]: row for row in query(db_url, "SELECT * FROM snapshot_list")}
    assert set(by_id) == {s["id"] for s in listed}
    for s in listed:
        row = by_id[s["id"]]
        assert (row["host"], row["pid"], row["command"], row["exe"]) == (
            s["host"],
            s["pid"],
            s["command"],
            s["exe"],
        )
        assert (row["label"], row["source"], row["seq"]) == (s["label"], s["source"], s["seq"])
        totals = {k: as_int(row[k]) for k in ("regions", "size", "rss", "pss", "swap", "uss")}
        assert totals == s["totals"]
        assert str(row["taken_at"])[:19] == s["taken_at"][:19].replace("T", " ")

    every_region = region_rows(db_url, "snapshot_regions")
    totals_rows = query(db_url, "SELECT * FROM kind_totals")
    latest = region_rows(db_url, "latest_regions")
    for s in listed:
        shown = doc(cli, "show", str(s["id"]))
        want = [{f: r[f] for f in REGION_FIELDS} for r in shown["regions"]]
        got = [
            {f: r[f] for f in REGION_FIELDS} for r in every_region if r["snapshot_id"] == s["id"]
        ]
        assert got == want, s["id"]
        one = region_rows(db_url, "snapshot_regions", "WHERE snapshot_id = :i", i=s["id"])
        assert [{f: r[f] for f in REGION_FIELDS} for r in one] == want
        assert {r["pid"] for r in one} == {s["pid"]}

        summary = doc(cli, "show", str(s["id"]), "--summary")["kinds"]
        kinds = {
            r["kind"]: {k: as_int(r[k]) for k in ("regions", "size", "rss", "pss", "swap", "uss")}
            for r in totals_rows
            if r["snapshot_id"] == s["id"]
        }
        assert kinds == summary, s["id"]
    # latest_regions: the regions of the highest-seq snapshot of each process.
    newest: dict[tuple[str, str, int], dict[str, Any]] = {}
    for s in listed:
        key = (s["host"], s["boot_id"] or "", s["start_ticks"] or -s["id"])
        if key not in newest or s["seq"] > newest[key]["seq"]:
            newest[key] = s
    latest_ids = {s["id"] for s in newest.values()}
    assert {r["snapshot_id"] for r in latest} == latest_ids
    assert latest == [r for r in every_region if r["snapshot_id"] in latest_ids]

    live = [r for r in every_region if r["pid"] == target.pid]
    assert {"0xffffffffff600000", "0xffffffffff601000"} <= {r["start"] for r in live} | {
        r["end"] for r in live
    }


def test_hostile_values_at_the_top_of_64_bits(cli: Cli, db_url: str, tmp_path: Path) -> None:
    hostile = tmp_path / "hostile.maps"
    hostile.write_text(HOSTILE)
    assert cli("record", "--from-file", str(hostile), "--pid", "4343").exit_code == 0
    rows = query(db_url, 'SELECT start, "end", size, "offset", inode, kind FROM snapshot_regions')
    rows.sort(key=lambda r: int(r["start"], 16))
    odd, vsyscall = rows
    assert (odd["start"], odd["end"]) == ("0x400000", "0xffffffffffffffff")
    assert (vsyscall["start"], vsyscall["end"], vsyscall["kind"]) == (
        "0xffffffffff600000",
        "0xffffffffff601000",
        "vsyscall",
    )
    assert as_int(vsyscall["size"]) == 4096
    top = 2**64 - 1
    if "postgresql" in db_url:
        # Exact numerics: nothing above 2**63 breaks a query or loses a digit.
        assert (odd["size"], odd["offset"], odd["inode"]) == (top - 0x400000, top, top)
    else:
        # SQLite has no integer past 2**63: such values come as approximate REALs.
        assert float(odd["offset"]) == float(top) and float(odd["inode"]) == float(top)
        assert int(odd["size"]) == top - 0x400000 or float(odd["size"]) == float(top - 0x400000)
