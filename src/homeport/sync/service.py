"""Push (batched, idempotent mutations with conflict policies) and pull (the gapless feed)."""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from pydantic import ValidationError
from sqlalchemy.ext.asyncio import AsyncSession

from homeport.auth.principal import Principal
from homeport.config import Settings
from homeport.kit.broker import publish_after_commit
from homeport.kit.canonical import NotCanonicalizable, NoUtf8, any_text, content_hash, has_utf8
from homeport.kit.clock import utcnow
from homeport.kit.errors import ErrorCode, ProblemError
from homeport.kit.hlc import HLCError, clamp_hlc, parse_hlc, server_hlc
from homeport.kit.ids import new_id
from homeport.kit.mergepatch import merge_patch
from homeport.models.sync import Collection, SyncEvent, SyncRecord
from homeport.sync.cursor import START, CursorError, FeedPoint, decode_cursor, encode_cursor
from homeport.sync.policies import Current, Mutation, Op, Outcome, Result, decide
from homeport.sync.repository import FeedRow, SyncRepository
from homeport.sync.rules import Reach, Writer, may_write, read_reach
from homeport.sync.schemas import RECORD_ID_MAX_LENGTH, PushChange
from homeport.sync.validation import validator_for

PUSH_KEYS = {"idempotency_key", "device_id", "mode", "changes"}
MODES = ("atomic", "best_effort")
# Item error of a valid change left out because its atomic push failed as a whole.
ATOMIC_ABORTED = "ATOMIC_ABORTED"
# Deepest nesting of objects and arrays a record may have.
MAX_DEPTH = 64


@dataclass(frozen=True)
class WriteCondition:
    """What a records API write expects of the record, checked once the record is locked.

    With a condition the write does not take part in conflict resolution: it is based on the
    locked current version (``if_match`` makes a moved version an error instead)."""

    create_only: bool = False  # VALIDATION_002 when the id exists (tombstones included)
    must_exist: bool = False  # NOT_FOUND when missing or deleted
    if_match: int | None = None  # SYNC_004 when the current version is another
    merge_patch: bool = False  # data is an RFC 7396 merge patch of the current data


@dataclass(frozen=True)
class WrittenRecord:
    """A record's state after a batch (what a records API answer shows)."""

    version: int
    data: dict[str, Any] | None
    deleted: bool
    created_at: datetime
    updated_at: datetime


@dataclass
class BatchOutcome:
    answer: dict[str, Any]
    written: dict[tuple[str, str], WrittenRecord]


@dataclass(frozen=True)
class Author:
    """Who wrote an item, when one batch holds the writes of several callers (the records
    API's grouped single writes): its HLC origin and its writer (None: an API key)."""

    origin: str
    writer: Writer | None


@dataclass
class _Item:
    change: PushChange | None
    collection: Collection | None = None
    record_id: str | None = None
    op: Op | None = None
    hlc: str = ""
    raw_collection: str | None = None  # as sent, for answers about items that failed to parse
    raw_id: str | None = None
    digest: str | None = None  # content hash of the item's data, once computed
    error: tuple[str, str, list[str] | None] | None = None  # code, message, fields
    condition: WriteCondition | None = None
    author: Author | None = None  # None: the batch's author


BatchItem = _Item


def write_item(change: PushChange, condition: WriteCondition, author: Author) -> _Item:
    """One records API write, for :meth:`SyncService.apply_batch`."""
    return _Item(change, condition=condition, author=author)


@dataclass
class _Working:
    """A record's state while the batch is applied (several items may touch one record)."""

    current: Current | None
    owner_id: str | None
    created_at: datetime | None
    changed: bool = False
    content_hash: str | None = None
    previous_owner_id: str | None = None


@dataclass
class PushAnswer:
    body: dict[str, Any]
    replayed: bool = False


@dataclass
class _Batch:
    idempotency_key: str
    mode: str
    items: list[_Item] = field(default_factory=list)


def _request_hash(body: dict[str, Any]) -> str:
    """Identifies a push body for idempotency (key order does not matter; any JSON works, even
    text with a lone surrogate, refused item by item later: "surrogatepass" hashes it, and
    leaves the bytes, so the hash, of every other text as they always were)."""
    text = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()


class DataRefused(ValueError):
    """A client's JSON document that cannot be stored and hashed the same on every database;
    the message names the problem (never the offending text)."""


