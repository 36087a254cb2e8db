"""Login per device, refresh rotation with reuse detection, lockout, logout, sessions."""

from __future__ import annotations

import asyncio

import jwt
import pytest
from sqlalchemy import select, update

from homeport.kit.clock import utcnow
from homeport.models.auth import DeviceSession, RefreshToken
from homeport.models.tenants import LoginThrottle
from tests.conftest import Harness, make_settings, start_harness, stop_harness


async def test_login_returns_bearer_tokens_bound_to_the_device(harness: Harness) -> None:
    tenant = await harness.create_tenant("acme")
    tokens = await harness.login(tenant.owner_email, tenant.owner_password, "phone-7")
    assert tokens["token_type"] == "bearer"
    assert tokens["expires_in"] == 900
    header = jwt.get_unverified_header(tokens["access_token"])
    assert header["alg"] == "HS256"
    assert header["kid"] == harness.state.keyring.active_kid
    claims = jwt.decode(tokens["access_token"], options={"verify_signature": False})
    assert claims["tid"] == tenant.id
    assert claims["did"] == "phone-7"
    assert claims["role"] == "owner"
    assert claims["sid"] == tokens["session_id"]
    assert claims["exp"] - claims["iat"] == 900
    me = await harness.client.get(
        "/api/v1/auth/me", headers={"Authorization": f"Bearer {tokens['access_token']}"}
    )
    assert me.status_code == 200
    assert me.json()["email"] == tenant.owner_email
    assert me.json()["device_id"] == "phone-7"
    assert me.json()["tenant_slug"] == "acme"


async def test_unknown_account_and_wrong_password_get_the_same_answer(harness: Harness) -> None:
    tenant = await harness.create_tenant("acme")
    wrong = await harness.client.post(
        "/api/v1/auth/login",
        json={"email": tenant.owner_email, "password": "not-it-at-all", "device_id": "d"},
    )
    unknown = await harness.client.post(
        "/api/v1/auth/login",
        json={"email": "nobody@acme.example.com", "password": "not-it-at-all", "device_id": "d"},
    )
    assert wrong.status_code == unknown.status_code == 401
    strip = {"trace_id", "instance"}
    assert {k: v for k, v in wrong.json().items() if k not in strip} == {
        k: v for k, v in unknown.json().items() if k not in strip
    }
    assert wrong.json()["code"] == "AUTH_004"


async def test_tenant_slug_selects_the_membership(harness: Harness) -> None:
    acme = await harness.create_tenant("acme")
    globex = await harness.create_tenant("globex")
    await harness.add_member(globex, acme.owner_email, "manager", password="ignored-exists")
    ambiguous = await harness.client.post(
        "/api/v1/auth/login",
        json={"email": acme.owner_email, "password": acme.owner_password, "device_id": "d"},
    )
    assert ambiguous.status_code == 400
    assert ambiguous.json()["code"] == "AUTH_007"
    assert sorted(ambiguous.json()["tenants"]) == ["acme", "globex"]
    tokens = await harness.login(acme.owner_email, acme.owner_password, "d", tenant="globex")
    claims = jwt.decode(tokens["access_token"], options={"verify_signature": False})
    assert claims["tid"] == globex.id
    assert claims["role"] == "manager"
    outsider = await harness.client.post(
        "/api/v1/auth/login",
        json={
            "email": globex.owner_email,
            "password": globex.owner_password,
            "device_id": "d",
            "tenant": "acme",
        },
    )
    assert outsider.status_code == 401
    assert outsider.json()["code"] == "AUTH_004"


