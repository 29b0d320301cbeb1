"""Snapshot digest: a hash of the text a live snapshot was taken from.

Recording a process whose smaps text is byte-for-byte what it was at its latest snapshot
then needs neither parsing nor comparing: the new snapshot copies the latest's totals.

Revision ID: 0002_snapshot_digest
Revises: 0001_initial
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002_snapshot_digest"
down_revision = "0001_initial"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("snapshots", schema=None) as batch_op:
        batch_op.add_column(sa.Column("digest", sa.String(length=64), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("snapshots", schema=None) as batch_op:
        batch_op.drop_column("digest")
