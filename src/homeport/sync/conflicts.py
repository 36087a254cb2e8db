"""The conflict log and the per-collection policies (``/api/v1/sync/policies``, ``/conflicts``)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from homeport.auth.principal import Principal
from homeport.kit.clock import utcnow
from homeport.kit.errors import ErrorCode, ProblemError
from homeport.models.sync import Collection, SyncConflict
from homeport.sync.repository import SyncRepository
from homeport.sync.service import refuse_unstorable
from homeport.sync.validation import validator_for


class ConflictService:
    def __init__(self, session: AsyncSession) -> None:
        self.repository = SyncRepository(session)

    async def _collection(self, principal: Principal, tenant_id: str, name: str) -> Collection:
        # Another tenant's id answers like an unknown one (no hint that it exists).
        collection = (
            await self.repository.get_collection(tenant_id, name)
            if tenant_id == principal.tenant_id
            else None
        )
        if collection is None:
            raise ProblemError(ErrorCode.NOT_FOUND, f"Collection {name!r} not found")
        return collection

    async def get_policy(self, principal: Principal, tenant_id: str, domain: str) -> Collection:
        return await self._collection(principal, tenant_id, domain)

    async def set_policy(
        self,
        principal: Principal,
        tenant_id: str,
        domain: str,
        policy: str,
        auto_resolve: bool | None,
        notify_on_conflict: bool | None,
    ) -> Collection:
        """``None`` keeps the current value."""
        collection = await self._collection(principal, tenant_id, domain)
        collection.conflict_policy = policy
        if auto_resolve is not None:
            collection.auto_resolve = auto_resolve
        if notify_on_conflict is not None:
            collection.notify_on_conflict = notify_on_conflict
        collection.updated_at = utcnow()
        await self.repository.flush()
        return collection

    async def list(
        self,
        principal: Principal,
        tenant_id: str | None,
        domain: str | None,
        since: datetime | None,
        limit: int,
    ) -> tuple[list[SyncConflict], int, float]:
        if tenant_id is not None and tenant_id != principal.tenant_id:
            return [], 0, 0.0
        rows, total = await self.repository.list_conflicts(
            principal.tenant_id, domain, since, limit
        )
        pushed = await self.repository.pushed_items(principal.tenant_id, since, domain)
        rate = round(100.0 * total / pushed, 2) if pushed else 0.0
        return list(rows), total, rate

    async def _conflict(self, principal: Principal, conflict_id: str) -> SyncConflict:
        conflict = await self.repository.get_conflict(principal.tenant_id, conflict_id)
        if conflict is None:
            raise ProblemError(ErrorCode.NOT_FOUND, "Conflict not found")
        return conflict

    async def resolve(
        self,
        principal: Principal,
        conflict_id: str,
        resolution: str,
        data: dict[str, Any] | None,
        write: Any,
    ) -> SyncConflict:
        """``write(collection, record_id, data, deleted)`` stores a new version of the record
        (the push path's writer, so the feed and versions stay consistent)."""
        conflict = await self._conflict(principal, conflict_id)
        if conflict.status != "pending":
            raise ProblemError(
                ErrorCode.VALIDATION_003, f"This conflict is already {conflict.status}"
            )
        collection = await self._collection(principal, principal.tenant_id, conflict.collection)
        winner = "server"
        if resolution == "accept_client":
            client = conflict.client_side
            deleted = client.get("op") == "delete"
            await self._store(
                collection,
                conflict,
                client.get("data"),
                deleted,
                write,
                patch=client.get("op") == "patch",
            )
            winner = "client"
        elif resolution == "merge":
            if data is None:
                raise ProblemError(ErrorCode.SYNC_002, "merge needs the merged record in data")
            await self._store(collection, conflict, data, False, write, patch=False)
            winner = "merged"
        conflict.status = "resolved"
        conflict.winner = winner
        conflict.resolved_at = utcnow()
        conflict.resolved_by = principal.user_id
        await self.repository.flush()
        return conflict

    async def _store(
        self,
        collection: Collection,
        conflict: SyncConflict,
        data: dict[str, Any] | None,
        deleted: bool,
        write: Any,
        *,
        patch: bool,
    ) -> None:
        current = (
            await self.repository.load_records(
                conflict.tenant_id, [(conflict.collection, conflict.record_id)]
            )
        ).get((conflict.collection, conflict.record_id))
        if current is not None and current.deleted:
            raise ProblemError(ErrorCode.VALIDATION_003, "The record was deleted since")
        if not deleted:
            merged = (
                {**(current.data or {}), **(data or {})} if patch and current else dict(data or {})
            )
            # The checks of a pushed change's data (depth, NUL, lone surrogates, NaN, numbers
            # beyond 2**53), before the schema sees it: a 422 that stores nothing.
            refuse_unstorable(merged)
            failing = validator_for(collection).errors(merged)
            if failing:
                raise ProblemError(
                    ErrorCode.VALIDATION_001,
                    "Record does not match the collection schema",
                    extra={"errors": [{"field": f, "message": m} for f, m in failing]},
                )
            data = merged
        await write(collection, conflict.record_id, current, None if deleted else data, deleted)

    async def dismiss(self, principal: Principal, conflict_id: str) -> None:
        conflict = await self._conflict(principal, conflict_id)
        conflict.status = "dismissed"
        conflict.resolved_at = utcnow()
        conflict.resolved_by = principal.user_id
        await self.repository.flush()