def checked_digest(document: Any, name: str = "data") -> str:
    """The content hash of ``document`` once it passed the checks every JSON document a client
    has stored passes (a pushed change's data, a conflict's merged data, an inbox message):
    nested at most MAX_DEPTH levels deep, no NUL (PostgreSQL's JSONB cannot hold it) and no
    lone surrogate (no UTF-8) in a key or a value, and only values canonical JSON carries
    exactly (no NaN or Infinity, integers within +-2**53). :class:`DataRefused` otherwise;
    ``name`` is what the message calls the document."""
    if _too_deep(document):
        raise DataRefused(f"{name} is nested more than {MAX_DEPTH} levels deep")
    if _holds_nul(document):
        raise DataRefused(f"{name} cannot hold the NUL character (\\u0000)")
    try:
        return content_hash(document)
    except NoUtf8:
        raise DataRefused(
            f"{name} cannot hold a lone surrogate (text with no UTF-8 form)"
        ) from None
    except NotCanonicalizable as exc:
        raise DataRefused(f"{name} cannot be stored exactly: {exc}") from None


def refuse_unstorable(document: Any, name: str = "data") -> str:
    """:func:`checked_digest` for a request's document: a refusal is a 422 VALIDATION_001."""
    try:
        return checked_digest(document, name)
    except DataRefused as exc:
        raise ProblemError(
            ErrorCode.VALIDATION_001,
            str(exc),
            extra={"errors": [{"field": name, "message": str(exc)}]},
        ) from None


def storable_text(text: str) -> bool:
    """Whether both databases store ``text`` as it is: no NUL, no lone surrogate."""
    return "\x00" not in text and has_utf8(text)


