"""Passwords, opaque secrets and signed JWTs. Domain-free: callers pass claims and keys."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import os
import secrets
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import jwt
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

JWT_ALGORITHM = "HS256"


class PasswordHashing:
    """argon2id hashing; a dummy verify keeps unknown accounts as slow as known ones.

    Hashing runs in a worker thread (argon2 releases the GIL): it takes tens of milliseconds
    and must not stall the event loop.
    """

    def __init__(self, time_cost: int, memory_cost_kib: int, parallelism: int) -> None:
        self._hasher = PasswordHasher(
            time_cost=time_cost, memory_cost=memory_cost_kib, parallelism=parallelism
        )
        self._dummy_hash = self._hasher.hash(secrets.token_urlsafe(16))

    async def hash(self, password: str) -> str:
        return await asyncio.to_thread(self._hasher.hash, password)

    async def verify(self, password_hash: str | None, password: str) -> bool:
        return await asyncio.to_thread(self._verify, password_hash, password)

    def _verify(self, password_hash: str | None, password: str) -> bool:
        try:
            return self._hasher.verify(password_hash or self._dummy_hash, password) and bool(
                password_hash
            )
        except (VerificationError, InvalidHashError):
            return False

    def needs_rehash(self, password_hash: str) -> bool:
        return self._hasher.check_needs_rehash(password_hash)


def new_secret(nbytes: int = 32) -> str:
    return secrets.token_urlsafe(nbytes)


def hash_token(token: str) -> str:
    """SHA-256 of a high-entropy token (refresh tokens, API keys, invitations).

    Salting and stretching are pointless for 256-bit random secrets; lookup by hash must work.
    """
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def constant_time_equal(left: str, right: str) -> bool:
    return hmac.compare_digest(left.encode("utf-8"), right.encode("utf-8"))


class VerifiedTokens:
    """The claims of tokens whose signature was verified lately, so a client that sends the
    same access token on every request pays for one HMAC check, not one per request (PyJWT's
    decode is a large part of a small request's cost). Bounded (least recently used go first);
    an entry is used only while its token is unexpired. Only verified tokens get in."""

    def __init__(self, capacity: int = 10_000) -> None:
        self.capacity = capacity
        self._entries: OrderedDict[tuple[str, str, tuple[str, ...]], dict[str, Any]] = OrderedDict()

    def get(self, key: tuple[str, str, tuple[str, ...]]) -> dict[str, Any] | None:
        claims = self._entries.get(key)
        if claims is None:
            return None
        if claims["exp"] <= time.time():
            del self._entries[key]
            return None
        self._entries.move_to_end(key)
        return claims

    def put(self, key: tuple[str, str, tuple[str, ...]], claims: dict[str, Any]) -> None:
        if not isinstance(claims.get("exp"), int | float):
            return
        self._entries[key] = claims
        self._entries.move_to_end(key)
        while len(self._entries) > self.capacity:
            self._entries.popitem(last=False)


@dataclass(frozen=True)
class KeyRing:
    """HMAC signing keys by key id. New tokens use ``active_kid``; any known kid verifies."""

    keys: dict[str, str]
    active_kid: str
    verified: VerifiedTokens = field(
        default_factory=VerifiedTokens, compare=False, repr=False, hash=False
    )

    def __post_init__(self) -> None:
        if self.active_kid not in self.keys:
            raise ValueError("the active key id is not in the key ring")


class TokenError(Exception):
    def __init__(self, reason: str, expired: bool = False) -> None:
        super().__init__(reason)
        self.reason = reason
        self.expired = expired


def encode_jwt(keyring: KeyRing, claims: dict[str, Any]) -> str:
    return jwt.encode(
        claims,
        keyring.keys[keyring.active_kid],
        algorithm=JWT_ALGORITHM,
        headers={"kid": keyring.active_kid},
    )


def decode_jwt(keyring: KeyRing, token: str, *, issuer: str, required: list[str]) -> dict[str, Any]:
    """Verify signature (only HS256, only known kids), expiry, issuer and required claims.

    A token verified before (and not expired since) is answered from the key ring's cache."""
    cache_key = (token, issuer, tuple(required))
    remembered = keyring.verified.get(cache_key)
    if remembered is not None:
        return dict(remembered)
    try:
        header = jwt.get_unverified_header(token)
    except jwt.PyJWTError as exc:
        raise TokenError("malformed token") from exc
    kid = header.get("kid")
    if header.get("alg") != JWT_ALGORITHM:
        raise TokenError("unsupported algorithm")
    if not isinstance(kid, str) or kid not in keyring.keys:
        raise TokenError("unknown key id")
    try:
        claims: dict[str, Any] = jwt.decode(
            token,
            keyring.keys[kid],
            algorithms=[JWT_ALGORITHM],
            issuer=issuer,
            options={"require": ["exp", "iat", "iss", *required]},
        )
    except jwt.ExpiredSignatureError as exc:
        raise TokenError("token expired", expired=True) from exc
    except jwt.PyJWTError as exc:
        raise TokenError("invalid token") from exc
    keyring.verified.put(cache_key, dict(claims))
    return claims


@dataclass(frozen=True)
class StoredSecrets:
    secret_key: str
    keyring: KeyRing


def load_or_create_secrets(path: Path, created_at: datetime) -> StoredSecrets:
    """Read ``secrets.json`` from the data directory, creating it (mode 0600) on first start."""
    if path.exists():
        data = json.loads(path.read_text("utf-8"))
    else:
        kid = f"k{created_at:%Y%m%d}-{secrets.token_hex(3)}"
        data = {
            "secret_key": new_secret(),
            "jwt_keys": {kid: new_secret(48)},
            "jwt_active_kid": kid,
        }
        write_secrets(path, data)
    return StoredSecrets(
        secret_key=data["secret_key"],
        keyring=KeyRing(keys=dict(data["jwt_keys"]), active_kid=data["jwt_active_kid"]),
    )


def write_secrets(path: Path, data: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        json.dump(data, handle, indent=2)
    os.replace(tmp, path)


def rotate_jwt_key(path: Path, created_at: datetime, keep: int = 3) -> str:
    """Add a new active signing key; keep the newest ``keep`` keys so live tokens still verify."""
    data = json.loads(path.read_text("utf-8"))
    kid = f"k{created_at:%Y%m%d}-{secrets.token_hex(3)}"
    keys: dict[str, str] = dict(data["jwt_keys"])
    keys[kid] = new_secret(48)
    data["jwt_keys"] = dict(list(keys.items())[-keep:])
    data["jwt_active_kid"] = kid
    write_secrets(path, data)
    return kid
