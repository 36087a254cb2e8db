"""records: collection options for the records REST API (sort, indexes, search, facets)

Revision ID: 0005_records
Revises: 0004_files
Create Date: 2026-12-02 00:10:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005_records"
down_revision: str | None = "0004_files"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_OPTIONS = ("sortable", "indexes", "searchable", "facets")


def upgrade() -> None:
    # Existing collections get empty lists (the model declares the same server default).
    with op.batch_alter_table("sync_collections", schema=None) as batch_op:
        for name in _OPTIONS:
            batch_op.add_column(sa.Column(name, sa.JSON(), nullable=False, server_default="[]"))


def downgrade() -> None:
    with op.batch_alter_table("sync_collections", schema=None) as batch_op:
        for name in reversed(_OPTIONS):
            batch_op.drop_column(name)
