"""All SQL of the uploads domain: upload sessions, their parts, and the writer lease."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import func, or_
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.ext.asyncio import AsyncSession

from homeport.kit.storage import Part
from homeport.kit.tenancy import (
    tenant_delete,
    tenant_select,
    tenant_select_columns,
    tenant_update,
    unscoped_select,
)
from homeport.models.files import UploadPart, UploadSession


class UploadRepository:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    def _insert(self) -> Any:
        dialect = self.session.get_bind().dialect.name
        return pg_insert if dialect == "postgresql" else sqlite_insert

    def add(self, upload: UploadSession) -> None:
        self.session.add(upload)

    async def get(self, tenant_id: str, upload_id: str) -> UploadSession | None:
        result = await self.session.execute(
            tenant_select(UploadSession, tenant_id)
            .where(UploadSession.id == upload_id)
            .execution_options(populate_existing=True)
        )
        return result.scalar_one_or_none()

    async def update(self, tenant_id: str, upload_id: str, **values: Any) -> None:
        await self.session.execute(
            tenant_update(UploadSession, tenant_id)
            .where(UploadSession.id == upload_id)
            .values(**values)
        )

    async def take_lease(
        self, tenant_id: str, upload_id: str, owner: str, now: datetime, until: datetime
    ) -> bool:
        """Compare-and-set: the upload is ours to write until ``until`` unless another writer
        holds an unexpired lease (it answers 423 then)."""
        result = await self.session.execute(
            tenant_update(UploadSession, tenant_id)
            .where(
                UploadSession.id == upload_id,
                or_(
                    UploadSession.lock_owner.is_(None),
                    UploadSession.lock_owner == owner,
                    UploadSession.locked_until < now,
                ),
            )
            .values(lock_owner=owner, locked_until=until)
        )
        return bool(getattr(result, "rowcount", 0))

    async def release_lease(self, tenant_id: str, upload_id: str, owner: str) -> None:
        await self.session.execute(
            tenant_update(UploadSession, tenant_id)
            .where(UploadSession.id == upload_id, UploadSession.lock_owner == owner)
            .values(lock_owner=None, locked_until=None)
        )

    # Parts

    async def save_part(self, tenant_id: str, upload_id: str, part: Part, sha256: str) -> None:
        """Record a written part; a re-sent part replaces the earlier row."""
        statement = self._insert()(UploadPart).values(
            tenant_id=tenant_id,
            upload_id=upload_id,
            number=part.number,
            offset=part.offset,
            size=part.size,
            sha256=sha256,
            token=part.token,
        )
        statement = statement.on_conflict_do_update(
            index_elements=["upload_id", "number"],
            set_={
                "offset": statement.excluded.offset,
                "size": statement.excluded.size,
                "sha256": statement.excluded.sha256,
                "token": statement.excluded.token,
            },
        )
        await self.session.execute(statement)

    async def parts(self, tenant_id: str, upload_id: str) -> Sequence[UploadPart]:
        result = await self.session.execute(
            tenant_select(UploadPart, tenant_id)
            .where(UploadPart.upload_id == upload_id)
            .order_by(UploadPart.number)
        )
        return result.scalars().all()

    async def part_numbers(self, tenant_id: str, upload_id: str) -> list[int]:
        result = await self.session.execute(
            tenant_select_columns(UploadPart, tenant_id, UploadPart.number)
            .where(UploadPart.upload_id == upload_id)
            .order_by(UploadPart.number)
        )
        return [int(number) for number in result.scalars()]

    async def has_part(self, tenant_id: str, upload_id: str, number: int) -> bool:
        result = await self.session.execute(
            tenant_select_columns(UploadPart, tenant_id, UploadPart.number).where(
                UploadPart.upload_id == upload_id, UploadPart.number == number
            )
        )
        return result.first() is not None

    async def progress(self, tenant_id: str, upload_id: str) -> tuple[str, datetime, int]:
        """Status, expiry and number of received parts, in one query (the chunk hot path)."""
        parts = (
            tenant_select_columns(UploadPart, tenant_id, func.count())
            .where(UploadPart.upload_id == upload_id)
            .scalar_subquery()
        )
        result = await self.session.execute(
            tenant_select_columns(
                UploadSession, tenant_id, UploadSession.status, UploadSession.expires_at, parts
            ).where(UploadSession.id == upload_id)
        )
        status, expires_at, count = result.one()
        return str(status), expires_at, int(count)

    async def set_part_tokens(self, tenant_id: str, upload_id: str, tokens: dict[int, str]) -> None:
        for number, token in tokens.items():
            await self.session.execute(
                tenant_update(UploadPart, tenant_id)
                .where(UploadPart.upload_id == upload_id, UploadPart.number == number)
                .values(token=token)
            )

    async def delete_parts(self, tenant_id: str, upload_id: str) -> None:
        await self.session.execute(
            tenant_delete(UploadPart, tenant_id).where(UploadPart.upload_id == upload_id)
        )

    # Expiry

    async def expired_open(self, now: datetime, limit: int) -> Sequence[UploadSession]:
        result = await self.session.execute(
            unscoped_select(UploadSession, reason="the expiry job sweeps every tenant")
            .where(UploadSession.status == "open", UploadSession.expires_at < now)
            .order_by(UploadSession.expires_at)
            .limit(limit)
        )
        return result.scalars().all()
