"""Replaced code: per snapshot, the executable files whose path named another file on
disk when the snapshot was taken (stat through /proc/PID/root), for `memsnap check`'s
`replaced-code`. It cannot be worked out later, so snapshots recorded before this
migration, and imported texts, keep NULL: not known.

Adding a column is an ALTER TABLE on both databases, which leaves the views of
0004_views alone; dropping it on SQLite copies the table, which its views forbid, so the
downgrade drops them first and puts back 0004's own definitions after.

Revision ID: 0005_replaced
Revises: 0004_views
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

import sqlalchemy as sa
from alembic import op

revision = "0005_replaced"
down_revision = "0004_views"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("snapshots", sa.Column("replaced", sa.Text(), nullable=True))


def _views() -> ModuleType:
    """0004_views, whose view definitions a downgrade to it restores."""
    path = Path(__file__).with_name("0004_views.py")
    spec = importlib.util.spec_from_file_location("memsnap_migration_0004_views", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def downgrade() -> None:
    views = _views()
    views.downgrade()
    with op.batch_alter_table("snapshots", schema=None) as batch_op:
        batch_op.drop_column("replaced")
    views.upgrade()
