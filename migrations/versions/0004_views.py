"""SQL views for everyone else: snapshot_list, snapshot_regions, latest_regions, kind_totals.

They are part of memsnap's interface (docs/interface.md), so that `sqlite3`, `psql`,
Grafana or pandas can read the history without learning the tables: addresses as
lower-case `0x...` text, sizes in bytes, times as stored (UTC).

The tables keep unsigned 64-bit values (addresses, offsets, inodes, sizes) as
`value - 2**63` in a BIGINT. The views undo that shift without ever leaving 64 bits:
adding 2**63 to a stored value is flipping its top bit, which is `s + (2**63 - 1) + 1`
for a negative `s` and `s - (2**63 - 1) - 1` otherwise; the result, read as unsigned, is
printed in hex by SQLite's `printf('%x')` and PostgreSQL's `to_hex`, which both print a
negative BIGINT as its unsigned two's complement. As numbers, PostgreSQL gets exact
`numeric` values (a hostile import can hold sizes, offsets or inodes of 2**63 and more,
which no BIGINT holds: an error there would break every query of the view); SQLite,
which has no wider integer, gives such values as an approximate REAL and every real one
(below 2**63) exactly.

The SQL is frozen here, as a migration must be. SQLite cannot alter a table a view
refers to in batch mode (Alembic copies the table and renames it, which checks every
view): a later migration that alters these tables drops the views first and creates
its own definitions after.

Revision ID: 0004_views
Revises: 0003_uss
"""

from __future__ import annotations

from alembic import op

revision = "0004_views"
down_revision = "0003_uss"
branch_labels = None
depends_on = None

VIEWS = ("snapshot_list", "snapshot_regions", "latest_regions", "kind_totals")
_MAX = "9223372036854775807"  # 2**63 - 1; 2**63 itself is no BIGINT literal


def _unsigned_bits(col: str) -> str:
    """The stored value plus 2**63, as the signed BIGINT with the same 64 bits."""
    return f"(CASE WHEN {col} < 0 THEN {col} + {_MAX} + 1 ELSE {col} - {_MAX} - 1 END)"


def _hex(col: str, dialect: str) -> str:
    if dialect == "postgresql":
        return f"('0x' || to_hex({_unsigned_bits(col)}))"
    return f"printf('0x%x', {_unsigned_bits(col)})"


def _u64(col: str, dialect: str) -> str:
    if dialect == "postgresql":
        return f"({col}::numeric + {_MAX} + 1)"
    return f"({col} + {_MAX} + 1)"


def _size(end: str, start: str, dialect: str) -> str:
    if dialect == "postgresql":
        return f"({end}::numeric - {start})"
    return f"({end} - {start})"


def _definitions(dialect: str) -> dict[str, str]:
    regions_of_snapshots = f"""
        SELECT s.id AS snapshot_id, p.host AS host, p.pid AS pid, p.command AS command,
               s.taken_at AS taken_at, s.seq AS seq,
               {_hex("r.start_addr", dialect)} AS "start",
               {_hex("r.end_addr", dialect)} AS "end",
               {_size("r.end_addr", "r.start_addr", dialect)} AS size,
               r.perms AS perms, {_u64('r."offset"', dialect)} AS "offset",
               r.dev AS device, {_u64("r.inode", dialect)} AS inode, pa.text AS path,
               r.deleted AS deleted, r.kind AS kind, r.rss AS rss, r.pss AS pss,
               r.swap AS swap, r.private_dirty AS private_dirty
        FROM snapshots s
        JOIN processes p ON p.id = s.process_id
        JOIN regions r ON r.process_id = s.process_id AND r.first_seq <= s.seq
             AND (r.last_seq IS NULL OR r.last_seq >= s.seq)
        LEFT JOIN paths pa ON pa.id = r.path_id"""
    return {
        "snapshot_list": f"""
            SELECT s.id AS snapshot_id, p.host AS host, p.pid AS pid, p.command AS command,
                   p.exe AS exe, s.taken_at AS taken_at, s.label AS label,
                   s.source AS source, s.seq AS seq, s.regions AS regions,
                   {_u64("s.size", dialect)} AS size, s.rss AS rss, s.pss AS pss,
                   s.swap AS swap, s.uss AS uss
            FROM snapshots s JOIN processes p ON p.id = s.process_id""",
        "snapshot_regions": regions_of_snapshots,
        "latest_regions": f"""{regions_of_snapshots}
        WHERE s.seq = (SELECT MAX(x.seq) FROM snapshots x WHERE x.process_id = s.process_id)""",
        "kind_totals": f"""
            SELECT s.id AS snapshot_id, p.host AS host, p.pid AS pid, p.command AS command,
                   s.taken_at AS taken_at, k.kind AS kind, k.regions AS regions,
                   {_u64("k.size", dialect)} AS size, k.rss AS rss, k.pss AS pss,
                   k.swap AS swap, k.uss AS uss
            FROM snapshot_kinds k
            JOIN snapshots s ON s.id = k.snapshot_id
            JOIN processes p ON p.id = s.process_id""",
    }


def upgrade() -> None:
    dialect = op.get_bind().dialect.name
    for name, body in _definitions(dialect).items():
        op.execute(f"CREATE VIEW {name} AS {body}")


def downgrade() -> None:
    for name in reversed(VIEWS):
        op.execute(f"DROP VIEW IF EXISTS {name}")
