"""Signed, expiring download URLs: whoever holds the URL may read the bytes until it expires
(so an ``<img src>`` or a download manager works without the access token)."""

from __future__ import annotations

import hashlib
import hmac
from datetime import datetime
from urllib.parse import urlencode

_PURPOSE = b"homeport-file-url-v1"


def _signature(secret_key: str, file_id: str, variant: str, expires: int) -> str:
    key = hmac.new(secret_key.encode(), _PURPOSE, hashlib.sha256).digest()
    message = f"{file_id}\n{variant}\n{expires}".encode()
    return hmac.new(key, message, hashlib.sha256).hexdigest()[:40]


def signed_path(secret_key: str, file_id: str, variant: str, expires_at: datetime) -> str:
    """``variant`` is ``""`` for the original or ``<name>.<format>`` (``small.webp``)."""
    expires = int(expires_at.timestamp())
    query: dict[str, str | int] = {"expires": expires}
    if variant:
        query["variant"] = variant
    query["signature"] = _signature(secret_key, file_id, variant, expires)
    return f"/api/v1/files/{file_id}/content?{urlencode(query)}"


def signature_valid(
    secret_key: str, file_id: str, variant: str, expires: int, signature: str, now: datetime
) -> bool:
    if expires < int(now.timestamp()):
        return False
    expected = _signature(secret_key, file_id, variant, expires)
    return hmac.compare_digest(expected.encode(), signature.encode("utf-8", "replace"))