async def test_refresh_rotates_and_reuse_revokes_the_session(harness: Harness) -> None:
    tenant = await harness.create_tenant("acme")
    first = await harness.login(tenant.owner_email, tenant.owner_password)
    rotated = await harness.client.post(
        "/api/v1/auth/refresh", json={"refresh_token": first["refresh_token"]}
    )
    assert rotated.status_code == 200
    second = rotated.json()
    assert second["refresh_token"] != first["refresh_token"]
    assert second["session_id"] == first["session_id"]
    new_access = {"Authorization": f"Bearer {second['access_token']}"}
    assert (await harness.client.get("/api/v1/auth/me", headers=new_access)).status_code == 200

    replay = await harness.client.post(
        "/api/v1/auth/refresh", json={"refresh_token": first["refresh_token"]}
    )
    assert replay.status_code == 401
    assert replay.json()["code"] == "AUTH_003"
    # The whole session is gone: the newest tokens stop working too.
    after = await harness.client.get("/api/v1/auth/me", headers=new_access)
    assert after.status_code == 401
    assert after.json()["code"] == "AUTH_001"
    newest = await harness.client.post(
        "/api/v1/auth/refresh", json={"refresh_token": second["refresh_token"]}
    )
    assert newest.status_code == 401
    async with harness.state.database.transaction() as session:
        row = (
            await session.execute(
                select(DeviceSession).where(DeviceSession.id == first["session_id"])
            )
        ).scalar_one()
    assert row.revoked_reason == "refresh_reuse"


async def test_refresh_tokens_are_stored_hashed(harness: Harness) -> None:
    tenant = await harness.create_tenant("acme")
    tokens = await harness.login(tenant.owner_email, tenant.owner_password)
    async with harness.state.database.transaction() as session:
        hashes = (await session.execute(select(RefreshToken.token_hash))).scalars().all()
    assert tokens["refresh_token"] not in hashes
    assert all(len(value) == 64 for value in hashes)


async def test_unknown_and_expired_refresh_tokens(harness: Harness) -> None:
    tenant = await harness.create_tenant("acme")
    unknown = await harness.client.post("/api/v1/auth/refresh", json={"refresh_token": "hpr_x"})
    assert unknown.status_code == 401
    assert unknown.json()["code"] == "AUTH_001"
    tokens = await harness.login(tenant.owner_email, tenant.owner_password)
    async with harness.state.database.transaction() as session:
        await session.execute(update(RefreshToken).values(expires_at=utcnow()))
    expired = await harness.client.post(
        "/api/v1/auth/refresh", json={"refresh_token": tokens["refresh_token"]}
    )
    assert expired.status_code == 401
    assert expired.json()["code"] == "AUTH_002"


async def test_five_failures_lock_the_account_and_the_lock_expires(harness: Harness) -> None:
    tenant = await harness.create_tenant("acme")
    bad = {"email": tenant.owner_email, "password": "wrong-password", "device_id": "d"}
    for _ in range(5):
        response = await harness.client.post("/api/v1/auth/login", json=bad)
        assert response.json()["code"] == "AUTH_004"
    good = {"email": tenant.owner_email, "password": tenant.owner_password, "device_id": "d"}
    locked = await harness.client.post("/api/v1/auth/login", json=good)
    assert locked.status_code == 429
    assert locked.json()["code"] == "AUTH_005"
    assert 1 <= int(locked.headers["Retry-After"]) <= 15 * 60 + 1
    # An unknown account locks the same way: the answer says nothing about existence.
    ghost = {"email": "ghost@acme.example.com", "password": "wrong-password", "device_id": "d"}
    for _ in range(5):
        await harness.client.post("/api/v1/auth/login", json=ghost)
    ghost_locked = await harness.client.post("/api/v1/auth/login", json=ghost)
    assert ghost_locked.status_code == 429
    assert ghost_locked.json()["detail"] == locked.json()["detail"]
    # Fifteen minutes later (moved back in the database) the right password works again.
    async with harness.state.database.transaction() as session:
        await session.execute(update(LoginThrottle).values(locked_until=utcnow()))
    assert (await harness.client.post("/api/v1/auth/login", json=good)).status_code == 200


async def test_lockout_threshold_is_configurable(database_url: str, tmp_path: object) -> None:
    from pathlib import Path

    settings = make_settings(database_url, Path(str(tmp_path)) / "d", login_max_failures=2)
    running, lifespan = await start_harness(settings)
    try:
        tenant = await running.create_tenant("acme")
        bad = {"email": tenant.owner_email, "password": "wrong-password", "device_id": "d"}
        codes = [
            (await running.client.post("/api/v1/auth/login", json=bad)).json()["code"]
            for _ in range(3)
        ]
    finally:
        await stop_harness(running, lifespan)
    assert codes == ["AUTH_004", "AUTH_004", "AUTH_005"]