class SyncService:
    def __init__(self, session: AsyncSession, settings: Settings, secret_key: str) -> None:
        self.repository = SyncRepository(session)
        self.settings = settings
        self.secret_key = secret_key

    # Cursors

    def cursor_for(self, tenant_id: str, point: FeedPoint) -> str:
        return encode_cursor(self.secret_key, tenant_id, point)

    async def feed_start(
        self, tenant_id: str, cursor: str | None, collection_names: list[str] | None
    ) -> tuple[FeedPoint, dict[str, str]]:
        """Where a reader of the feed (a pull, a WebSocket subscription) starts, and the
        tenant's read rules: the cursor must be genuine (SYNC_001) and not older than the
        tombstone horizon (SYNC_006), the named collections must exist (NOT_FOUND)."""
        after = START
        if cursor:
            try:
                after = decode_cursor(self.secret_key, tenant_id, cursor)
            except CursorError as exc:
                raise ProblemError(ErrorCode.SYNC_001, f"Invalid cursor: {exc}") from exc
        if after != START and after < await self.repository.compacted_point(tenant_id):
            raise ProblemError(
                ErrorCode.SYNC_006,
                "This cursor is older than the tombstone horizon; call force-sync and "
                "download again",
            )
        rules = await self.repository.read_rules(tenant_id)
        unknown = [name for name in collection_names or () if name not in rules]
        if unknown:
            raise ProblemError(ErrorCode.NOT_FOUND, f"Unknown collection: {', '.join(unknown)}")
        return after, rules

    # Push

    def _parse_batch(self, body: Any, principal: Principal) -> _Batch:
        if not isinstance(body, dict):
            raise ProblemError(ErrorCode.SYNC_001, "The push body must be a JSON object")
        key = body.get("idempotency_key")
        if key is None:
            raise ProblemError(ErrorCode.SYNC_002, "idempotency_key is required")
        if not isinstance(key, str) or not 1 <= len(key) <= 200:
            raise ProblemError(ErrorCode.SYNC_001, "idempotency_key must be 1 to 200 characters")
        if not storable_text(key):
            # What PostgreSQL's refusal of a NUL is (422), on SQLite too; a lone surrogate
            # could not even be hashed.
            raise ProblemError(
                ErrorCode.VALIDATION_001,
                "idempotency_key cannot hold NUL or a lone surrogate (text with no UTF-8 form)",
            )
        device = body.get("device_id")
        if device is not None and device != principal.device_id:
            raise ProblemError(
                ErrorCode.SYNC_001, "device_id does not match the device of the access token"
            )
        mode = body.get("mode", "best_effort")
        if mode not in MODES:
            raise ProblemError(ErrorCode.SYNC_001, "mode must be atomic or best_effort")
        raw_items: list[Any] = []
        changes = body.get("changes")
        if changes is not None:
            if not isinstance(changes, list):
                raise ProblemError(ErrorCode.SYNC_001, "changes must be a list")
            raw_items.extend(changes)
        # The seed wire format: collection names as keys holding arrays of records.
        for name, records in body.items():
            if name in PUSH_KEYS:
                continue
            if not isinstance(records, list):
                raise ProblemError(
                    ErrorCode.SYNC_001, f"{name!r} must be a list of records (or is not a field)"
                )
            raw_items.extend({"collection": name, "data": record} for record in records)
        if len(raw_items) > self.settings.sync_max_batch_items:
            raise ProblemError(
                ErrorCode.SYNC_001,
                f"A push holds at most {self.settings.sync_max_batch_items} items; "
                f"this one has {len(raw_items)}. Split it into several pushes.",
            )
        batch = _Batch(idempotency_key=key, mode=mode)
        for raw in raw_items:
            try:
                if not isinstance(raw, dict):
                    raise ValueError("an item must be a JSON object")
                if "data" in raw and not isinstance(raw["data"], dict | None):
                    raise ValueError("data must be a JSON object")
                batch.items.append(_Item(PushChange.model_validate(raw)))
            except (ValidationError, ValueError) as exc:
                item = _Item(None)
                if isinstance(raw, dict):
                    collection, record_id = raw.get("collection"), raw.get("id")
                    item.raw_collection = collection if isinstance(collection, str) else None
                    item.raw_id = record_id if isinstance(record_id, str) else None
                item.error = ("SYNC_001", f"Invalid item: {_short(exc)}", None)
                batch.items.append(item)
        return batch

    async def push(self, principal: Principal, body: Any) -> PushAnswer:
        started = time.perf_counter()
        user_id, device_id = _device_user(principal)
        batch = self._parse_batch(body, principal)
        now = utcnow()
        tenant_id = principal.tenant_id
        stored = await self.claim_idempotency(
            tenant_id, device_id, batch.idempotency_key, _request_hash(body), now
        )
        if stored is not None:
            return PushAnswer(stored, replayed=True)
        author = Author(origin_of(principal), Writer(user_id=user_id, role=principal.role))
        outcome = await self.apply_batch(principal, batch.mode, batch.items, author, now)
        await self.store_idempotent_answer(
            tenant_id, device_id, batch.idempotency_key, outcome.answer
        )
        self._record_push_events(principal, started, outcome.answer["results"], now)
        return PushAnswer(outcome.answer)

    async def claim_idempotency(
        self, tenant_id: str, scope: str, key: str, request_hash: str, now: datetime
    ) -> dict[str, Any] | None:
        """Claim ``key`` for this request (per tenant and device or API key): the stored answer
        of an earlier request with the same key and body, or None to go ahead. SYNC_003 when
        the key was used with another body."""
        expires = now + timedelta(seconds=self.settings.sync_idempotency_ttl_seconds)
        claimed = await self.repository.claim_idempotency_key(
            tenant_id, scope, key, request_hash, now, expires
        )
        if claimed:
            return None
        stored = await self.repository.get_idempotent_push(tenant_id, scope, key)
        if stored is not None and stored.expires_at > now and stored.response:
            if stored.request_hash != request_hash:
                raise ProblemError(
                    ErrorCode.SYNC_003,
                    "This idempotency key was used with another body; use a new key",
                )
            answer: dict[str, Any] = json.loads(stored.response)
            return answer
        await self.repository.reset_idempotency_key(
            tenant_id, scope, key, request_hash, now, expires
        )
        return None

    async def store_idempotent_answer(
        self, tenant_id: str, scope: str, key: str, answer: dict[str, Any]
    ) -> None:
        await self.repository.store_idempotent_answer(
            tenant_id, scope, key, json.dumps(answer, separators=(",", ":"))
        )

    async def apply_batch(
        self,
        principal: Principal,
        mode: str,
        items: list[_Item],
        author: Author | None,
        now: datetime,
        collections: dict[str, Collection] | None = None,
    ) -> BatchOutcome:
        """Check, resolve and write a batch of changes in the caller's transaction: the one write
        path of pushes and of the records API. ``author`` writes the items that carry no
        :class:`Author` of their own (a push: its caller); ``principal`` names the tenant."""
        tenant_id = principal.tenant_id
        if collections is None:
            collections = {c.name: c for c in await self.repository.list_collections(tenant_id)}
        authors = [_author_of(item, author) for item in items]
        now_ms = int(now.timestamp() * 1000)
        skew_ms = self.settings.sync_max_clock_skew_seconds * 1000
        for item, item_author in zip(items, authors, strict=True):
            self._check_item(item, collections, item_author.origin, now_ms, skew_ms)
        keys = [
            (i.collection.name, i.record_id)
            for i in items
            if i.error is None and i.collection is not None and i.record_id is not None
        ]
        await self.repository.lock_records(tenant_id, keys)
        loaded = await self.repository.load_records(tenant_id, keys)
        working: dict[tuple[str, str], _Working] = {}
        for key, row in loaded.items():
            working[key] = _loaded(row)

        results: list[dict[str, Any]] = []
        conflicts: list[dict[str, Any]] = []
        conflict_rows: list[dict[str, Any]] = []
        errors: list[dict[str, Any]] = []
        for item, item_author in zip(items, authors, strict=True):
            outcome = None if item.error else self._apply_item(item, working, item_author.writer)
            if item.error is not None:
                code, message, fields = item.error
                errors.append(
                    {
                        "item_id": _item_id(item),
                        "collection": _item_collection(item),
                        "error": code,
                        "message": message,
                        "fields": fields,
                    }
                )
                results.append(_result(item, "rejected", None, None))
                continue
            assert outcome is not None
            assert item.collection is not None
            assert item.record_id
            state = working.get((item.collection.name, item.record_id))
            version = state.current.version if state and state.current else None
            if outcome.result is Result.CONFLICT:
                conflict_id = new_id()
                conflict_rows.append(
                    self._conflict_row(conflict_id, tenant_id, item, outcome, state, principal)
                )
                conflicts.append(
                    {
                        "conflict_id": conflict_id,
                        "collection": item.collection.name,
                        "id": item.record_id,
                        "resolution": outcome.resolution,
                        "winner": outcome.winner,
                        "status": "pending" if outcome.pending else "resolved",
                        "server": _side(state.current if state else None),
                    }
                )
                results.append(_result(item, "conflict", version, outcome.resolution))
            else:
                results.append(_result(item, "applied", version, None))

        rejected = len(errors)
        apply = not (mode == "atomic" and rejected)
        if not apply:
            for result in results:
                if result["status"] != "rejected":
                    result.update(status="rejected", version=None, resolution=None)
                    errors.append(
                        {
                            "item_id": result["id"],
                            "collection": result["collection"],
                            "error": ATOMIC_ABORTED,
                            "message": "Not applied: another item of this atomic push was "
                            "rejected; it may be sent again",
                            "fields": None,
                        }
                    )
            conflicts, conflict_rows = [], []
        point = await self._write(tenant_id, working, now) if apply else None
        if point is None:
            point = await self.repository.latest_point(tenant_id)
        if conflict_rows:
            await self.repository.add_conflicts(conflict_rows)
            self._notify_conflicts(principal, conflict_rows, collections)
        synced = sum(1 for result in results if result["status"] != "rejected")
        answer = {
            "synced_items": synced,
            "failed_items": len(results) - synced,
            "results": results,
            "conflicts": conflicts,
            "errors": errors,
            "cursor": self.cursor_for(tenant_id, point),
        }
        written = {
            key: WrittenRecord(
                state.current.version,
                state.current.data,
                state.current.deleted,
                state.created_at or now,
                now,
            )
            for key, state in working.items()
            if apply and state.changed and state.current is not None
        }
        return BatchOutcome(answer, written)

    def _check_item(
        self,
        item: _Item,
        collections: dict[str, Collection],
        origin: str,
        now_ms: int,
        skew_ms: int,
    ) -> None:
        change = item.change
        if item.error is not None or change is None:
            return
        item.raw_id = change.id
        without_utf8 = [
            name
            for name, value in (
                ("collection", change.collection),
                ("id", change.id),
                ("op", change.op),
                ("hlc", change.hlc),
                ("hash", change.hash),
            )
            if value is not None and not has_utf8(value)
        ]
        if without_utf8:
            item.error = (
                "SYNC_001",
                f"{', '.join(without_utf8)} cannot hold a lone surrogate (text with no UTF-8 form)",
                without_utf8,
            )
            return
        collection = collections.get(change.collection)
        if collection is None:
            item.error = ("NOT_FOUND", f"Unknown collection {change.collection!r}", None)
            return
        item.collection = collection
        data = change.data
        record_id = change.id
        if data is not None and collection.id_field in data:
            in_data = data[collection.id_field]
            if record_id is None:
                record_id = in_data if isinstance(in_data, str) else None
            elif in_data != record_id:
                item.error = (
                    "SYNC_001",
                    f"id {record_id!r} differs from {collection.id_field} in data",
                    [collection.id_field],
                )
                return
        if not record_id:
            named = "`id`" if collection.id_field == "id" else f"`id` or `{collection.id_field}`"
            item.error = (
                "SYNC_002",
                f"Missing record id (give {named} as a non-empty string)",
                [collection.id_field],
            )
            return
        if len(record_id) > RECORD_ID_MAX_LENGTH or "\x00" in record_id:
            item.error = (
                "SYNC_001",
                f"A record id is at most {RECORD_ID_MAX_LENGTH} characters, none of them NUL",
                [collection.id_field],
            )
            return
        item.record_id = record_id
        try:
            item.op = Op(change.op)
        except ValueError:
            item.error = ("SYNC_001", "op must be upsert, patch or delete", ["op"])
            return
        if item.op is not Op.DELETE and data is None:
            item.error = ("SYNC_002", f"data is required for {item.op.value}", ["data"])
            return
        if data is not None:
            try:
                digest = checked_digest(data)
            except DataRefused as exc:
                item.error = ("SYNC_001", str(exc), ["data"])
                return
            if change.hash is not None and digest != change.hash:
                item.error = (
                    "SYNC_001",
                    "hash does not match the SHA-256 of the canonical JSON (RFC 8785) of data",
                    ["hash"],
                )
                return
            item.digest = digest
        try:
            stamp = parse_hlc(change.hlc) if change.hlc else server_hlc(now_ms, origin)
        except HLCError as exc:
            item.error = ("SYNC_001", str(exc), ["hlc"])
            return
        item.hlc = str(clamp_hlc(stamp, now_ms, skew_ms))

    def _apply_item(
        self, item: _Item, working: dict[tuple[str, str], _Working], writer: Writer | None
    ) -> Outcome | None:
        collection, record_id, op = item.collection, item.record_id, item.op
        assert collection is not None
        assert record_id is not None
        assert op is not None
        assert item.change is not None
        key = (collection.name, record_id)
        state = working.get(key) or _Working(None, None, None)
        data = item.change.data
        base_version = item.change.base_version
        if item.condition is not None:
            item.error = _unmet(item.condition, state.current, record_id)
            if item.error is not None:
                return None
            if item.condition.merge_patch and state.current is not None:
                data = merge_patch(state.current.data or {}, data or {})
            base_version = state.current.version if state.current else None
        creator = writer.user_id if writer else None
        owner_now = state.owner_id if state.current is not None else None
        owner_after = _owner_after(collection, data, owner_now if state.current else creator)
        if writer is not None and (
            not may_write(collection.write_rule, writer, owner_now)
            or not may_write(collection.write_rule, writer, owner_after)
        ):
            item.error = ("AUTH_006", "Your role may not write this record", None)
            return None
        mutation = Mutation(op, data, base_version, item.hlc)
        outcome = decide(
            state.current, mutation, collection.conflict_policy, collection.auto_resolve
        )
        if outcome.write and not outcome.deleted:
            failing = validator_for(collection).errors(outcome.data or {})
            if failing:
                item.error = (
                    "VALIDATION_001",
                    "Record does not match the collection schema: "
                    + "; ".join(f"{name}: {message}" for name, message in failing[:10]),
                    [name for name, _ in failing],
                )
                return None
        if outcome.write:
            digest = None
            if not outcome.deleted:
                digest = item.digest if outcome.data == data else None
                try:
                    digest = digest or content_hash(outcome.data)
                except NotCanonicalizable as exc:
                    item.error = ("SYNC_001", f"data cannot be stored exactly: {exc}", ["data"])
                    return None
            version = (state.current.version if state.current else 0) + 1
            owner = owner_after if state.current is None or not outcome.deleted else owner_now
            working.pop(key, None)  # the feed lists a batch's records in the order written
            working[key] = _Working(
                Current(version, outcome.data, outcome.deleted, outcome.field_hlc, outcome.hlc),
                owner,
                state.created_at,
                changed=True,
                content_hash=digest,
                previous_owner_id=_previous_owner(state, owner),
            )
        return outcome

    async def _write(
        self, tenant_id: str, working: dict[tuple[str, str], _Working], now: datetime
    ) -> FeedPoint | None:
        changed = [(key, state) for key, state in working.items() if state.changed]
        if not changed:
            return None
        xid, positions = await self.repository.allocate_feed_points(tenant_id, len(changed))
        rows = []
        for ((collection, record_id), state), position in zip(changed, positions, strict=True):
            current = state.current
            assert current is not None
            rows.append(
                {
                    "tenant_id": tenant_id,
                    "collection": collection,
                    "record_id": record_id,
                    "owner_id": state.owner_id,
                    "previous_owner_id": state.previous_owner_id,
                    "data": current.data,
                    "version": current.version,
                    "field_hlc": current.field_hlc,
                    "hlc": current.hlc,
                    "deleted": current.deleted,
                    "content_hash": state.content_hash,
                    "xid": xid,
                    "position": position,
                    "created_at": state.created_at or now,
                    "updated_at": now,
                }
            )
        await self.repository.write_records(rows)
        publish_after_commit(self.repository.session, {"kind": "feed", "tenant_id": tenant_id})
        return FeedPoint(xid, positions[-1])

    def _notify_conflicts(
        self,
        principal: Principal,
        rows: list[dict[str, Any]],
        collections: dict[str, Collection],
    ) -> None:
        """After commit, tell the pushing device's live connections about conflicts waiting for
        a decision (manual) or, with notify_on_conflict, about every conflict."""
        for row in rows:
            collection = collections.get(row["collection"])
            pending = row["status"] == "pending"
            if not pending and not (collection and collection.notify_on_conflict):
                continue
            server = row["server_side"]
            publish_after_commit(
                self.repository.session,
                {
                    "kind": "device",
                    "tenant_id": principal.tenant_id,
                    "device_id": principal.device_id,
                    "message": {
                        "type": "conflict",
                        "payload": {
                            "conflict_id": row["id"],
                            "domain": row["collection"],
                            "mobile_id": row["record_id"],
                            "server_version": server.get("version"),
                            "client_version": row["client_side"].get("base_version"),
                            "server_data": server.get("data"),
                            "resolution": row["strategy"],
                            "status": row["status"],
                            "resolution_options": (
                                ["accept_server", "accept_client", "merge"] if pending else []
                            ),
                        },
                    },
                },
            )

    async def write_resolution(
        self,
        collection: Collection,
        record_id: str,
        current: SyncRecord | None,
        data: dict[str, Any] | None,
        deleted: bool,
    ) -> None:
        """Store a resolved conflict's outcome as a new version (stamped with server time).
        ``data`` passes the push's data checks (a 422 VALIDATION_001 otherwise)."""
        now = utcnow()
        stamp = str(server_hlc(int(now.timestamp() * 1000)))
        loaded = _loaded(current) if current is not None else _Working(None, None, None)
        previous = loaded.current
        owner = _owner_after(collection, data, loaded.owner_id)
        state = _Working(
            Current(
                (previous.version if previous else 0) + 1,
                None if deleted else data,
                deleted,
                {} if deleted else dict.fromkeys(data or {}, stamp),
                max(stamp, previous.hlc) if previous else stamp,
            ),
            owner,
            loaded.created_at,
            changed=True,
            content_hash=None if deleted or data is None else refuse_unstorable(data),
            previous_owner_id=_previous_owner(loaded, owner),
        )
        await self._write(collection.tenant_id, {(collection.name, record_id): state}, now)

    def _conflict_row(
        self,
        conflict_id: str,
        tenant_id: str,
        item: _Item,
        outcome: Outcome,
        state: _Working | None,
        principal: Principal,
    ) -> dict[str, Any]:
        assert item.change is not None
        assert item.collection is not None
        return {
            "id": conflict_id,
            "tenant_id": tenant_id,
            "collection": item.collection.name,
            "record_id": item.record_id,
            "device_id": principal.device_id,
            "user_id": principal.user_id,
            "op": item.op.value if item.op else "upsert",
            "server_side": _side(state.current if state else None),
            "client_side": {
                "op": item.op.value if item.op else None,
                "data": item.change.data,
                "base_version": item.change.base_version,
                "hlc": item.hlc,
            },
            "strategy": outcome.resolution or "unknown",
            "status": "pending" if outcome.pending else "resolved",
            "winner": outcome.winner,
            "created_at": utcnow(),
            "resolved_at": None if outcome.pending else utcnow(),
            "resolved_by": None,
        }

    def _record_push_events(
        self, principal: Principal, started: float, results: list[dict[str, Any]], now: datetime
    ) -> None:
        """One event per collection the push touched (conflict rates are per collection)."""
        per_collection: dict[str | None, list[int]] = {}
        for result in results:
            name = result["collection"]
            # A name PostgreSQL cannot store (NUL) is no collection's: counted without one.
            known = name[:63] if name and storable_text(name) else None
            counts = per_collection.setdefault(known, [0, 0, 0])
            counts[0] += 1
            counts[1] += result["status"] == "conflict"
            counts[2] += result["status"] == "rejected"
        for name, (items, conflicts, failures) in (per_collection or {None: [0, 0, 0]}).items():
            self._record_event(
                principal, "push", started, items, conflicts, failures, now, collection=name
            )

    def _record_event(
        self,
        principal: Principal,
        kind: str,
        started: float,
        items: int,
        conflicts: int,
        failures: int,
        now: datetime,
        collection: str | None = None,
    ) -> None:
        self.repository.add_event(
            SyncEvent(
                id=new_id(),
                tenant_id=principal.tenant_id,
                device_id=principal.device_id,
                user_id=principal.user_id,
                kind=kind,
                collection=collection,
                duration_ms=round((time.perf_counter() - started) * 1000, 3),
                items=items,
                conflicts=conflicts,
                failures=failures,
                created_at=now,
            )
        )

    # Pull

    async def pull(
        self,
        principal: Principal,
        cursor: str | None,
        limit: int | None,
        collection_names: list[str] | None,
    ) -> str:
        """The answer as JSON text: stored documents are passed through without decoding."""
        started = time.perf_counter()
        user_id, _device = _device_user(principal)
        tenant_id = principal.tenant_id
        page = limit or self.settings.sync_pull_default_limit
        if not 1 <= page <= self.settings.sync_pull_max_limit:
            raise ProblemError(
                ErrorCode.SYNC_001,
                f"limit must be between 1 and {self.settings.sync_pull_max_limit}",
            )
        after, rules = await self.feed_start(tenant_id, cursor, collection_names)
        all_of, own_of = [], []
        for name in collection_names or list(rules):
            reach = read_reach(rules[name], principal.role)
            if reach is Reach.ALL:
                all_of.append(name)
            elif reach is Reach.OWN:
                own_of.append(name)
        rows = await self.repository.read_feed(tenant_id, after, page + 1, all_of, own_of, user_id)
        has_more = len(rows) > page
        rows = rows[:page]
        last = FeedPoint(rows[-1].xid, rows[-1].position) if rows else after
        body = (
            '{"changes":['
            + ",".join(
                _change_json(row, gone=row.collection in own_of and row.owner_id != user_id)
                for row in rows
            )
            + f'],"cursor":{json.dumps(self.cursor_for(tenant_id, last))},'
            + f'"has_more":{"true" if has_more else "false"}}}'
        )
        self._record_event(principal, "pull", started, len(rows), 0, 0, utcnow())
        return body

    def force_sync_cursor(self, principal: Principal) -> str:
        _device_user(principal)
        return self.cursor_for(principal.tenant_id, START)


