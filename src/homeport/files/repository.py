"""All SQL of the files domain: blobs, files and image variants."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import func
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.ext.asyncio import AsyncSession

from homeport.kit.tenancy import (
    tenant_delete,
    tenant_select,
    tenant_select_columns,
    tenant_update,
    unscoped_select,
)
from homeport.models.files import FileBlob, FileVariant, StoredFile


class FileRepository:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    def _insert(self) -> Any:
        dialect = self.session.get_bind().dialect.name
        return pg_insert if dialect == "postgresql" else sqlite_insert

    # Blobs

    async def insert_blob_unless_present(self, blob: dict[str, Any]) -> FileBlob:
        """Stores the blob row unless the tenant already has these bytes; returns the row that
        is stored (a concurrent upload of the same bytes waits here and gets the first one)."""
        statement = self._insert()(FileBlob).values(**blob).on_conflict_do_nothing()
        await self.session.execute(statement)
        stored = await self.get_blob(blob["tenant_id"], blob["sha256"], for_update=True)
        assert stored is not None
        return stored

    async def get_blob(
        self, tenant_id: str, sha256: str, *, for_update: bool = False
    ) -> FileBlob | None:
        statement = tenant_select(FileBlob, tenant_id).where(FileBlob.sha256 == sha256)
        if for_update:
            statement = statement.with_for_update()
        result = await self.session.execute(statement.execution_options(populate_existing=True))
        return result.scalar_one_or_none()

    async def set_blob_image(
        self,
        tenant_id: str,
        sha256: str,
        *,
        status: str,
        width: int | None = None,
        height: int | None = None,
    ) -> None:
        await self.session.execute(
            tenant_update(FileBlob, tenant_id)
            .where(FileBlob.sha256 == sha256)
            .values(variants_status=status, width=width, height=height)
        )

    async def delete_blob(self, tenant_id: str, sha256: str) -> None:
        await self.session.execute(
            tenant_delete(FileBlob, tenant_id).where(FileBlob.sha256 == sha256)
        )

    async def count_files_of_blob(self, tenant_id: str, sha256: str) -> int:
        result = await self.session.execute(
            tenant_select_columns(StoredFile, tenant_id, func.count()).where(
                StoredFile.sha256 == sha256
            )
        )
        return int(result.scalar_one())

    # Files

    def add_file(self, stored_file: StoredFile) -> None:
        self.session.add(stored_file)

    async def get_file(self, tenant_id: str, file_id: str) -> StoredFile | None:
        result = await self.session.execute(
            tenant_select(StoredFile, tenant_id).where(StoredFile.id == file_id)
        )
        return result.scalar_one_or_none()

    async def find_file_for_download(self, file_id: str) -> StoredFile | None:
        result = await self.session.execute(
            unscoped_select(
                StoredFile, reason="a signed download URL names the file; the signature is checked"
            ).where(StoredFile.id == file_id)
        )
        return result.scalar_one_or_none()

    async def list_files(
        self, tenant_id: str, *, owner_id: str | None, after: str | None, limit: int
    ) -> Sequence[StoredFile]:
        statement = tenant_select(StoredFile, tenant_id)
        if owner_id is not None:
            statement = statement.where(
                (StoredFile.owner_id == owner_id) | (StoredFile.access == "tenant")
            )
        if after is not None:
            statement = statement.where(StoredFile.id < after)
        result = await self.session.execute(statement.order_by(StoredFile.id.desc()).limit(limit))
        return result.scalars().all()

    async def delete_file(self, tenant_id: str, file_id: str) -> None:
        await self.session.execute(
            tenant_delete(StoredFile, tenant_id).where(StoredFile.id == file_id)
        )

    # Variants

    async def variants(self, tenant_id: str, sha256: str) -> Sequence[FileVariant]:
        result = await self.session.execute(
            tenant_select(FileVariant, tenant_id)
            .where(FileVariant.sha256 == sha256)
            .order_by(FileVariant.width, FileVariant.format)
        )
        return result.scalars().all()

    async def get_variant(
        self, tenant_id: str, sha256: str, name: str, image_format: str
    ) -> FileVariant | None:
        result = await self.session.execute(
            tenant_select(FileVariant, tenant_id).where(
                FileVariant.sha256 == sha256,
                FileVariant.name == name,
                FileVariant.format == image_format,
            )
        )
        return result.scalar_one_or_none()

    async def replace_variants(
        self, tenant_id: str, sha256: str, rows: list[dict[str, Any]]
    ) -> None:
        await self.session.execute(
            tenant_delete(FileVariant, tenant_id).where(FileVariant.sha256 == sha256)
        )
        if rows:
            await self.session.execute(self._insert()(FileVariant), rows)

    async def delete_variants(self, tenant_id: str, sha256: str) -> None:
        await self.session.execute(
            tenant_delete(FileVariant, tenant_id).where(FileVariant.sha256 == sha256)
        )
