"""All SQL of the uploads domain: upload sessions, their parts, and the writer lease."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, cast

from sqlalchemy import Table, bindparam, case, func, or_
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


@dataclass(frozen=True)
class Progress:
    """Where an upload stands as a chunk is recorded."""

    status: str
    expires_at: datetime
    lock_owner: str | None
    locked_until: datetime | None
    received: int

    def leased(self, now: datetime) -> bool:
        """Whether a finalize or cancel holds the upload's lease now."""
        return lease_held(self.lock_owner, self.locked_until, now)


def lease_held(lock_owner: str | None, locked_until: datetime | None, now: datetime) -> bool:
    """Whether someone holds an upload's lease at ``now``, as ``take_lease`` sees it."""
    return lock_owner is not None and (locked_until is None or locked_until >= now)


class UploadRepository:
    """Updates skip the ORM's in-session synchronisation (``synchronize_session=False``): each
    unit of work here is short, and a caller that needs the row again re-reads it
    (``get`` populates existing objects); evaluating the criteria in Python cost more than the
    statement on the upload hot path."""

    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    def add(self, upload: UploadSession) -> None:
        self.session.add(upload)

    async def get(
        self, tenant_id: str, upload_id: str, *, for_update: bool = False
    ) -> UploadSession | None:
        """``for_update``: lock the row until the transaction ends (PostgreSQL; SQLite
        transactions already exclude each other), so what is read is what a lease taken next
        applies to."""
        result = await self.session.execute(
            _UPLOAD_FOR_UPDATE if for_update else _UPLOAD,
            {"tenant_id": tenant_id, "upload_id": upload_id},
        )
        return result.scalar_one_or_none()

    async def get_with_part(
        self, tenant_id: str, upload_id: str, number: int
    ) -> tuple[UploadSession | None, bool]:
        """The upload, and whether its part ``number`` is recorded, in one query (the chunk
        hot path)."""
        result = await self.session.execute(
            _UPLOAD_WITH_PART, {"tenant_id": tenant_id, "upload_id": upload_id, "number": number}
        )
        row = result.first()
        return (None, False) if row is None else (row[0], bool(row[1]))

    async def update(self, tenant_id: str, upload_id: str, **values: Any) -> None:
        await self.session.execute(
            tenant_update(UploadSession, tenant_id)
            .where(UploadSession.id == upload_id)
            .values(**values)
            .execution_options(synchronize_session=False)
        )

    async def take_lease(
        self, tenant_id: str, upload_id: str, owner: str, now: datetime, until: datetime
    ) -> bool:
        """Compare-and-set: the upload is ours to write until ``until`` unless another writer
        holds an unexpired lease (it answers 423 then)."""
        result = await self.session.execute(
            _TAKE_LEASE,
            {
                "scope_tenant": tenant_id,
                "upload": upload_id,
                "owner": owner,
                "now": now,
                "until": until,
            },
        )
        return bool(getattr(result, "rowcount", 0))

    async def release_lease(self, tenant_id: str, upload_id: str, owner: str) -> None:
        await self.session.execute(
            _RELEASE_LEASE, {"scope_tenant": tenant_id, "upload": upload_id, "owner": owner}
        )

    async def advance(
        self,
        tenant_id: str,
        upload_id: str,
        *,
        offset: int,
        tail_size: int,
        synced_offset: int,
        written_boot: str | None,
        now: datetime,
        release_owner: str | None,
    ) -> None:
        """A tus PATCH landed: the new offset, and (unless the upload is complete, when
        finishing still needs it) the writer's lease released, in one statement."""
        await self.session.execute(
            _ADVANCE,
            {
                "scope_tenant": tenant_id,
                "upload": upload_id,
                "new_offset": offset,
                "new_tail_size": tail_size,
                "synced": synced_offset,
                "boot": written_boot,
                "now": now,
                "owner": release_owner,
            },
        )

    # Parts

    async def save_part(self, tenant_id: str, upload_id: str, part: Part, sha256: str) -> None:
        """Record a written part; a re-sent part replaces the earlier row."""
        # On the connection: a plain statement needs none of the ORM's execution machinery
        # (the chunk hot path).
        connection = await self.session.connection()
        await connection.execute(
            _SAVE_PART_PG if connection.dialect.name == "postgresql" else _SAVE_PART_SQLITE,
            {
                "tenant_id": tenant_id,
                "upload_id": upload_id,
                "number": part.number,
                "offset": part.offset,
                "size": part.size,
                "sha256": sha256,
                "token": part.token,
            },
        )

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

    async def progress(self, tenant_id: str, upload_id: str) -> Progress | None:
        """Status, lease and number of received parts, in one query (the chunk hot path);
        None when the tenant has no such upload. The upload's row stays locked until the
        commit (PostgreSQL; SQLite's writer holds the whole database), so no finalize or
        cancel can take its lease meanwhile."""
        connection = await self.session.connection()
        result = await connection.execute(
            _PROGRESS, {"tenant_id": tenant_id, "upload_id": upload_id}
        )
        row = result.one_or_none()
        if row is None:
            return None
        status, expires_at, lock_owner, locked_until, count = row
        return Progress(str(status), expires_at, lock_owner, locked_until, int(count))

    async def set_part_tokens(self, tenant_id: str, upload_id: str, tokens: dict[int, str]) -> None:
        for number, token in tokens.items():
            await self.session.execute(
                tenant_update(UploadPart, tenant_id)
                .where(UploadPart.upload_id == upload_id, UploadPart.number == number)
                .values(token=token)
                .execution_options(synchronize_session=False)
            )

    async def delete_parts(
        self, tenant_id: str, upload_id: str, numbers: Sequence[int] | None = None
    ) -> None:
        """Forget the upload's parts (``numbers``: only these), so that they count as missing."""
        statement = tenant_delete(UploadPart, tenant_id).where(UploadPart.upload_id == upload_id)
        if numbers is not None:
            statement = statement.where(UploadPart.number.in_(list(numbers)))
        await self.session.execute(statement)

    # Expiry

    async def expired_open(self, now: datetime, limit: int) -> Sequence[UploadSession]:
        result = await self.session.execute(
            unscoped_select(UploadSession, reason="the expiry job sweeps every tenant")
            .where(UploadSession.status == "open", UploadSession.expires_at < now)
            .order_by(UploadSession.expires_at)
            .limit(limit)
        )
        return result.scalars().all()


