"""Compact unchanged snapshots: per-kind totals stored only where they change, and the
digest only on a process's latest snapshot.

Before this, every snapshot had its fourteen-odd `snapshot_kinds` rows, copied from the
snapshot before when nothing changed (about three quarters of an unchanged snapshot's
bytes), and kept the digest it was compared by, though only the latest snapshot of a
process is ever compared again. Now a snapshot whose per-kind totals are those of the
snapshot before it names the snapshot holding the rows (`snapshots.kinds_from`) and has
none of its own; older snapshots' digests are cleared.

The upgrade walks each process's snapshots in seq order and lets a snapshot share the
rows of the snapshot before whenever they are equal (every kind, every total); what any
snapshot reads back is unchanged. The `kind_totals` view now reads the rows a snapshot
names; the other views of 0004_views are as they were, and all four are dropped before
the tables change and created after (SQLite cannot alter a table a view refers to in
batch mode). The downgrade copies the shared rows back to every snapshot; the cleared
digests are not put back (a process's next recording then reads its maps whole, once).

Revision ID: 0006_compact
Revises: 0005_replaced
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType
from typing import Any

import sqlalchemy as sa
from alembic import op

revision = "0006_compact"
down_revision = "0005_replaced"
branch_labels = None
depends_on = None

_BATCH = 500  # snapshots read at a time (ids per IN (...), inside every parameter limit)


def _views_0004() -> ModuleType:
    """0004_views, whose view definitions (but kind_totals') are kept as they are."""
    path = Path(__file__).with_name("0004_views.py")
    spec = importlib.util.spec_from_file_location("memsnap_migration_0004_views", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _definitions(dialect: str) -> dict[str, str]:
    views = _views_0004()
    defined: dict[str, str] = views._definitions(dialect)
    defined["kind_totals"] = f"""
            SELECT s.id AS snapshot_id, p.host AS host, p.pid AS pid, p.command AS command,
                   s.taken_at AS taken_at, k.kind AS kind, k.regions AS regions,
                   {views._u64("k.size", dialect)} AS size, k.rss AS rss, k.pss AS pss,
                   k.swap AS swap, k.uss AS uss
            FROM snapshots s
            JOIN snapshot_kinds k ON k.snapshot_id = COALESCE(s.kinds_from, s.id)
            JOIN processes p ON p.id = s.process_id"""
    return defined


def _drop_views() -> None:
    for name in reversed(_views_0004().VIEWS):
        op.execute(f"DROP VIEW IF EXISTS {name}")


def _share_equal_kinds(conn: Any) -> None:
    """Each snapshot whose per-kind rows equal those of the snapshot before it (same
    process, next lower seq) names the snapshot holding them and loses its own. Read a
    process and a batch of its snapshots at a time: a month of records every few
    seconds is a few million rows, never held at once."""
    processes = [row[0] for row in conn.exec_driver_sql("SELECT id FROM processes ORDER BY id")]
    for process in processes:
        before: tuple[tuple[Any, ...], ...] = ()  # the rows of the snapshot before
        owner = 0  # the snapshot holding them
        after = None
        while True:
            batch = conn.execute(
                sa.text(
                    "SELECT id, seq FROM snapshots WHERE process_id = :p AND seq > :after "
                    "ORDER BY seq LIMIT :n"
                ),
                {"p": process, "after": -1 if after is None else after, "n": _BATCH},
            ).all()
            if not batch:
                break
            after = batch[-1].seq
            ids = [row.id for row in batch]
            kinds: dict[int, list[tuple[Any, ...]]] = {i: [] for i in ids}
            found = conn.execute(
                sa.text(
                    "SELECT snapshot_id, kind, regions, size, rss, pss, swap, uss "
                    "FROM snapshot_kinds WHERE snapshot_id IN :ids ORDER BY snapshot_id, kind"
                ).bindparams(sa.bindparam("ids", expanding=True)),
                {"ids": ids},
            )
            for snapshot, *rest in found:
                kinds[snapshot].append(tuple(rest))
            shared = []
            for snapshot in ids:
                here = tuple(kinds[snapshot])
                if here and here == before:
                    shared.append({"owner": owner, "id": snapshot})
                else:
                    before, owner = here, snapshot
            if shared:
                conn.execute(
                    sa.text("UPDATE snapshots SET kinds_from = :owner WHERE id = :id"), shared
                )
                conn.execute(sa.text("DELETE FROM snapshot_kinds WHERE snapshot_id = :id"), shared)


def upgrade() -> None:
    conn = op.get_bind()
    _drop_views()
    op.add_column("snapshots", sa.Column("kinds_from", sa.Integer(), nullable=True))
    _share_equal_kinds(conn)
    op.execute(
        "UPDATE snapshots SET digest = NULL WHERE digest IS NOT NULL AND seq < "
        "(SELECT MAX(x.seq) FROM snapshots x WHERE x.process_id = snapshots.process_id)"
    )
    for name, body in _definitions(conn.dialect.name).items():
        op.execute(f"CREATE VIEW {name} AS {body}")


def downgrade() -> None:
    _drop_views()
    op.execute(
        "INSERT INTO snapshot_kinds (snapshot_id, kind, regions, size, rss, pss, swap, uss) "
        "SELECT s.id, k.kind, k.regions, k.size, k.rss, k.pss, k.swap, k.uss "
        "FROM snapshots s JOIN snapshot_kinds k ON k.snapshot_id = s.kinds_from"
    )
    sqlite = op.get_bind().dialect.name == "sqlite"
    if sqlite:
        # SQLite drops a column by copying the table and dropping the old one, and
        # dropping it deletes every per-kind row (ON DELETE CASCADE, foreign keys on):
        # they are kept aside meanwhile.
        op.execute("CREATE TEMP TABLE memsnap_kinds_kept AS SELECT * FROM snapshot_kinds")
    with op.batch_alter_table("snapshots", schema=None) as batch_op:
        batch_op.drop_column("kinds_from")
    if sqlite:
        op.execute("DELETE FROM snapshot_kinds")
        op.execute("INSERT INTO snapshot_kinds SELECT * FROM memsnap_kinds_kept")
        op.execute("DROP TABLE memsnap_kinds_kept")
    _views_0004().upgrade()
