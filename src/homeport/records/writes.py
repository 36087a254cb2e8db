"""Single record writes (create, replace, patch, delete) of concurrent requests, run together.

Each request hands its write to :class:`GroupedWrites` and waits for its answer; the writes
that arrive while one group runs share the next transaction (group commit): one session query
for the callers of a tenant, one collection lookup, one lock, read and feed write for all.
Every write still gets the answer it would have got alone, and a write that fails changes
nothing of the others.
"""

from __future__ import annotations

from dataclasses import dataclass

from homeport.auth.dependencies import Credentials, authenticate_all
from homeport.auth.principal import Principal
from homeport.kit.errors import ProblemError
from homeport.kit.groupcommit import GroupCommit
from homeport.records.schemas import BatchOperation
from homeport.records.service import RecordService, RecordView, SingleWrite
from homeport.state import AppState, unit_of_work

Answer = RecordView | None


@dataclass(frozen=True)
class _Request:
    credentials: Credentials
    collection: str
    operation: BatchOperation


# Groups in flight at once on PostgreSQL: a group waiting on a record another transaction
# holds then delays only the writes behind it. SQLite has one writer: one group at a time.
POSTGRES_GROUPS = 4


class GroupedWrites:
    def __init__(self, state: AppState, max_group: int = 256) -> None:
        self.state = state
        concurrency = 1 if state.database.dialect == "sqlite" else POSTGRES_GROUPS
        self.group: GroupCommit[_Request, Answer] = GroupCommit(self._run, max_group, concurrency)

    async def write(
        self, credentials: Credentials, collection: str, operation: BatchOperation
    ) -> Answer:
        """The record after the write (None after a delete); raises the write's error."""
        return await self.group.submit(_Request(credentials, collection, operation))

    async def _run(self, requests: list[_Request]) -> list[Answer | BaseException]:
        state = self.state
        async with unit_of_work(state) as session:
            callers = await authenticate_all([request.credentials for request in requests], session)
            writes = [
                SingleWrite(caller, request.collection, request.operation)
                for request, caller in zip(requests, callers, strict=True)
                if isinstance(caller, Principal)
            ]
            service = RecordService(session, state.settings, state.secret_key)
            written = iter(await service.write_each(writes))
            return [
                caller if isinstance(caller, ProblemError) else next(written) for caller in callers
            ]
