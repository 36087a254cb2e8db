"""The records API's rules: who may read and write, list pages, and writes through sync.

Every write goes through :meth:`SyncService.apply_batch`, the push path itself: it is versioned,
checked against the schema and the write rule, stamped into the change feed, and fanned out to
WebSocket subscribers after commit, so pulls and subscriptions see it like any device's change.
A records API write carries a :class:`WriteCondition` (create only, must exist, If-Match), which
the push path checks once the record is locked.
"""

from __future__ import annotations

import hashlib
import importlib
import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Subquery
from sqlalchemy.ext.asyncio import AsyncSession

from homeport.auth.principal import Permission, Principal
from homeport.config import Settings
from homeport.kit.clock import utcnow
from homeport.kit.errors import ErrorCode, ProblemError, forbidden
from homeport.kit.ids import new_id
from homeport.models.sync import Collection
from homeport.records.cursor import (
    ListCursorError,
    Position,
    decode_list_cursor,
    encode_list_cursor,
)
from homeport.records.query import invalid, parse_list_query
from homeport.records.repository import RecordRepository
from homeport.records.schemas import BatchOperation, BatchRequest
from homeport.sync.rules import Reach, Writer, read_reach
from homeport.sync.schemas import PushChange
from homeport.sync.service import (
    ATOMIC_ABORTED,
    Author,
    BatchItem,
    SyncService,
    WriteCondition,
    WrittenRecord,
    origin_of,
    write_item,
)

# What an item error of the push path is as an HTTP answer: (code, status override).
_ITEM_ERRORS: dict[str, tuple[ErrorCode, int | None]] = {
    "VALIDATION_001": (ErrorCode.VALIDATION_001, None),
    "VALIDATION_002": (ErrorCode.VALIDATION_002, None),
    "NOT_FOUND": (ErrorCode.NOT_FOUND, None),
    "SYNC_001": (ErrorCode.SYNC_001, None),
    "SYNC_002": (ErrorCode.SYNC_002, None),
    "SYNC_004": (ErrorCode.SYNC_004, 412),
    "AUTH_006": (ErrorCode.AUTH_006, None),
}
# A valid operation left out because its atomic batch failed.
ATOMIC_ABORTED_STATUS = 424
_SUCCESS_STATUS = {"create": 201, "replace": 200, "patch": 200, "delete": 204}


@dataclass(frozen=True)
class RecordView:
    record_id: str
    version: int
    body: str  # the record as JSON text


@dataclass(frozen=True)
class _Access:
    reach: Reach
    writer: Writer | None  # None: an API key, to which write rules do not apply
    user_id: str | None


def _timestamp(moment: datetime) -> str:
    return moment.isoformat().replace("+00:00", "Z")


def record_json(
    record_id: str, version: int, created_at: datetime, updated_at: datetime, data_json: str
) -> str:
    return (
        f'{{"id":{json.dumps(record_id)},"version":{version},'
        f'"created_at":"{_timestamp(created_at)}","updated_at":"{_timestamp(updated_at)}",'
        f'"data":{data_json}}}'
    )


def _compact(document: Any) -> str:
    return json.dumps(document, separators=(",", ":"), ensure_ascii=False)


def _project(data_json: str, fields: tuple[str, ...] | None) -> str:
    if fields is None:
        return data_json
    data = json.loads(data_json)
    return _compact({name: data[name] for name in fields if name in data})


