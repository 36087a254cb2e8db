"""Feed cursors: opaque to clients, signed so a forged or altered one is refused.

A cursor names a tenant and a feed point ``(xid, position)``; the signature is an HMAC-SHA256
with the server's secret key, truncated to 128 bits.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from dataclasses import dataclass

_VERSION = "c1"


class CursorError(ValueError):
    pass


@dataclass(frozen=True, order=True)
class FeedPoint:
    xid: int
    position: int


START = FeedPoint(0, 0)


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _mac(secret: str, payload: str) -> bytes:
    return hmac.new(secret.encode(), payload.encode(), hashlib.sha256).digest()[:16]


def encode_cursor(secret: str, tenant_id: str, point: FeedPoint) -> str:
    payload = f"{_VERSION}|{tenant_id}|{point.xid}|{point.position}"
    return f"{_b64(payload.encode())}.{_b64(_mac(secret, payload))}"


def decode_cursor(secret: str, tenant_id: str, cursor: str) -> FeedPoint:
    try:
        encoded, _, signature = cursor.partition(".")
        payload = _unb64(encoded).decode()
        valid = hmac.compare_digest(_mac(secret, payload), _unb64(signature))
    except (ValueError, UnicodeDecodeError) as exc:
        raise CursorError("malformed cursor") from exc
    if not valid:
        raise CursorError("cursor signature does not match")
    version, cursor_tenant, xid, position = ([*payload.split("|"), "", "", "", ""])[:4]
    if version != _VERSION or cursor_tenant != tenant_id:
        raise CursorError("cursor of another tenant or format")
    try:
        return FeedPoint(int(xid), int(position))
    except ValueError as exc:
        raise CursorError("malformed cursor") from exc
