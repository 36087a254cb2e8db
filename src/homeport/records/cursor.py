"""List cursors: the position after the last record of a page, signed and opaque.

A cursor holds the sort key's value and the record id of the last row (keyset pagination:
rows inserted meanwhile never shift a page), the tenant and collection, and a fingerprint of
the filters, sort and search it was made for. The HMAC-SHA256 signature (server secret,
truncated to 128 bits) makes a forged or altered cursor a 400.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from dataclasses import dataclass
from typing import Any

_VERSION = "l1"


class ListCursorError(ValueError):
    pass


@dataclass(frozen=True)
class Position:
    """``key``: the sort value of the last row (JSON-compatible); ``null_key`` when the row had
    none (a missing field), which is not the same as a JSON null on PostgreSQL."""

    key: Any
    record_id: str
    null_key: bool = False


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _mac(secret: str, payload: bytes) -> bytes:
    return hmac.new(secret.encode(), b"records|" + payload, hashlib.sha256).digest()[:16]


def encode_list_cursor(
    secret: str, tenant_id: str, collection: str, fingerprint: str, position: Position
) -> str:
    body: list[Any] = [_VERSION, tenant_id, collection, fingerprint, position.record_id]
    body.append(None if position.null_key else {"v": position.key})
    payload = json.dumps(body, separators=(",", ":")).encode()
    return f"{_b64(payload)}.{_b64(_mac(secret, payload))}"


def decode_list_cursor(
    secret: str, tenant_id: str, collection: str, fingerprint: str, cursor: str
) -> Position:
    try:
        encoded, _, signature = cursor.partition(".")
        payload = _unb64(encoded)
        valid = hmac.compare_digest(_mac(secret, payload), _unb64(signature))
    except (ValueError, UnicodeDecodeError) as exc:
        raise ListCursorError("malformed cursor") from exc
    if not valid:
        raise ListCursorError("cursor signature does not match")
    try:
        version, cursor_tenant, cursor_collection, cursor_fingerprint, record_id, key = json.loads(
            payload
        )
    except (ValueError, TypeError) as exc:
        raise ListCursorError("malformed cursor") from exc
    if version != _VERSION or cursor_tenant != tenant_id or cursor_collection != collection:
        raise ListCursorError("cursor of another collection or format")
    if cursor_fingerprint != fingerprint:
        raise ListCursorError("cursor made for other filters, sort or search")
    if not isinstance(record_id, str) or not (key is None or isinstance(key, dict)):
        raise ListCursorError("malformed cursor")
    if key is None:
        return Position(None, record_id, null_key=True)
    return Position(key.get("v"), record_id)
