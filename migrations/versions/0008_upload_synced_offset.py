"""upload sessions: the offset known to be on disk, and the boot that wrote past it

Revision ID: 0008_upload_synced_offset
Revises: 0007_field_indexes
Create Date: 2026-12-05 17:20:00.000000

A tus upload to the local directory acknowledges each PATCH before its bytes are synced. After
a power loss the file can hold zeros where acknowledged bytes were (some file systems keep the
new size without the data). ``synced_offset`` is how far the file was synced, ``written_boot``
the machine boot (Linux boot id) during which bytes past it were written: once the machine
has booted again, the upload resumes from ``synced_offset``. Existing uploads get 0 and no
boot, which keeps their current behaviour.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0008_upload_synced_offset"
down_revision: str | None = "0007_field_indexes"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("upload_sessions") as batch:
        batch.add_column(
            sa.Column("synced_offset", sa.BigInteger(), nullable=False, server_default="0")
        )
        batch.add_column(sa.Column("written_boot", sa.String(length=36), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("upload_sessions") as batch:
        batch.drop_column("written_boot")
        batch.drop_column("synced_offset")
