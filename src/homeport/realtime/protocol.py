"""The WebSocket message envelope, close codes and the `server_push` encoding."""

from __future__ import annotations

import json
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


def error(code: str, message: str) -> str:
    return envelope("error", {"code": code, "message": message})