def _author_of(item: _Item, batch_author: Author | None) -> Author:
    author = item.author or batch_author
    if author is None:  # a caller's mistake, not a client's
        raise ValueError("an item of a batch without an author carries none")
    return author


def origin_of(principal: Principal) -> str:
    """The HLC origin of a caller's writes: its device, or its API key."""
    return principal.device_id or f"api-key:{principal.api_key_id}"


def _device_user(principal: Principal) -> tuple[str, str]:
    if principal.user_id is None or principal.device_id is None:
        raise ProblemError(
            ErrorCode.AUTH_006, "Sync needs a user logged in on a device (not an API key)"
        )
    return principal.user_id, principal.device_id


def _unmet(
    condition: WriteCondition, current: Current | None, record_id: str
) -> tuple[str, str, list[str] | None] | None:
    """The item error when the locked record does not meet a records API write's condition."""
    live_version = current.version if current is not None and not current.deleted else None
    if condition.create_only and current is not None:
        return ("VALIDATION_002", f"A record with id {record_id!r} exists (or existed)", None)
    if condition.must_exist and live_version is None:
        return ("NOT_FOUND", f"Record {record_id!r} not found", None)
    if condition.if_match is not None and live_version != condition.if_match:
        now = live_version
        return (
            "SYNC_004",
            f"If-Match expected version {condition.if_match}, the record is at {now}",
            None,
        )
    return None


