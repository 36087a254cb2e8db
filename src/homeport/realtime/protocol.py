"""The WebSocket message envelope, close codes and the `server_push` encoding."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from homeport.sync.repository import FeedRow

# Close codes (4000-4999 are the application's own).
CLOSE_AUTH = 4401  # missing, bad or expired token; the reason starts with AUTH_001 / AUTH_002
CLOSE_FORBIDDEN = 4403  # device_id is not the device of the token's session
CLOSE_TOO_SLOW = 4008  # the send queue overflowed: reconnect and resume from your cursor
CLOSE_SILENT = 4002  # no message for three heartbeat intervals
CLOSE_ABUSE = 1008  # policy violation: repeated malformed frames or rate-limit abuse


def now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def envelope(kind: str, payload: Any) -> str:
    return json.dumps(
        {"type": kind, "payload": payload, "timestamp": now_iso()}, separators=(",", ":")
    )


def raw_envelope(kind: str, payload_json: str) -> str:
    """An envelope around an already encoded payload (fan-out encodes a page once)."""
    return f'{{"type":"{kind}","payload":{payload_json},"timestamp":"{now_iso()}"}}'


def update_json(row: FeedRow, gone: bool = False) -> str:
    deleted = gone or row.deleted or row.data_json is None
    operation = "delete" if deleted else ("create" if row.version == 1 else "update")
    return (
        f'{{"entity_type":{json.dumps(row.collection)},"entity_id":{json.dumps(row.record_id)},'
        f'"operation":"{operation}","version":{row.version},'
        f'"data":{"null" if deleted else row.data_json}}}'
    )


def server_push(rows: list[tuple[FeedRow, bool]], cursor: str) -> str:
    """``rows``: (row, as a deletion) pairs."""
    updates = ",".join(update_json(row, gone) for row, gone in rows)
    return raw_envelope("server_push", f'{{"updates":[{updates}],"cursor":{json.dumps(cursor)}}}')


# A catch-up page or a burst of changes is split into messages of about this size, so clients
# with the usual 1 MiB frame limit can read them.
MAX_PUSH_BYTES = 256 * 1024


def server_pushes(
    rows: list[tuple[FeedRow, bool]], end_cursor: str, cursor_of: Callable[[FeedRow], str]
) -> list[str]:
    """``server_push`` messages for ``rows``; each carries the cursor of its last row, the last
    one ``end_cursor`` (which may be further on: rows outside the scope were skipped)."""
    if not rows:
        return []
    chunks: list[list[tuple[FeedRow, bool]]] = [[]]
    size = 0
    for row, gone in rows:
        if size >= MAX_PUSH_BYTES:
            chunks.append([])
            size = 0
        chunks[-1].append((row, gone))
        size += len(row.data_json or "") + 120
    return [
        server_push(chunk, end_cursor if number == len(chunks) - 1 else cursor_of(chunk[-1][0]))
        for number, chunk in enumerate(chunks)
    ]


def error(code: str, message: str) -> str:
    return envelope("error", {"code": code, "message": message})
