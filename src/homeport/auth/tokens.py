"""Access tokens (JWT) and opaque token formats."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from homeport.kit.ids import new_id
from homeport.kit.security import KeyRing, decode_jwt, encode_jwt

ACCESS_CLAIMS = ["sub", "tid", "sid", "did", "role", "typ", "jti"]
# The verified-token cache's entry of an access token's unpacked claims (its key's last part).
_UNPACKED = ("<access claims>",)
API_KEY_MARK = "hpk_"
REFRESH_MARK = "hpr_"


@dataclass(frozen=True)
class AccessClaims:
    user_id: str
    tenant_id: str
    session_id: str
    device_id: str
    role: str


def issue_access_token(
    keyring: KeyRing,
    *,
    issuer: str,
    ttl_seconds: int,
    now: datetime,
    user_id: str,
    tenant_id: str,
    session_id: str,
    device_id: str,
    role: str,
) -> str:
    claims: dict[str, Any] = {
        "iss": issuer,
        "sub": user_id,
        "tid": tenant_id,
        "sid": session_id,
        "did": device_id,
        "role": role,
        "typ": "access",
        "jti": new_id(),
        "iat": int(now.timestamp()),
        "exp": int((now + timedelta(seconds=ttl_seconds)).timestamp()),
    }
    return encode_jwt(keyring, claims)


def read_access_token(keyring: KeyRing, token: str, *, issuer: str) -> AccessClaims:
    """Verify and unpack; raises :class:`homeport.kit.security.TokenError`."""
    from homeport.kit.security import TokenError

    # A request reads its token up to three times (rate limit, credentials, the write's
    # session check): the unpacked claims of a verified token are kept with its claims, on
    # the key ring's cache of verified tokens, until the token expires.
    unpacked_key = (token, issuer, _UNPACKED)
    unpacked = keyring.verified.get(unpacked_key)
    if unpacked is not None:
        access: AccessClaims = unpacked["access"]
        return access
    claims = decode_jwt(keyring, token, issuer=issuer, required=ACCESS_CLAIMS)
    if claims.get("typ") != "access":
        raise TokenError("not an access token")
    values = [claims.get(name) for name in ("sub", "tid", "sid", "did", "role")]
    if not all(isinstance(value, str) and value for value in values):
        raise TokenError("malformed claims")
    access = AccessClaims(*values)  # type: ignore[arg-type]
    keyring.verified.put(unpacked_key, {"exp": claims.get("exp"), "access": access})
    return access