def _current(row: SyncRecord) -> Current:
    return Current(row.version, row.data, row.deleted, dict(row.field_hlc or {}), row.hlc)


def _side(current: Current | None) -> dict[str, Any]:
    if current is None:
        return {"version": None, "data": None, "deleted": True}
    return {"version": current.version, "data": current.data, "deleted": current.deleted}


def _previous_owner(state: _Working, new_owner: str | None) -> str | None:
    """Who owned the record before its latest change of owner (kept until the next one)."""
    if state.current is not None and state.owner_id != new_owner:
        return state.owner_id
    return state.previous_owner_id


def _owner_after(
    collection: Collection, data: dict[str, Any] | None, otherwise: str | None
) -> str | None:
    """The record's owner after a write of ``data``: the user named in the collection's owner
    field when the data has it, else ``otherwise`` (the current owner, or the creator)."""
    if data is not None and collection.owner_field and collection.owner_field in data:
        named = data[collection.owner_field]
        return named if isinstance(named, str) else None
    return otherwise


def _loaded(row: SyncRecord) -> _Working:
    return _Working(
        _current(row), row.owner_id, row.created_at, previous_owner_id=row.previous_owner_id
    )


def _too_deep(document: Any) -> bool:
    """Whether ``document`` nests objects/arrays deeper than MAX_DEPTH (checked without
    recursion, so a hostile document cannot exhaust the stack)."""
    stack: list[tuple[Any, int]] = [(document, 1)]
    while stack:
        value, depth = stack.pop()
        if depth > MAX_DEPTH:
            return True
        if isinstance(value, dict):
            stack.extend(
                (child, depth + 1) for child in value.values() if isinstance(child, dict | list)
            )
        elif isinstance(value, list):
            stack.extend((child, depth + 1) for child in value if isinstance(child, dict | list))
    return False


