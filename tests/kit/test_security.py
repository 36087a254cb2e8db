"""The key ring's cache of verified tokens: it spares repeat signature checks and never lets
through a token that a fresh check would refuse."""

from __future__ import annotations

import time
from datetime import datetime
from typing import Any

import jwt
import pytest

from homeport.kit import security
from homeport.kit.security import KeyRing, TokenError, VerifiedTokens, decode_jwt, encode_jwt

ISSUER = "homeport-test"


def _keyring() -> KeyRing:
    return KeyRing(keys={"k1": "s" * 43}, active_kid="k1")


def _token(keyring: KeyRing, lifetime: int = 600, **extra: Any) -> str:
    now = int(time.time())
    return encode_jwt(keyring, {"iss": ISSUER, "iat": now, "exp": now + lifetime, **extra})


def test_a_repeated_token_is_checked_once(monkeypatch: pytest.MonkeyPatch) -> None:
    keyring = _keyring()
    token = _token(keyring, sub="u1")
    calls = []
    real_decode = jwt.decode

    def counting_decode(*args: Any, **kwargs: Any) -> Any:
        calls.append(args[0])
        return real_decode(*args, **kwargs)

    monkeypatch.setattr(security.jwt, "decode", counting_decode)
    first = decode_jwt(keyring, token, issuer=ISSUER, required=["sub"])
    first["sub"] = "changed by the caller"  # callers get copies; the cache keeps its own
    second = decode_jwt(keyring, token, issuer=ISSUER, required=["sub"])
    assert second["sub"] == "u1"
    assert calls == [token]


def test_a_cached_token_expires(monkeypatch: pytest.MonkeyPatch) -> None:
    keyring = _keyring()
    token = _token(keyring, lifetime=30)
    decode_jwt(keyring, token, issuer=ISSUER, required=[])
    later = time.time() + 31
    monkeypatch.setattr(security.time, "time", lambda: later)
    monkeypatch.setattr(jwt.api_jwt, "datetime", _frozen_datetime(later))
    with pytest.raises(TokenError) as raised:
        decode_jwt(keyring, token, issuer=ISSUER, required=[])
    assert raised.value.expired


def test_other_issuer_or_requirements_are_checked_again() -> None:
    keyring = _keyring()
    token = _token(keyring)
    decode_jwt(keyring, token, issuer=ISSUER, required=[])
    with pytest.raises(TokenError):
        decode_jwt(keyring, token, issuer="someone-else", required=[])
    with pytest.raises(TokenError):
        decode_jwt(keyring, token, issuer=ISSUER, required=["sub"])


def test_a_tampered_copy_of_a_cached_token_is_refused() -> None:
    keyring = _keyring()
    token = _token(keyring, sub="u1")
    decode_jwt(keyring, token, issuer=ISSUER, required=["sub"])
    header, payload, signature = token.split(".")
    tampered = f"{header}.{payload}.{signature[:-2]}{'AA' if signature[-2:] != 'AA' else 'BB'}"
    with pytest.raises(TokenError):
        decode_jwt(keyring, tampered, issuer=ISSUER, required=["sub"])


def test_a_new_key_ring_trusts_nothing_the_old_one_verified() -> None:
    old = _keyring()
    token = _token(old)
    decode_jwt(old, token, issuer=ISSUER, required=[])
    rotated = KeyRing(keys={"k2": "t" * 43}, active_kid="k2")  # k1 withdrawn
    with pytest.raises(TokenError):
        decode_jwt(rotated, token, issuer=ISSUER, required=[])


def test_the_cache_is_bounded_and_drops_the_least_recently_used() -> None:
    cache = VerifiedTokens(capacity=2)
    exp = time.time() + 600
    cache.put(("a", ISSUER, ()), {"exp": exp})
    cache.put(("b", ISSUER, ()), {"exp": exp})
    assert cache.get(("a", ISSUER, ())) is not None  # "a" is now the most recent
    cache.put(("c", ISSUER, ()), {"exp": exp})
    assert cache.get(("b", ISSUER, ())) is None
    assert cache.get(("a", ISSUER, ())) is not None
    assert cache.get(("c", ISSUER, ())) is not None


def test_claims_without_an_expiry_are_not_kept() -> None:
    cache = VerifiedTokens()
    cache.put(("a", ISSUER, ()), {"sub": "u1"})
    assert cache.get(("a", ISSUER, ())) is None


def _frozen_datetime(at: float) -> type[datetime]:
    """PyJWT's ``datetime`` with ``now()`` pinned at ``at``, so its expiry check agrees."""

    class Frozen(datetime):
        @classmethod
        def now(cls, tz: Any = None) -> Any:
            return datetime.fromtimestamp(at, tz)

    return Frozen
