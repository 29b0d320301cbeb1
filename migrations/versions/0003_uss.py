"""USS totals: private clean + private dirty (psutil's unique set size), per snapshot and
per kind, filled in for the snapshots already recorded from their regions.

A region's share is NULL only where smaps gave neither field (maps only, `--no-smaps`);
sums skip NULLs as memsnap's own totals do, so a snapshot without smaps stays NULL.

Revision ID: 0003_uss
Revises: 0002_snapshot_digest
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003_uss"
down_revision = "0002_snapshot_digest"
branch_labels = None
depends_on = None

_PRIVATE = (
    "CASE WHEN r.private_clean IS NULL AND r.private_dirty IS NULL THEN NULL "
    "ELSE COALESCE(r.private_clean, 0) + COALESCE(r.private_dirty, 0) END"
)


def upgrade() -> None:
    with op.batch_alter_table("snapshots", schema=None) as batch_op:
        batch_op.add_column(sa.Column("uss", sa.BigInteger(), nullable=True))
    with op.batch_alter_table("snapshot_kinds", schema=None) as batch_op:
        batch_op.add_column(sa.Column("uss", sa.BigInteger(), nullable=True))
    # The regions of snapshot s are its process's rows alive at s.seq.
    op.execute(
        f"""
        UPDATE snapshot_kinds SET uss = (
            SELECT SUM({_PRIVATE}) FROM snapshots s JOIN regions r
              ON r.process_id = s.process_id AND r.first_seq <= s.seq
             AND (r.last_seq IS NULL OR r.last_seq >= s.seq)
            WHERE s.id = snapshot_kinds.snapshot_id AND r.kind = snapshot_kinds.kind)
        """
    )
    op.execute(
        """
        UPDATE snapshots SET uss = (
            SELECT SUM(k.uss) FROM snapshot_kinds k WHERE k.snapshot_id = snapshots.id)
        """
    )


def downgrade() -> None:
    with op.batch_alter_table("snapshot_kinds", schema=None) as batch_op:
        batch_op.drop_column("uss")
    with op.batch_alter_table("snapshots", schema=None) as batch_op:
        batch_op.drop_column("uss")