def _holds_nul(document: Any) -> bool:
    """Whether a string of ``document`` (a key or a value) holds U+0000."""
    return any_text(document, lambda text: "\x00" in text)


def _echoed(text: str | None) -> str | None:
    """Text of the request an answer repeats; None for text with no UTF-8 (it could not be
    sent back)."""
    return text if text is None or has_utf8(text) else None


def _item_id(item: _Item) -> str | None:
    return _echoed(item.record_id or item.raw_id)


def _item_collection(item: _Item) -> str | None:
    return _echoed(item.change.collection if item.change else item.raw_collection)


def _result(
    item: _Item, status: str, version: int | None, resolution: str | None
) -> dict[str, Any]:
    return {
        "collection": _item_collection(item),
        "id": _item_id(item),
        "status": status,
        "version": version,
        "resolution": resolution,
    }


def _change_json(row: FeedRow, *, gone: bool = False) -> str:
    """``gone``: the record left the caller's scope (it was handed to another owner), so the
    caller's device must drop it: it is served as a deletion."""
    updated = row.updated_at.isoformat().replace("+00:00", "Z")
    deleted = gone or row.deleted or row.data_json is None
    return (
        f'{{"collection":{json.dumps(row.collection)},"id":{json.dumps(row.record_id)},'
        f'"op":"{"delete" if deleted else "upsert"}","version":{row.version},'
        f'"data":{"null" if deleted else row.data_json},'
        f'"deleted":{"true" if deleted else "false"},"updated_at":"{updated}"}}'
    )


def _short(exc: Exception) -> str:
    if isinstance(exc, ValidationError):
        return "; ".join(
            f"{'.'.join(str(p) for p in error['loc'])}: {error['msg']}" for error in exc.errors()
        )[:500]
    return str(exc)[:500]