class RecordService:
    def __init__(self, session: AsyncSession, settings: Settings, secret_key: str) -> None:
        self.repository = RecordRepository(session)
        self.sync = SyncService(session, settings, secret_key)
        self.settings = settings
        self.secret_key = secret_key

    # Access

    async def collection(self, principal: Principal, name: str) -> Collection:
        collection = await self.repository.get_collection(principal.tenant_id, name)
        if collection is None:
            raise ProblemError(ErrorCode.NOT_FOUND, f"Collection {name!r} not found")
        return collection

    def _access(self, principal: Principal, collection: Collection, *, write: bool) -> _Access:
        if principal.kind == "api_key":
            principal.require(
                Permission.COLLECTIONS_WRITE if write else Permission.COLLECTIONS_READ
            )
            return _Access(Reach.ALL, None, None)
        if principal.user_id is None:
            raise forbidden("The records API needs a user or an API key")
        reach = read_reach(collection.read_rule, principal.role)
        if not write and reach is Reach.NONE:
            raise forbidden(f"Your role may not read {collection.name}")
        return _Access(reach, Writer(principal.user_id, principal.role), principal.user_id)

    # Reads

    async def get(self, principal: Principal, name: str, record_id: str) -> RecordView:
        collection = await self.collection(principal, name)
        access = self._access(principal, collection, write=False)
        row = await self.repository.get_record(principal.tenant_id, name, record_id)
        if row is None or (access.reach is Reach.OWN and row.owner_id != access.user_id):
            raise ProblemError(ErrorCode.NOT_FOUND, f"Record {record_id!r} not found")
        body = record_json(
            row.record_id, row.version, row.created_at, row.updated_at, row.data_json
        )
        return RecordView(row.record_id, row.version, body)

    def _ranked(self, collection: Collection, q: str) -> Subquery:
        if not collection.searchable:
            raise invalid("q", f"{collection.name} declares no searchable fields")
        try:
            search = importlib.import_module("homeport.search.repository")
        except ImportError:
            raise invalid("q", "full-text search is not available in this release") from None
        ranked: Subquery = search.ranked_matches(collection.tenant_id, collection.name, q)
        return ranked

    async def list_page(
        self, principal: Principal, name: str, parameters: Iterable[tuple[str, str]]
    ) -> str:
        """A page as JSON text: stored documents are passed through without decoding.
        ``parameters``: the request's query parameters, checked against the collection."""
        collection = await self.collection(principal, name)
        access = self._access(principal, collection, write=False)
        query = parse_list_query(
            parameters,
            collection,
            default_limit=self.settings.records_default_limit,
            max_limit=self.settings.records_max_limit,
        )
        fingerprint = query.fingerprint()
        after = None
        if query.cursor is not None:
            try:
                after = decode_list_cursor(
                    self.secret_key, principal.tenant_id, name, fingerprint, query.cursor
                )
            except ListCursorError as exc:
                raise invalid("cursor", str(exc)) from None
        ranked = self._ranked(collection, query.q) if query.q is not None else None
        statement = self.repository.list_query(
            principal.tenant_id,
            name,
            query,
            owner_id=access.user_id if access.reach is Reach.OWN else None,
            after=after,
            ranked=ranked,
            indexed=collection.indexes or (),
        )
        rows = await self.repository.list_records(statement)
        has_more = len(rows) > query.limit
        rows = rows[: query.limit]
        next_cursor = None
        if has_more:
            last = rows[-1]
            key = last.sort_key
            if isinstance(key, datetime):
                key = key.isoformat()
            position = Position(key, last.record_id, null_key=bool(last.sort_null))
            next_cursor = encode_list_cursor(
                self.secret_key, principal.tenant_id, name, fingerprint, position
            )
        items = ",".join(
            record_json(
                row.record_id,
                row.version,
                row.created_at,
                row.updated_at,
                _project(row.data_json, query.fields),
            )
            for row in rows
        )
        return (
            f'{{"data":[{items}],"next_cursor":{json.dumps(next_cursor)},'
            f'"has_more":{"true" if has_more else "false"}}}'
        )

    # Writes

    def _item(self, collection: Collection, operation: BatchOperation, author: Author) -> BatchItem:
        data = operation.data
        record_id = operation.id
        if (
            operation.op == "create"
            and record_id is None
            and collection.id_field not in (data or {})
        ):
            record_id = new_id()
        # An id given in the data is left to the push path, which takes it from there and
        # refuses one that is not a string, is empty or is too long.
        condition = WriteCondition(
            create_only=operation.op == "create",
            must_exist=operation.op != "create",
            if_match=operation.if_match,
            merge_patch=operation.op == "patch",
        )
        change = PushChange(
            collection=collection.name,
            id=record_id,
            op="delete" if operation.op == "delete" else "upsert",
            data=None if operation.op == "delete" else data,
        )
        return write_item(change, condition, author)

    async def _apply(
        self,
        principal: Principal,
        collections: dict[str, Collection],
        items: list[BatchItem],
        mode: str = "best_effort",
    ) -> tuple[dict[str, Any], dict[tuple[str, str], WrittenRecord]]:
        """Every item carries its :class:`Author`; ``principal`` names the tenant."""
        outcome = await self.sync.apply_batch(principal, mode, items, None, utcnow(), collections)
        return outcome.answer, outcome.written

    def _author(self, principal: Principal, collection: Collection) -> Author:
        """Who writes, as the push path applies it; 403 when the caller may not write here."""
        access = self._access(principal, collection, write=True)
        return Author(origin_of(principal), access.writer)

    async def _hidden(self, principal: Principal, collection: Collection, record_id: str) -> bool:
        """Whether the caller may not even see the record (then a refusal is a 404)."""
        access = self._access(principal, collection, write=True)
        if access.reach is Reach.ALL:
            return False
        if access.reach is Reach.NONE:
            return True
        row = await self.repository.get_record(principal.tenant_id, collection.name, record_id)
        return row is None or row.owner_id != access.user_id

    async def _item_error(
        self,
        principal: Principal,
        collection: Collection,
        operation: BatchOperation,
        item: BatchItem,
    ) -> tuple[str, str, list[str] | None]:
        """The item's error as the caller may see it: refusing to write a record they cannot
        even read is a 404, as if it did not exist."""
        assert item.error is not None
        code, message, fields = item.error
        hideable = code == "AUTH_006" and operation.op != "create" and item.record_id
        if hideable and await self._hidden(principal, collection, item.record_id or ""):
            return "NOT_FOUND", f"Record {item.record_id!r} not found", None
        return code, message, fields

    async def write_each(
        self, writes: Sequence[SingleWrite]
    ) -> list[RecordView | ProblemError | None]:
        """Independent single writes of several callers (grouped requests) in the caller's
        transaction: each answer is what that write alone would have got, the record after it
        or its error. Writes of one record are applied one after the other, in order, so each
        answer shows the version that write made."""
        answers: list[RecordView | ProblemError | None] = [None] * len(writes)
        collections: dict[tuple[str, str], Collection | ProblemError] = {}
        pending: list[_Pending] = []
        for index, write in enumerate(writes):
            principal = write.principal
            key = (principal.tenant_id, write.collection)
            if key not in collections:
                try:
                    collections[key] = await self.collection(principal, write.collection)
                except ProblemError as exc:
                    collections[key] = exc
            collection = collections[key]
            if isinstance(collection, ProblemError):
                answers[index] = collection
                continue
            try:
                author = self._author(principal, collection)
            except ProblemError as exc:
                answers[index] = exc
                continue
            item = self._item(collection, write.operation, author)
            pending.append(_Pending(index, write, collection, item))
        while pending:
            # A record written twice waits for the next round: each answer shows its own write.
            this_round, pending = _one_per_record(pending)
            for tenant_round in _by_tenant(this_round):
                first = tenant_round[0]
                _answer, written = await self._apply(
                    first.write.principal,
                    {entry.collection.name: entry.collection for entry in tenant_round},
                    [entry.item for entry in tenant_round],
                )
                for entry in tenant_round:
                    answers[entry.index] = await self._written(entry, written)
        return answers

    async def _written(
        self, entry: _Pending, written: dict[tuple[str, str], WrittenRecord]
    ) -> RecordView | ProblemError | None:
        """One single write's answer: the record after it, None after a delete, or its error."""
        item, name = entry.item, entry.collection.name
        if item.error is not None:
            principal, operation = entry.write.principal, entry.write.operation
            code, message, fields = await self._item_error(
                principal, entry.collection, operation, item
            )
            error, status = _ITEM_ERRORS.get(code, (ErrorCode.SYNC_001, None))
            extra = {"errors": [{"field": f, "message": message} for f in fields]} if fields else {}
            return ProblemError(error, message, extra=extra, status=status)
        assert item.record_id is not None
        record = written.get((name, item.record_id))
        if record is None:
            # Nothing written (a conflict the policy resolved for the server): report it.
            return ProblemError(ErrorCode.SYNC_004, "The record changed meanwhile; read it again")
        if record.deleted:
            return None
        body = record_json(
            item.record_id,
            record.version,
            record.created_at,
            record.updated_at,
            _compact(record.data or {}),
        )
        return RecordView(item.record_id, record.version, body)

    async def batch(
        self, principal: Principal, name: str, body: BatchRequest, idempotency_key: str | None
    ) -> tuple[dict[str, Any], bool]:
        """The batch answer, and whether it is the stored answer of an earlier request."""
        limit = self.settings.records_max_batch_operations
        if len(body.operations) > limit:
            raise ProblemError(
                ErrorCode.SYNC_001,
                f"A batch holds at most {limit} operations; this one has "
                f"{len(body.operations)}. Split it.",
            )
        collection = await self.collection(principal, name)
        scope = principal.device_id or f"api-key:{principal.api_key_id}"
        now = utcnow()
        if idempotency_key is not None:
            if not 1 <= len(idempotency_key) <= 200:
                raise ProblemError(
                    ErrorCode.SYNC_001, "Idempotency-Key must be 1 to 200 characters"
                )
            described = json.dumps(
                {"records": name, "batch": body.model_dump(mode="json")}, sort_keys=True
            )
            request_hash = hashlib.sha256(described.encode()).hexdigest()
            stored = await self.sync.claim_idempotency(
                principal.tenant_id, scope, idempotency_key, request_hash, now
            )
            if stored is not None:
                return stored, True
        author = self._author(principal, collection)
        items = [self._item(collection, operation, author) for operation in body.operations]
        answer, _written = await self._apply(
            principal, {collection.name: collection}, items, body.mode
        )
        results = []
        for index, (operation, item, result) in enumerate(
            zip(body.operations, items, answer["results"], strict=True)
        ):
            entry: dict[str, Any] = {
                "index": index,
                "op": operation.op,
                "id": item.record_id or operation.id,
                "status": _SUCCESS_STATUS[operation.op],
                "version": result["version"],
                "code": None,
                "detail": None,
            }
            if item.error is not None:
                code, message, _fields = await self._item_error(
                    principal, collection, operation, item
                )
                error, status = _ITEM_ERRORS.get(code, (ErrorCode.SYNC_001, None))
                entry.update(status=status or error.status, version=None, code=code, detail=message)
            elif result["status"] == "rejected":
                entry.update(
                    status=ATOMIC_ABORTED_STATUS,
                    version=None,
                    code=ATOMIC_ABORTED,
                    detail="Not applied: another operation of this atomic batch failed",
                )
            elif result["status"] == "conflict":
                entry.update(status=409, code=ErrorCode.SYNC_004.name, detail="The record changed")
            results.append(entry)
        failed = sum(1 for entry in results if entry["code"] is not None)
        out = {
            "mode": body.mode,
            "applied": failed < len(results) and not (body.mode == "atomic" and failed),
            "succeeded": len(results) - failed,
            "failed": failed,
            "results": results,
            "cursor": answer["cursor"],
        }
        if idempotency_key is not None:
            await self.sync.store_idempotent_answer(
                principal.tenant_id, scope, idempotency_key, out
            )
        return out, False


