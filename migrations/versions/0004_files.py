"""files: upload sessions, stored blobs, file objects and image variants

Revision ID: 0004_files
Revises: 0003_realtime
Create Date: 2026-12-02 00:10:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import homeport.kit.db

revision: str = "0004_files"
down_revision: str | None = "0003_realtime"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "file_blobs",
        sa.Column("tenant_id", sa.String(length=36), nullable=False),
        sa.Column("sha256", sa.String(length=64), nullable=False),
        sa.Column("storage_key", sa.String(length=300), nullable=False),
        sa.Column("size", sa.BigInteger(), nullable=False),
        sa.Column("mime_type", sa.String(length=127), nullable=False),
        sa.Column("variants_status", sa.String(length=10), nullable=True),
        sa.Column("width", sa.Integer(), nullable=True),
        sa.Column("height", sa.Integer(), nullable=True),
        sa.Column("created_at", homeport.kit.db.UTCDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("tenant_id", "sha256", name=op.f("pk_file_blobs")),
    )
    op.create_table(
        "file_variants",
        sa.Column("tenant_id", sa.String(length=36), nullable=False),
        sa.Column("sha256", sa.String(length=64), nullable=False),
        sa.Column("name", sa.String(length=20), nullable=False),
        sa.Column("format", sa.String(length=10), nullable=False),
        sa.Column("storage_key", sa.String(length=300), nullable=False),
        sa.Column("mime_type", sa.String(length=127), nullable=False),
        sa.Column("width", sa.Integer(), nullable=False),
        sa.Column("height", sa.Integer(), nullable=False),
        sa.Column("size", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint(
            "tenant_id", "sha256", "name", "format", name=op.f("pk_file_variants")
        ),
    )
    op.create_table(
        "files",
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("tenant_id", sa.String(length=36), nullable=False),
        sa.Column("owner_id", sa.String(length=36), nullable=True),
        sa.Column("device_id", sa.String(length=200), nullable=True),
        sa.Column("filename", sa.String(length=255), nullable=False),
        sa.Column("mime_type", sa.String(length=127), nullable=False),
        sa.Column("size", sa.BigInteger(), nullable=False),
        sa.Column("sha256", sa.String(length=64), nullable=False),
        sa.Column("access", sa.String(length=10), nullable=False),
        sa.Column("upload_id", sa.String(length=36), nullable=True),
        sa.Column("created_at", homeport.kit.db.UTCDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_files")),
    )
    op.create_index("ix_files_blob", "files", ["tenant_id", "sha256"], unique=False)
    op.create_index(
        "ix_files_owner", "files", ["tenant_id", "owner_id", "created_at"], unique=False
    )
    op.create_table(
        "upload_sessions",
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("tenant_id", sa.String(length=36), nullable=False),
        sa.Column("owner_id", sa.String(length=36), nullable=True),
        sa.Column("device_id", sa.String(length=200), nullable=True),
        sa.Column("protocol", sa.String(length=4), nullable=False),
        sa.Column("status", sa.String(length=10), nullable=False),
        sa.Column("filename", sa.String(length=255), nullable=False),
        sa.Column("mime_type", sa.String(length=127), nullable=True),
        sa.Column("access", sa.String(length=10), nullable=False),
        sa.Column("total_size", sa.BigInteger(), nullable=False),
        sa.Column("file_hash", sa.String(length=64), nullable=True),
        sa.Column("chunk_size", sa.BigInteger(), nullable=False),
        sa.Column("total_chunks", sa.Integer(), nullable=False),
        sa.Column("offset", sa.BigInteger(), nullable=False),
        sa.Column("tail_size", sa.BigInteger(), nullable=False),
        sa.Column("tus_metadata", sa.JSON(), nullable=True),
        sa.Column("storage_key", sa.String(length=300), nullable=False),
        sa.Column("storage_handle", sa.String(length=1024), nullable=False),
        sa.Column("lock_owner", sa.String(length=36), nullable=True),
        sa.Column("locked_until", homeport.kit.db.UTCDateTime(timezone=True), nullable=True),
        sa.Column("file_id", sa.String(length=36), nullable=True),
        sa.Column("expires_at", homeport.kit.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("created_at", homeport.kit.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("updated_at", homeport.kit.db.UTCDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_upload_sessions")),
    )
    op.create_index(
        "ix_upload_sessions_expires", "upload_sessions", ["status", "expires_at"], unique=False
    )
    op.create_index(
        "ix_upload_sessions_tenant", "upload_sessions", ["tenant_id", "created_at"], unique=False
    )
    op.create_table(
        "upload_parts",
        sa.Column("tenant_id", sa.String(length=36), nullable=False),
        sa.Column("upload_id", sa.String(length=36), nullable=False),
        sa.Column("number", sa.Integer(), nullable=False),
        sa.Column("offset", sa.BigInteger(), nullable=False),
        sa.Column("size", sa.BigInteger(), nullable=False),
        sa.Column("sha256", sa.String(length=64), nullable=False),
        sa.Column("token", sa.String(length=200), nullable=False),
        sa.PrimaryKeyConstraint("upload_id", "number", name=op.f("pk_upload_parts")),
    )


def downgrade() -> None:
    op.drop_table("upload_parts")
    op.drop_index("ix_upload_sessions_tenant", table_name="upload_sessions")
    op.drop_index("ix_upload_sessions_expires", table_name="upload_sessions")
    op.drop_table("upload_sessions")
    op.drop_index("ix_files_owner", table_name="files")
    op.drop_index("ix_files_blob", table_name="files")
    op.drop_table("files")
    op.drop_table("file_variants")
    op.drop_table("file_blobs")