async def test_one_session_per_device_and_revoking_one(harness: Harness) -> None:
    tenant = await harness.create_tenant("acme")
    phone = await harness.login(tenant.owner_email, tenant.owner_password, "phone")
    again = await harness.login(tenant.owner_email, tenant.owner_password, "phone")
    tablet = await harness.login(tenant.owner_email, tenant.owner_password, "tablet")
    headers = {"Authorization": f"Bearer {tablet['access_token']}"}
    listed = (await harness.client.get("/api/v1/auth/sessions", headers=headers)).json()
    devices = sorted(item["device_id"] for item in listed["sessions"])
    assert devices == ["phone", "tablet"]
    assert [s["current"] for s in listed["sessions"] if s["device_id"] == "tablet"] == [True]
    # The first phone login was replaced by the second.
    old_phone = {"Authorization": f"Bearer {phone['access_token']}"}
    assert (await harness.client.get("/api/v1/auth/me", headers=old_phone)).status_code == 401
    revoke = await harness.client.delete(
        f"/api/v1/auth/sessions/{again['session_id']}", headers=headers
    )
    assert revoke.status_code == 204
    new_phone = {"Authorization": f"Bearer {again['access_token']}"}
    assert (await harness.client.get("/api/v1/auth/me", headers=new_phone)).status_code == 401
    missing = await harness.client.delete("/api/v1/auth/sessions/nope", headers=headers)
    assert missing.status_code == 404
    assert missing.json()["code"] == "NOT_FOUND"


async def test_logout_ends_this_device_only(harness: Harness) -> None:
    tenant = await harness.create_tenant("acme")
    phone = await harness.login(tenant.owner_email, tenant.owner_password, "phone")
    tablet = await harness.login(tenant.owner_email, tenant.owner_password, "tablet")
    phone_headers = {"Authorization": f"Bearer {phone['access_token']}"}
    tablet_headers = {"Authorization": f"Bearer {tablet['access_token']}"}
    assert (
        await harness.client.post("/api/v1/auth/logout", headers=phone_headers)
    ).status_code == 204
    assert (await harness.client.get("/api/v1/auth/me", headers=phone_headers)).status_code == 401
    assert (await harness.client.get("/api/v1/auth/me", headers=tablet_headers)).status_code == 200
    refresh = await harness.client.post(
        "/api/v1/auth/refresh", json={"refresh_token": phone["refresh_token"]}
    )
    assert refresh.status_code == 401


@pytest.mark.parametrize(
    "body",
    [
        {"email": "a@b.co", "password": "x", "device_id": "bad device id with spaces"},
        {"email": "not-an-email", "password": "x", "device_id": "d"},
        {"email": "a@b.co", "password": "x", "device_id": "d", "unexpected": 1},
        {"email": "a@b.co", "password": "", "device_id": "d"},
    ],
)
async def test_invalid_login_bodies_name_the_field(
    harness: Harness, body: dict[str, object]
) -> None:
    response = await harness.client.post("/api/v1/auth/login", json=body)
    assert response.status_code == 422
    assert response.json()["code"] == "VALIDATION_001"
    assert response.json()["errors"]


async def test_logins_of_one_device_at_once_leave_one_live_session(harness: Harness) -> None:
    # On PostgreSQL the logins overlap; each must end the session the one before it made.
    tenant = await harness.create_tenant("acme")
    body = {"email": tenant.owner_email, "password": tenant.owner_password, "device_id": "phone"}
    for round_ in range(3):
        answers = await asyncio.gather(
            *(harness.client.post("/api/v1/auth/login", json=body) for _ in range(10))
        )
        assert [answer.status_code for answer in answers] == [200] * 10
        headers = await harness.login_headers(tenant.owner_email, tenant.owner_password, "tablet")
        listed = (await harness.client.get("/api/v1/auth/sessions", headers=headers)).json()
        phones = [s["id"] for s in listed["sessions"] if s["device_id"] == "phone"]
        assert len(phones) == 1, (round_, phones)
        # The live one is one of these logins' sessions; the others' tokens are refused.
        assert phones[0] in {answer.json()["session_id"] for answer in answers}
        for answer in answers:
            tokens = answer.json()
            me = await harness.client.get(
                "/api/v1/auth/me", headers={"Authorization": f"Bearer {tokens['access_token']}"}
            )
            assert me.status_code == (200 if tokens["session_id"] == phones[0] else 401)
