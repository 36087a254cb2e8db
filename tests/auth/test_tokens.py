"""Attacks on access tokens: each one is a 401 with the right code, never a 500 or a pass."""

from __future__ import annotations

import base64
import json
import time
import warnings
from typing import Any

import jwt
import pytest

from tests.conftest import Harness


def _b64(data: dict[str, Any]) -> str:
    raw = json.dumps(data, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


async def _claims_and_token(harness: Harness) -> tuple[dict[str, Any], str]:
    tenant = await harness.create_tenant("acme")
    tokens = await harness.login(tenant.owner_email, tenant.owner_password)
    token = tokens["access_token"]
    return jwt.decode(token, options={"verify_signature": False}), token


async def _me(harness: Harness, token: str) -> Any:
    return await harness.client.get("/api/v1/auth/me", headers={"Authorization": f"Bearer {token}"})


async def test_alg_none_is_refused(harness: Harness) -> None:
    claims, _ = await _claims_and_token(harness)
    kid = harness.state.keyring.active_kid
    forged = f"{_b64({'alg': 'none', 'typ': 'JWT', 'kid': kid})}.{_b64(claims)}."
    response = await _me(harness, forged)
    assert response.status_code == 401
    assert response.json()["code"] == "AUTH_001"


async def test_wrong_key_is_refused(harness: Harness) -> None:
    claims, _ = await _claims_and_token(harness)
    kid = harness.state.keyring.active_kid
    forged = jwt.encode(claims, "not-the-key-" * 4, algorithm="HS256", headers={"kid": kid})
    response = await _me(harness, forged)
    assert response.status_code == 401
    assert response.json()["code"] == "AUTH_001"


async def test_unknown_kid_is_refused(harness: Harness) -> None:
    claims, _ = await _claims_and_token(harness)
    key = harness.state.keyring.keys[harness.state.keyring.active_kid]
    forged = jwt.encode(claims, key, algorithm="HS256", headers={"kid": "k-unknown"})
    response = await _me(harness, forged)
    assert response.status_code == 401
    assert response.json()["code"] == "AUTH_001"


async def test_other_algorithm_with_the_right_key_is_refused(harness: Harness) -> None:
    claims, _ = await _claims_and_token(harness)
    keyring = harness.state.keyring
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # PyJWT warns that the key is short for HS512
        forged = jwt.encode(
            claims,
            keyring.keys[keyring.active_kid],
            algorithm="HS512",
            headers={"kid": keyring.active_kid},
        )
    response = await _me(harness, forged)
    assert response.status_code == 401
    assert response.json()["code"] == "AUTH_001"


async def test_expired_token_says_expired(harness: Harness) -> None:
    claims, _ = await _claims_and_token(harness)
    keyring = harness.state.keyring
    claims.update(iat=int(time.time()) - 3600, exp=int(time.time()) - 60)
    expired = jwt.encode(
        claims,
        keyring.keys[keyring.active_kid],
        algorithm="HS256",
        headers={"kid": keyring.active_kid},
    )
    response = await _me(harness, expired)
    assert response.status_code == 401
    assert response.json()["code"] == "AUTH_002"


@pytest.mark.parametrize("claim", ["tid", "role", "sub", "did", "sid"])
async def test_tampered_claims_are_refused(harness: Harness, claim: str) -> None:
    claims, token = await _claims_and_token(harness)
    header, _payload, signature = token.split(".")
    claims[claim] = "admin" if claim == "role" else "01234567-tampered"
    tampered = f"{header}.{_b64(claims)}.{signature}"
    response = await _me(harness, tampered)
    assert response.status_code == 401
    assert response.json()["code"] == "AUTH_001"


async def test_a_validly_signed_token_for_another_session_is_refused(harness: Harness) -> None:
    """Even with the signing key, claims must match a live session in the database."""
    claims, _ = await _claims_and_token(harness)
    keyring = harness.state.keyring
    claims["did"] = "some-other-device"
    forged = jwt.encode(
        claims,
        keyring.keys[keyring.active_kid],
        algorithm="HS256",
        headers={"kid": keyring.active_kid},
    )
    response = await _me(harness, forged)
    assert response.status_code == 401
    assert response.json()["code"] == "AUTH_001"


async def test_revoked_session_is_refused(harness: Harness) -> None:
    _, token = await _claims_and_token(harness)
    headers = {"Authorization": f"Bearer {token}"}
    assert (await harness.client.post("/api/v1/auth/logout", headers=headers)).status_code == 204
    response = await _me(harness, token)
    assert response.status_code == 401
    assert response.json()["code"] == "AUTH_001"


@pytest.mark.parametrize(
    "authorization",
    ["Bearer", "Bearer ", "Bearer not.a.jwt", "Basic dXNlcjpwYXNz", "Bearer a.b", "Bearer ...."],
)
async def test_garbage_credentials_are_401(harness: Harness, authorization: str) -> None:
    response = await harness.client.get("/api/v1/auth/me", headers={"Authorization": authorization})
    assert response.status_code == 401
    assert response.json()["code"] == "AUTH_001"
    assert response.headers["content-type"] == "application/problem+json"


async def test_missing_credentials(harness: Harness) -> None:
    response = await harness.client.get("/api/v1/auth/me")
    assert response.status_code == 401
    assert response.json()["code"] == "AUTH_001"
    assert response.headers["WWW-Authenticate"] == "Bearer"


async def test_rotated_key_still_verifies_old_tokens(harness: Harness) -> None:
    from homeport.kit.security import KeyRing

    _, token = await _claims_and_token(harness)
    old = harness.state.keyring
    harness.state.keyring = KeyRing(keys={**old.keys, "k-new": "n" * 43}, active_kid="k-new")
    assert (await _me(harness, token)).status_code == 200
    tenant = harness.tenants["acme"]
    fresh = await harness.login(tenant.owner_email, tenant.owner_password, "second")
    assert jwt.get_unverified_header(fresh["access_token"])["kid"] == "k-new"
    assert (await _me(harness, fresh["access_token"])).status_code == 200


# Reading a token again


def _issue(keyring: Any, ttl_seconds: int = 600, issuer: str = "homeport-test") -> str:
    from datetime import UTC, datetime

    from homeport.auth.tokens import issue_access_token

    return issue_access_token(
        keyring,
        issuer=issuer,
        ttl_seconds=ttl_seconds,
        now=datetime.now(UTC),
        user_id="u1",
        tenant_id="t1",
        session_id="s1",
        device_id="d1",
        role="member",
    )


def test_a_token_read_again_is_not_unpacked_again(monkeypatch: pytest.MonkeyPatch) -> None:
    from homeport.auth import tokens
    from homeport.auth.tokens import read_access_token
    from homeport.kit.security import KeyRing, TokenError
    from tests.kit.test_security import _frozen_datetime

    keyring = KeyRing(keys={"k1": "s" * 43}, active_kid="k1")
    token = _issue(keyring, ttl_seconds=60)
    first = read_access_token(keyring, token, issuer="homeport-test")
    assert (first.user_id, first.tenant_id, first.session_id) == ("u1", "t1", "s1")
    monkeypatch.setattr(tokens, "decode_jwt", None)  # any decoding now fails loudly
    assert read_access_token(keyring, token, issuer="homeport-test") == first
    # The kept claims are of this issuer only, and only until the token expires.
    with pytest.raises(TypeError):
        read_access_token(keyring, token, issuer="another-issuer")
    monkeypatch.undo()
    later = time.time() + 120
    monkeypatch.setattr(time, "time", lambda: later)
    monkeypatch.setattr(jwt.api_jwt, "datetime", _frozen_datetime(later))
    with pytest.raises(TokenError) as expired:
        read_access_token(keyring, token, issuer="homeport-test")
    assert expired.value.expired
