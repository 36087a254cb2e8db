"""Local SQLite store: replica (server state), outbox (pending mutations), push batch, meta."""

from __future__ import annotations

import hashlib
import json
import sqlite3
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import rfc8785

__all__ = ["Batch", "LocalStore", "PushOutcome", "canonical_json", "data_hash"]

SCHEMA_VERSION = "1"
# Item error of a change that was fine but not applied because its atomic push failed.
ATOMIC_ABORTED = "ATOMIC_ABORTED"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (
    key TEXT PRIMARY KEY,
    value TEXT NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS records (
    collection TEXT NOT NULL,
    id TEXT NOT NULL,
    version INTEGER NOT NULL,
    data TEXT,
    deleted INTEGER NOT NULL DEFAULT 0,
    updated_at TEXT,
    PRIMARY KEY (collection, id)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS outbox (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    collection TEXT NOT NULL,
    id TEXT NOT NULL,
    op TEXT NOT NULL,
    data TEXT,
    hash TEXT,
    base_version INTEGER,
    hlc TEXT NOT NULL,
    inflight INTEGER NOT NULL DEFAULT 0,
    UNIQUE (collection, id, inflight)
);
CREATE INDEX IF NOT EXISTS outbox_queue ON outbox (inflight, seq);
CREATE TABLE IF NOT EXISTS push_batch (
    slot INTEGER PRIMARY KEY CHECK (slot = 1),
    idempotency_key TEXT NOT NULL,
    body TEXT NOT NULL,
    size INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS inbox_acked (
    message_id TEXT PRIMARY KEY,
    expires_at REAL,
    acked_at REAL NOT NULL
) WITHOUT ROWID;
"""

_UPSERT_RECORD = """
INSERT INTO records (collection, id, version, data, deleted, updated_at)
VALUES (?, ?, ?, ?, ?, ?)
ON CONFLICT (collection, id) DO UPDATE SET
    version = excluded.version,
    data = excluded.data,
    deleted = excluded.deleted,
    updated_at = COALESCE(excluded.updated_at, records.updated_at)
WHERE excluded.version >= records.version
"""

CURSOR_PREFIX = "cursor:"
# How long an acked inbox message id without an expiry is remembered (to ack a redelivery).
INBOX_MEMORY_SECONDS = 30 * 24 * 3600

Key = tuple[str, str]
RecordRow = tuple[str, str, int, str | None, int, str | None]


def canonical_json(data: Any) -> str:
    """RFC 8785 canonical JSON text of ``data``."""
    return rfc8785.dumps(data).decode("utf-8")


def data_hash(canonical: str) -> str:
    """Lowercase hex SHA-256 of canonical JSON text."""
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


def _loads_obj(text: str | None) -> dict[str, Any] | None:
    if text is None:
        return None
    value = json.loads(text)
    return value if isinstance(value, dict) else None


def _combine(
    old_op: str, old_text: str | None, new_op: str, new_data: Mapping[str, Any] | None
) -> tuple[str, str | None]:
    """Collapse a queued change with a newer one for the same record."""
    if new_op == "delete":
        return "delete", None
    assert new_data is not None
    if new_op == "upsert" or old_op == "delete":
        # A patch after a delete re-creates the record with just these fields.
        return "upsert", canonical_json(new_data)
    merged = _loads_obj(old_text) or {}
    merged.update(new_data)
    return old_op, canonical_json(merged)


def _apply_op(current: dict[str, Any] | None, op: str, text: str | None) -> dict[str, Any] | None:
    """The record as seen after applying a queued change onto ``current``."""
    if op == "delete":
        return None
    fields = _loads_obj(text) or {}
    if op == "upsert" or current is None:
        return fields
    merged = dict(current)
    merged.update(fields)
    return merged


@dataclass(frozen=True, slots=True)
class Batch:
    """A push batch persisted before sending: resent byte for byte until answered."""

    idempotency_key: str
    body: str
    size: int


@dataclass(slots=True)
class PushOutcome:
    applied: int = 0
    conflicts: list[dict[str, Any]] = field(default_factory=list)
    conflict_results: list[dict[str, Any]] = field(default_factory=list)
    rejected: list[dict[str, Any]] = field(default_factory=list)
    requeued: int = 0


class LocalStore:
    """Everything the client keeps on the device, in one SQLite file.

    Writes are grouped in explicit transactions (``BEGIN IMMEDIATE`` .. ``COMMIT``); nested
    ``transaction()`` blocks join the outermost one.
    """

    def __init__(self, path: str) -> None:
        self._db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        self._depth = 0
        if path != ":memory:" and not path.startswith("file::memory:"):
            self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        with self.transaction():
            for statement in _SCHEMA.split(";"):
                if statement.strip():
                    self._db.execute(statement)
            if self.get_meta("schema_version") is None:
                self.set_meta("schema_version", SCHEMA_VERSION)
            if self._db.execute("SELECT 1 FROM push_batch").fetchone() is None:
                # No batch on the wire: nothing may stay marked in flight.
                stray = [s for (s,) in self._db.execute("SELECT seq FROM outbox WHERE inflight=1")]
                self._requeue(stray)

    def close(self) -> None:
        self._db.close()

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        if self._depth:
            self._depth += 1
            try:
                yield self._db
            finally:
                self._depth -= 1
            return
        self._db.execute("BEGIN IMMEDIATE")
        self._depth = 1
        try:
            yield self._db
        except BaseException:
            self._depth = 0
            self._db.execute("ROLLBACK")
            raise
        self._depth = 0
        self._db.execute("COMMIT")

    # -- meta ---------------------------------------------------------------------------------

    def get_meta(self, key: str) -> str | None:
        row = self._db.execute("SELECT value FROM meta WHERE key=?", (key,)).fetchone()
        return None if row is None else str(row[0])

    def set_meta(self, key: str, value: str | None) -> None:
        if value is None:
            self._db.execute("DELETE FROM meta WHERE key=?", (key,))
        else:
            self._db.execute(
                "INSERT INTO meta (key, value) VALUES (?, ?) "
                "ON CONFLICT (key) DO UPDATE SET value=excluded.value",
                (key, value),
            )

    def set_metas(self, values: Mapping[str, str | None]) -> None:
        with self.transaction():
            for key, value in values.items():
                self.set_meta(key, value)

    # -- outbox -------------------------------------------------------------------------------

    def queue(
        self,
        collection: str,
        record_id: str,
        op: str,
        data: Mapping[str, Any] | None,
        hlc: str,
    ) -> None:
        """Queue a change, collapsing it with a queued (not in-flight) change to the same record.

        Must run inside ``transaction()``.
        """
        db = self._db
        row = db.execute(
            "SELECT seq, op, data FROM outbox WHERE collection=? AND id=? AND inflight=0",
            (collection, record_id),
        ).fetchone()
        if row is not None:
            new_op, text = _combine(row[1], row[2], op, data)
            db.execute(
                "UPDATE outbox SET op=?, data=?, hash=?, hlc=? WHERE seq=?",
                (new_op, text, None if text is None else data_hash(text), hlc, row[0]),
            )
            return
        text = None if data is None else canonical_json(data)
        version = db.execute(
            "SELECT version FROM records WHERE collection=? AND id=?", (collection, record_id)
        ).fetchone()
        db.execute(
            "INSERT INTO outbox (collection, id, op, data, hash, base_version, hlc) "
            "VALUES (?, ?, ?, ?, ?, ?, ?)",
            (
                collection,
                record_id,
                op,
                text,
                None if text is None else data_hash(text),
                None if version is None else version[0],
                hlc,
            ),
        )

    def pending_count(self) -> int:
        return int(self._db.execute("SELECT COUNT(*) FROM outbox").fetchone()[0])

    def current_batch(self) -> Batch | None:
        row = self._db.execute("SELECT idempotency_key, body, size FROM push_batch").fetchone()
        return None if row is None else Batch(row[0], row[1], row[2])

    def build_batch(self, key: str, device_id: str, mode: str, limit: int) -> Batch | None:
        """Take up to ``limit`` queued changes, mark them in flight and persist the exact body."""
        with self.transaction() as db:
            existing = self.current_batch()
            if existing is not None:
                return existing
            rows = db.execute(
                "SELECT seq, collection, id, op, data, base_version, hlc, hash FROM outbox "
                "WHERE inflight=0 ORDER BY seq LIMIT ?",
                (limit,),
            ).fetchall()
            if not rows:
                return None
            dumps = json.dumps
            parts = [
                '{"collection":'
                + dumps(r[1])
                + ',"id":'
                + dumps(r[2])
                + ',"op":'
                + dumps(r[3])
                + ',"data":'
                + ("null" if r[4] is None else r[4])
                + ',"base_version":'
                + ("null" if r[5] is None else str(int(r[5])))
                + ',"hlc":'
                + dumps(r[6])
                + ',"hash":'
                + ("null" if r[7] is None else dumps(r[7]))
                + "}"
                for r in rows
            ]
            head = dumps({"idempotency_key": key, "device_id": device_id, "mode": mode})
            body = head[:-1] + ', "changes": [' + ",".join(parts) + "]}"
            db.executemany("UPDATE outbox SET inflight=1 WHERE seq=?", [(r[0],) for r in rows])
            db.execute(
                "INSERT INTO push_batch (slot, idempotency_key, body, size) VALUES (1, ?, ?, ?)",
                (key, body, len(rows)),
            )
            return Batch(key, body, len(rows))

    def rekey_batch(self, key: str) -> Batch | None:
        """Give the in-flight batch a new idempotency key (same changes)."""
        with self.transaction() as db:
            batch = self.current_batch()
            if batch is None:
                return None
            payload = json.loads(batch.body)
            payload["idempotency_key"] = key
            body = json.dumps(payload, separators=(",", ":"))
            db.execute("UPDATE push_batch SET idempotency_key=?, body=?", (key, body))
            return Batch(key, body, batch.size)

    def _requeue(self, seqs: Sequence[int]) -> None:
        """Put in-flight changes back in the queue, merging a newer queued change into them."""
        db = self._db
        for seq in seqs:
            row = db.execute(
                "SELECT collection, id, op, data FROM outbox WHERE seq=?", (seq,)
            ).fetchone()
            if row is None:
                continue
            newer = db.execute(
                "SELECT seq, op, data, hlc FROM outbox WHERE collection=? AND id=? AND inflight=0",
                (row[0], row[1]),
            ).fetchone()
            if newer is None:
                db.execute("UPDATE outbox SET inflight=0 WHERE seq=?", (seq,))
                continue
            op, text = _combine(row[2], row[3], newer[1], _loads_obj(newer[2]))
            db.execute("DELETE FROM outbox WHERE seq=?", (newer[0],))
            db.execute(
                "UPDATE outbox SET inflight=0, op=?, data=?, hash=?, hlc=? WHERE seq=?",
                (op, text, None if text is None else data_hash(text), newer[3], seq),
            )

    def apply_push_answer(self, answer: Mapping[str, Any]) -> PushOutcome:
        """Process a push answer for the in-flight batch in one transaction."""
        outcome = PushOutcome()
        with self.transaction() as db:
            inflight: dict[Key, tuple[int, str, str | None]] = {
                (r[0], r[1]): (r[2], r[3], r[4])
                for r in db.execute(
                    "SELECT collection, id, seq, op, data FROM outbox WHERE inflight=1"
                )
            }
            done: list[tuple[int]] = []
            replica: list[RecordRow] = []
            rebase: list[tuple[int, str, str]] = []
            statuses: dict[Key, str] = {}
            # Good changes of an atomic push that failed as a whole: not applied, send again.
            aborted = {
                (str(error.get("collection")), str(error.get("item_id")))
                for error in answer.get("errors") or ()
                if isinstance(error, Mapping) and error.get("error") == ATOMIC_ABORTED
            }
            for result in answer.get("results") or ():
                key = (str(result.get("collection")), str(result.get("id")))
                item = inflight.get(key)
                status = result.get("status")
                if item is None or status not in ("applied", "conflict", "rejected"):
                    continue
                if status == "rejected" and key in aborted:
                    continue
                del inflight[key]
                done.append((item[0],))
                statuses[key] = str(status)
                if status == "applied":
                    outcome.applied += 1
                    version = result.get("version")
                    if isinstance(version, int):
                        replica.append(self._applied_row(key, item[1], item[2], version))
                        rebase.append((version, key[0], key[1]))
                elif status == "rejected":
                    outcome.rejected.append(dict(result))
                else:
                    outcome.conflict_results.append(dict(result))
            for conflict in answer.get("conflicts") or ():
                outcome.conflicts.append(dict(conflict))
                server = conflict.get("server")
                if isinstance(server, dict) and isinstance(server.get("version"), int):
                    deleted = bool(server.get("deleted")) or server.get("data") is None
                    replica.append(
                        (
                            str(conflict.get("collection")),
                            str(conflict.get("id")),
                            server["version"],
                            None if deleted else json.dumps(server["data"]),
                            1 if deleted else 0,
                            None,
                        )
                    )
            if replica:
                db.executemany(_UPSERT_RECORD, replica)
            if rebase:
                # Queued follow-up edits were made on top of the change just applied.
                db.executemany(
                    "UPDATE outbox SET base_version=? WHERE collection=? AND id=? AND inflight=0",
                    rebase,
                )
            if done:
                db.executemany("DELETE FROM outbox WHERE seq=?", done)
            leftover = [item[0] for item in inflight.values()]
            self._requeue(leftover)
            outcome.requeued = len(leftover)
            db.execute("DELETE FROM push_batch")
        return outcome

    def _applied_row(self, key: Key, op: str, text: str | None, version: int) -> RecordRow:
        if op == "delete":
            return (key[0], key[1], version, None, 1, None)
        if op == "patch":
            row = self._db.execute(
                "SELECT data, deleted FROM records WHERE collection=? AND id=?", key
            ).fetchone()
            current = None if row is None or row[1] else _loads_obj(row[0])
            merged = _apply_op(current, op, text)
            return (key[0], key[1], version, json.dumps(merged), 0, None)
        return (key[0], key[1], version, text, 0, None)

    # -- replica ------------------------------------------------------------------------------

    def apply_pull_page(
        self, changes: Sequence[Mapping[str, Any]], cursor_key: str, cursor: str | None
    ) -> int:
        """Write one pulled page and its cursor in one transaction; returns the change count.

        ``cursor=None`` keeps the stored cursor.
        """
        dumps = json.dumps
        rows: list[RecordRow] = []
        for change in changes:
            data = change.get("data")
            deleted = change.get("op") == "delete" or bool(change.get("deleted")) or data is None
            rows.append(
                (
                    change["collection"],
                    change["id"],
                    change["version"],
                    None if deleted else dumps(data, separators=(",", ":")),
                    1 if deleted else 0,
                    change.get("updated_at"),
                )
            )
        with self.transaction() as db:
            if rows:
                db.executemany(_UPSERT_RECORD, rows)
            if cursor is not None:
                self.set_meta(CURSOR_PREFIX + cursor_key, cursor)
        return len(rows)

    def reset_replica(self, cursor_key: str, cursor: str) -> None:
        """Wipe the replica and every cursor (the outbox stays), then store ``cursor``."""
        with self.transaction() as db:
            db.execute("DELETE FROM records")
            db.execute("DELETE FROM meta WHERE key LIKE ?", (CURSOR_PREFIX + "%",))
            self.set_meta(CURSOR_PREFIX + cursor_key, cursor)

    def record_version(self, collection: str, record_id: str) -> int | None:
        row = self._db.execute(
            "SELECT version FROM records WHERE collection=? AND id=?", (collection, record_id)
        ).fetchone()
        return None if row is None else int(row[0])

    # -- live inbox ---------------------------------------------------------------------------

    def inbox_acked(self, message_id: str) -> bool:
        """Whether the inbox message was already handed to the app (and acked)."""
        row = self._db.execute(
            "SELECT 1 FROM inbox_acked WHERE message_id=?", (message_id,)
        ).fetchone()
        return row is not None

    def mark_inbox_acked(self, message_id: str, expires_at: float | None) -> None:
        """Remember a delivered inbox message; forgets ids that can no longer be redelivered."""
        now = time.time()
        with self.transaction() as db:
            db.execute(
                "DELETE FROM inbox_acked WHERE expires_at < ? "
                "OR (expires_at IS NULL AND acked_at < ?)",
                (now - 3600, now - INBOX_MEMORY_SECONDS),
            )
            db.execute(
                "INSERT INTO inbox_acked (message_id, expires_at, acked_at) VALUES (?, ?, ?) "
                "ON CONFLICT (message_id) DO NOTHING",
                (message_id, expires_at, now),
            )

    # -- reads (replica overlaid with the outbox) ---------------------------------------------

    def view(self, collection: str, record_id: str) -> dict[str, Any] | None:
        row = self._db.execute(
            "SELECT data, deleted FROM records WHERE collection=? AND id=?",
            (collection, record_id),
        ).fetchone()
        current = None if row is None or row[1] else _loads_obj(row[0])
        for op, text in self._db.execute(
            "SELECT op, data FROM outbox WHERE collection=? AND id=? ORDER BY inflight DESC",
            (collection, record_id),
        ):
            current = _apply_op(current, op, text)
        return current

    def view_all(self, collection: str) -> list[tuple[str, dict[str, Any]]]:
        loads = json.loads
        records: dict[str, dict[str, Any] | None] = {
            rid: loads(text)
            for rid, text in self._db.execute(
                "SELECT id, data FROM records WHERE collection=? AND deleted=0 ORDER BY id",
                (collection,),
            )
        }
        overlaid = False
        for rid, op, text in self._db.execute(
            "SELECT id, op, data FROM outbox WHERE collection=? ORDER BY inflight DESC, seq",
            (collection,),
        ):
            records[rid] = _apply_op(records.get(rid), op, text)
            overlaid = True
        items = [(rid, data) for rid, data in records.items() if data is not None]
        if overlaid:
            items.sort(key=lambda item: item[0])
        return items