# The statements of the chunk and PATCH hot paths, built once (parameters of UPDATEs may not
# bear column names): constructing them per request
# cost more than running them (py-spy, W5). Updates and inserts go to the tables (Core): the
# ORM's bulk machinery adds only time, and every unit of work here is short (a caller that
# needs a row again re-reads it).
_SESSIONS = cast(Table, UploadSession.__table__)
_PARTS = cast(Table, UploadPart.__table__)
_UPLOAD = (
    tenant_select(UploadSession, bindparam("tenant_id"))
    .where(UploadSession.id == bindparam("upload_id"))
    .execution_options(populate_existing=True)
)
_UPLOAD_FOR_UPDATE = _UPLOAD.with_for_update()
_TAKE_LEASE = (
    tenant_update(_SESSIONS, bindparam("scope_tenant"))
    .where(
        _SESSIONS.c.id == bindparam("upload"),
        or_(
            _SESSIONS.c.lock_owner.is_(None),
            _SESSIONS.c.lock_owner == bindparam("owner"),
            _SESSIONS.c.locked_until < bindparam("now"),
        ),
    )
    .values(lock_owner=bindparam("owner"), locked_until=bindparam("until"))
)
_RELEASE_LEASE = (
    tenant_update(_SESSIONS, bindparam("scope_tenant"))
    .where(
        _SESSIONS.c.id == bindparam("upload"),
        _SESSIONS.c.lock_owner == bindparam("owner"),
    )
    .values(lock_owner=None, locked_until=None)
)
_OURS = _SESSIONS.c.lock_owner == bindparam("owner")
_ADVANCE = (
    tenant_update(_SESSIONS, bindparam("scope_tenant"))
    .where(_SESSIONS.c.id == bindparam("upload"))
    .values(
        offset=bindparam("new_offset"),
        tail_size=bindparam("new_tail_size"),
        synced_offset=bindparam("synced"),
        written_boot=bindparam("boot"),
        updated_at=bindparam("now"),
        # Released only if still ours (a NULL owner releases nothing).
        lock_owner=case((_OURS, None), else_=_SESSIONS.c.lock_owner),
        locked_until=case((_OURS, None), else_=_SESSIONS.c.locked_until),
    )
)
_HAS_PART = tenant_select_columns(UploadPart, bindparam("tenant_id"), UploadPart.number).where(
    UploadPart.upload_id == bindparam("upload_id"), UploadPart.number == bindparam("number")
)
_UPLOAD_WITH_PART = _UPLOAD.add_columns(_HAS_PART.exists().label("has_part"))
_PROGRESS = (
    tenant_select_columns(
        UploadSession,
        bindparam("tenant_id"),
        UploadSession.status,
        UploadSession.expires_at,
        UploadSession.lock_owner,
        UploadSession.locked_until,
        tenant_select_columns(UploadPart, bindparam("tenant_id"), func.count())
        .where(UploadPart.upload_id == bindparam("upload_id"))
        .scalar_subquery(),
    )
    .where(UploadSession.id == bindparam("upload_id"))
    .with_for_update(of=UploadSession)
)


def _save_part(insert: Any) -> Any:
    statement = insert(_PARTS).values(
        tenant_id=bindparam("tenant_id"),
        upload_id=bindparam("upload_id"),
        number=bindparam("number"),
        offset=bindparam("offset"),
        size=bindparam("size"),
        sha256=bindparam("sha256"),
        token=bindparam("token"),
    )
    return statement.on_conflict_do_update(
        index_elements=["upload_id", "number"],
        set_={
            "offset": statement.excluded.offset,
            "size": statement.excluded.size,
            "sha256": statement.excluded.sha256,
            "token": statement.excluded.token,
        },
    )


_SAVE_PART_PG = _save_part(pg_insert)
_SAVE_PART_SQLITE = _save_part(sqlite_insert)