@dataclass(frozen=True)
class SingleWrite:
    """One create, replace, patch or delete by one caller."""

    principal: Principal
    collection: str
    operation: BatchOperation


@dataclass
class _Pending:
    index: int  # in the writes given
    write: SingleWrite
    collection: Collection
    item: BatchItem


def _one_per_record(pending: list[_Pending]) -> tuple[list[_Pending], list[_Pending]]:
    """The writes of this round (the first of each record, in order) and those left."""
    seen: set[tuple[str, str, object]] = set()
    now: list[_Pending] = []
    later: list[_Pending] = []
    for entry in pending:
        key = (entry.write.principal.tenant_id, entry.collection.name, _record_key(entry))
        (later if key in seen else now).append(entry)
        seen.add(key)
    return now, later


def _record_key(entry: _Pending) -> object:
    """The record a write is for: its id, given in the path or in the data (the push path
    takes it from there). A write without a usable id is refused alone and shares no round."""
    change = entry.item.change
    assert change is not None
    if change.id is not None:
        return change.id
    in_data = (change.data or {}).get(entry.collection.id_field)
    return in_data if isinstance(in_data, str) else object()


def _by_tenant(entries: list[_Pending]) -> list[list[_Pending]]:
    """In tenant order: concurrent groups then take their record locks (PostgreSQL) in one
    global order, tenant by tenant, and never wait on each other crosswise."""
    groups: dict[str, list[_Pending]] = {}
    for entry in entries:
        groups.setdefault(entry.write.principal.tenant_id, []).append(entry)
    return [groups[tenant_id] for tenant_id in sorted(groups)]
