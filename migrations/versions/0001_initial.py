"""Initial schema: processes, snapshots, per-kind totals, interned paths, versioned regions.

U64 columns (addresses, offsets, inodes, sizes) are BIGINTs holding value - 2**63;
times are UTC.

Revision ID: 0001_initial
Revises: (none)
Create Date: 2026-11-24 23:16:58.332378
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001_initial"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "paths",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("digest", sa.String(length=64), nullable=False),
        sa.Column("text", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_paths")),
        sa.UniqueConstraint("digest", name=op.f("uq_paths_digest")),
    )
    op.create_table(
        "processes",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("host", sa.String(length=255), nullable=False),
        sa.Column("boot_id", sa.String(length=64), nullable=True),
        sa.Column("pid", sa.Integer(), nullable=False),
        sa.Column("start_ticks", sa.BigInteger(), nullable=True),
        sa.Column("exe", sa.Text(), nullable=True),
        sa.Column("command", sa.Text(), nullable=False),
        sa.Column("cmdline", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_processes")),
        sa.UniqueConstraint(
            "host",
            "boot_id",
            "pid",
            "start_ticks",
            name=op.f("uq_processes_host_boot_id_pid_start_ticks"),
        ),
    )
    with op.batch_alter_table("processes", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_processes_pid"), ["pid"], unique=False)

    op.create_table(
        "regions",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("process_id", sa.Integer(), nullable=False),
        sa.Column("first_seq", sa.Integer(), nullable=False),
        sa.Column("last_seq", sa.Integer(), nullable=True),
        sa.Column("start_addr", sa.BigInteger(), nullable=False),
        sa.Column("end_addr", sa.BigInteger(), nullable=False),
        sa.Column("perms", sa.String(length=4), nullable=False),
        sa.Column("offset", sa.BigInteger(), nullable=False),
        sa.Column("dev", sa.String(length=32), nullable=False),
        sa.Column("inode", sa.BigInteger(), nullable=False),
        sa.Column("path_id", sa.Integer(), nullable=True),
        sa.Column("deleted", sa.Boolean(), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("rss", sa.BigInteger(), nullable=True),
        sa.Column("pss", sa.BigInteger(), nullable=True),
        sa.Column("shared_clean", sa.BigInteger(), nullable=True),
        sa.Column("shared_dirty", sa.BigInteger(), nullable=True),
        sa.Column("private_clean", sa.BigInteger(), nullable=True),
        sa.Column("private_dirty", sa.BigInteger(), nullable=True),
        sa.Column("referenced", sa.BigInteger(), nullable=True),
        sa.Column("anonymous", sa.BigInteger(), nullable=True),
        sa.Column("anon_huge", sa.BigInteger(), nullable=True),
        sa.Column("swap", sa.BigInteger(), nullable=True),
        sa.Column("swap_pss", sa.BigInteger(), nullable=True),
        sa.Column("locked", sa.BigInteger(), nullable=True),
        sa.Column("vm_flags", sa.Text(), nullable=True),
        sa.ForeignKeyConstraint(["path_id"], ["paths.id"], name=op.f("fk_regions_path_id_paths")),
        sa.ForeignKeyConstraint(
            ["process_id"],
            ["processes.id"],
            name=op.f("fk_regions_process_id_processes"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_regions")),
    )
    with op.batch_alter_table("regions", schema=None) as batch_op:
        batch_op.create_index("ix_regions_process_first", ["process_id", "first_seq"], unique=False)
        batch_op.create_index("ix_regions_process_last", ["process_id", "last_seq"], unique=False)

    op.create_table(
        "snapshots",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("process_id", sa.Integer(), nullable=False),
        sa.Column("seq", sa.Integer(), nullable=False),
        sa.Column("taken_at", sa.DateTime(), nullable=False),
        sa.Column("label", sa.Text(), nullable=True),
        sa.Column("source", sa.String(length=16), nullable=False),
        sa.Column("page_size", sa.Integer(), nullable=False),
        sa.Column("kernel", sa.String(length=255), nullable=True),
        sa.Column("has_smaps", sa.Boolean(), nullable=False),
        sa.Column("regions", sa.Integer(), nullable=False),
        sa.Column("size", sa.BigInteger(), nullable=False),
        sa.Column("rss", sa.BigInteger(), nullable=True),
        sa.Column("pss", sa.BigInteger(), nullable=True),
        sa.Column("swap", sa.BigInteger(), nullable=True),
        sa.ForeignKeyConstraint(
            ["process_id"],
            ["processes.id"],
            name=op.f("fk_snapshots_process_id_processes"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_snapshots")),
        sa.UniqueConstraint("process_id", "seq", name=op.f("uq_snapshots_process_id_seq")),
    )
    with op.batch_alter_table("snapshots", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_snapshots_taken_at"), ["taken_at"], unique=False)

    op.create_table(
        "snapshot_kinds",
        sa.Column("snapshot_id", sa.Integer(), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("regions", sa.Integer(), nullable=False),
        sa.Column("size", sa.BigInteger(), nullable=False),
        sa.Column("rss", sa.BigInteger(), nullable=True),
        sa.Column("pss", sa.BigInteger(), nullable=True),
        sa.Column("swap", sa.BigInteger(), nullable=True),
        sa.ForeignKeyConstraint(
            ["snapshot_id"],
            ["snapshots.id"],
            name=op.f("fk_snapshot_kinds_snapshot_id_snapshots"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("snapshot_id", "kind", name=op.f("pk_snapshot_kinds")),
    )


def downgrade() -> None:
    op.drop_table("snapshot_kinds")
    with op.batch_alter_table("snapshots", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_snapshots_taken_at"))

    op.drop_table("snapshots")
    with op.batch_alter_table("regions", schema=None) as batch_op:
        batch_op.drop_index("ix_regions_process_last")
        batch_op.drop_index("ix_regions_process_first")

    op.drop_table("regions")
    with op.batch_alter_table("processes", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_processes_pid"))

    op.drop_table("processes")
    op.drop_table("paths")
