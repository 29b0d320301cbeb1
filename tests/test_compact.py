"""Compact unchanged snapshots (migration 0006_compact): an unchanged snapshot of a real
idle process costs at most 256 bytes of a SQLite file, and a database written before the
migration reads back the same after it: every command's JSON and every view's rows."""

from __future__ import annotations

import itertools
import json
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import text
from test_views import record_variety

from conftest import Cli, Target
from memsnap.capture.procfs import Proc
from memsnap.capture.sweep import Sweep
from memsnap.store.database import SCHEMA_HEAD, migrations_dir, open_database, stored_revision
from memsnap.store.identify import VERSION_TABLE
from memsnap.store.prune import space_used

UNCHANGED_BYTES = 256  # issue 12: per unchanged snapshot, indexes included
RECORDS = 1000


@pytest.mark.live
def test_an_unchanged_snapshot_costs_at_most_256_bytes(tmp_path: Path, target: Target) -> None:
    target.send("pages 460")  # about 500 regions, as the issue measures
    db = open_database(str(tmp_path / "unchanged.db"))
    try:
        sweep = Sweep(db, Proc())
        first = sweep.run([target.pid]).recorded[0]
        assert first.totals.regions >= 480
        before = space_used(db)  # after a WAL checkpoint (TRUNCATE)
        for _ in range(RECORDS):
            assert len(sweep.run([target.pid]).recorded) == 1
        grown = space_used(db) - before
        with db.reading() as conn:
            count = conn.execute(text("SELECT count(*) FROM snapshots")).scalar_one()
            own_kinds = conn.execute(
                text("SELECT count(*) FROM snapshots WHERE kinds_from IS NULL")
            ).scalar_one()
            digests = conn.execute(
                text("SELECT count(*) FROM snapshots WHERE digest IS NOT NULL")
            ).scalar_one()
    finally:
        db.close()
    assert grown / RECORDS <= UNCHANGED_BYTES, f"{grown / RECORDS:.0f} bytes per snapshot"
    assert count == RECORDS + 1
    # The process sat idle: almost every record was an unchanged copy, without kind rows.
    assert own_kinds < RECORDS // 10
    assert digests == 1  # the latest's: no other is ever compared


def doc(cli: Cli, *args: str) -> Any:
    out = cli(*args, "--format", "json")
    assert out.exit_code == 0, out.stderr
    return json.loads(out.stdout)


def everything_shown(cli: Cli) -> dict[str, Any]:
    """The JSON of list, and of show, show --summary, diff with the one before and
    replay of every snapshot and process."""
    listed = doc(cli, "list")["snapshots"]
    shown: dict[str, Any] = {"list": listed}
    by_process: dict[tuple[Any, ...], list[int]] = {}
    for s in sorted(listed, key=lambda s: s["id"]):
        shown[f"show {s['id']}"] = doc(cli, "show", str(s["id"]))
        shown[f"summary {s['id']}"] = doc(cli, "show", str(s["id"]), "--summary")
        key = (s["host"], s["boot_id"], s["pid"], s["start_ticks"] or -s["id"])
        by_process.setdefault(key, []).append(s["id"])
    for ids in by_process.values():
        for a, b in itertools.pairwise(ids):
            shown[f"diff {a} {b}"] = doc(cli, "diff", str(a), str(b))
    live = [s["pid"] for s in listed if s["start_ticks"] is not None]
    for pid in sorted(set(live)):
        shown[f"replay {pid}"] = doc(cli, "replay", "--pid", str(pid))
    # Across processes (the live one against an import): identity matching.
    shown["diff across"] = doc(cli, "diff", str(listed[-1]["id"]), str(listed[0]["id"]))
    return shown


VIEWS = ("snapshot_list", "snapshot_regions", "latest_regions", "kind_totals")


def view_rows(conn: Any) -> dict[str, list[tuple[Any, ...]]]:
    rows = {}
    for view in VIEWS:
        found = conn.execute(text(f"SELECT * FROM {view}")).all()
        rows[view] = sorted((tuple(map(str, r)) for r in found), key=str)
    return rows


def _alembic(conn: Any, revision: str) -> None:
    from alembic import command
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(migrations_dir()))
    cfg.attributes["connection"] = conn
    cfg.attributes["version_table"] = VERSION_TABLE
    command.downgrade(cfg, revision)


@pytest.mark.live
def test_migration_to_compact_reads_back_the_same(
    cli: Cli, db_url: str, target: Target, tmp_path: Path
) -> None:
    # A history with unchanged copies between changes, and imports.
    record_variety(cli, target, tmp_path)
    for step in (None, None, "anon 65536", None, None):
        if step is not None:
            target.send(step)
        assert cli("record", str(target.pid), "--no-smaps").exit_code == 0
    before = everything_shown(cli)

    # The same history as the previous head (0005_replaced) stored it: every snapshot
    # with its own per-kind rows and its digest.
    db = open_database(db_url)
    try:
        with db.engine.begin() as conn:
            _alembic(conn, "0005_replaced")
        with db.engine.begin() as conn:
            assert stored_revision(conn) == "0005_replaced"
            conn.execute(
                text("UPDATE snapshots SET digest = :d WHERE digest IS NULL AND source = 'live'"),
                {"d": "f" * 40},
            )
            snapshots_at_0005 = conn.execute(text("SELECT count(*) FROM snapshots")).scalar_one()
            with_kinds = conn.execute(
                text("SELECT count(DISTINCT snapshot_id) FROM snapshot_kinds")
            ).scalar_one()
            assert with_kinds == snapshots_at_0005
            kind_rows_at_0005 = conn.execute(text("SELECT count(*) FROM snapshot_kinds")).scalar()
            views_at_0005 = view_rows(conn)
    finally:
        db.close()

    db = open_database(db_url)  # migrates to head, as any command would
    try:
        with db.engine.connect() as conn:
            assert stored_revision(conn) == SCHEMA_HEAD
            assert view_rows(conn) == views_at_0005
            kind_rows = conn.execute(text("SELECT count(*) FROM snapshot_kinds")).scalar()
            shared = conn.execute(
                text("SELECT count(*) FROM snapshots WHERE kinds_from IS NOT NULL")
            ).scalar_one()
            digests = conn.execute(
                text(
                    "SELECT s.process_id, s.seq, s.digest, "
                    "(SELECT MAX(x.seq) FROM snapshots x WHERE x.process_id = s.process_id) "
                    "FROM snapshots s WHERE s.source = 'live'"
                )
            ).all()
    finally:
        db.close()
    # The unchanged --no-smaps copies, at least. (Two smaps records in a row share too when
    # no Pss moved between them, which depends on what else maps the same libraries at
    # that instant: the database server's own processes, with PostgreSQL.)
    assert shared >= 3
    assert kind_rows is not None and kind_rows_at_0005 is not None
    assert kind_rows < kind_rows_at_0005
    # Only each process's latest snapshot keeps its digest.
    assert {(seq == latest, digest is not None) for _, seq, digest, latest in digests} == {
        (True, True),
        (False, False),
    }
    assert everything_shown(cli) == before

    # Recording goes on from the migrated history: an unchanged copy shares kind rows.
    assert cli("record", str(target.pid), "--no-smaps").exit_code == 0
    db = open_database(db_url)
    try:
        with db.engine.connect() as conn:
            newest = conn.execute(
                text("SELECT kinds_from FROM snapshots ORDER BY id DESC LIMIT 1")
            ).scalar_one()
    finally:
        db.close()
    assert newest is not None
