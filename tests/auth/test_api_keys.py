"""API keys: shown once, stored hashed, scopes, expiry, IP allow-list, revocation."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import select, update

from homeport.kit.clock import utcnow
from homeport.models.auth import ApiKey
from tests.conftest import Harness, make_settings, start_harness, stop_harness


async def _create(harness: Harness, headers: dict[str, str], **body: Any) -> Any:
    payload = {"name": "erp", "scopes": ["tenant:read"], **body}
    return await harness.client.post("/api/v1/api-keys", json=payload, headers=headers)


async def test_key_is_shown_once_and_stored_hashed(harness: Harness) -> None:
    tenant = await harness.create_tenant("acme")
    owner = await harness.owner_headers(tenant)
    created = await _create(harness, owner)
    assert created.status_code == 201
    key = created.json()["key"]
    assert key.startswith("hpk_")
    listed = (await harness.client.get("/api/v1/api-keys", headers=owner)).json()["api_keys"]
    assert len(listed) == 1
    assert "key" not in listed[0]
    assert key.startswith(f"hpk_{listed[0]['prefix']}_")
    async with harness.state.database.transaction() as session:
        stored = (await session.execute(select(ApiKey))).scalar_one()
    assert stored.key_hash != key
    assert key not in str(stored.__dict__)


async def test_key_authenticates_with_either_header(harness: Harness) -> None:
    tenant = await harness.create_tenant("acme")
    key = (await _create(harness, await harness.owner_headers(tenant))).json()["key"]
    for headers in ({"X-API-Key": key}, {"Authorization": f"Bearer {key}"}):
        me = await harness.client.get("/api/v1/auth/me", headers=headers)
        assert me.status_code == 200
        assert me.json()["kind"] == "api_key"
        assert me.json()["tenant_id"] == tenant.id
        assert me.json()["scopes"] == ["tenant:read"]


async def test_scopes_limit_what_a_key_can_do(harness: Harness) -> None:
    tenant = await harness.create_tenant("acme")
    owner = await harness.owner_headers(tenant)
    reader = (await _create(harness, owner, scopes=["members:read"])).json()["key"]
    plain = (await _create(harness, owner, name="plain")).json()["key"]
    members = f"/api/v1/tenants/{tenant.id}/members"
    assert (await harness.client.get(members, headers={"X-API-Key": reader})).status_code == 200
    refused = await harness.client.get(members, headers={"X-API-Key": plain})
    assert refused.status_code == 403
    assert refused.json()["code"] == "AUTH_006"
    write = await harness.client.post(
        members, json={"email": "new@acme.example.com"}, headers={"X-API-Key": reader}
    )
    assert write.status_code == 403
    tenant_path = f"/api/v1/tenants/{tenant.id}"
    assert (await harness.client.get(tenant_path, headers={"X-API-Key": plain})).status_code == 200
    no_tenant_scope = await harness.client.get(tenant_path, headers={"X-API-Key": reader})
    assert no_tenant_scope.status_code == 403
    # Keys never manage keys.
    nested = await harness.client.post(
        "/api/v1/api-keys",
        json={"name": "x", "scopes": ["tenant:read"]},
        headers={"X-API-Key": reader},
    )
    assert nested.status_code == 403


async def test_unknown_scope_and_past_expiry_are_rejected(harness: Harness) -> None:
    tenant = await harness.create_tenant("acme")
    owner = await harness.owner_headers(tenant)
    unknown = await _create(harness, owner, scopes=["everything"])
    assert unknown.status_code == 422
    assert unknown.json()["code"] == "VALIDATION_001"
    assert unknown.json()["errors"][0]["field"] == "scopes"
    past = await _create(harness, owner, expires_at=(utcnow() - timedelta(days=1)).isoformat())
    assert past.status_code == 422
    bad_ip = await _create(harness, owner, allowed_ips=["not-an-ip"])
    assert bad_ip.status_code == 422
    assert (await harness.client.get("/api/v1/api-keys", headers=owner)).json()["api_keys"] == []


async def test_expired_key_is_refused(harness: Harness) -> None:
    tenant = await harness.create_tenant("acme")
    owner = await harness.owner_headers(tenant)
    key = (
        await _create(harness, owner, expires_at=(utcnow() + timedelta(days=1)).isoformat())
    ).json()["key"]
    assert (
        await harness.client.get("/api/v1/auth/me", headers={"X-API-Key": key})
    ).status_code == 200
    async with harness.state.database.transaction() as session:
        await session.execute(update(ApiKey).values(expires_at=utcnow() - timedelta(seconds=1)))
    expired = await harness.client.get("/api/v1/auth/me", headers={"X-API-Key": key})
    assert expired.status_code == 401
    assert expired.json()["code"] == "AUTH_002"


async def test_ip_allow_list(harness: Harness) -> None:
    tenant = await harness.create_tenant("acme")
    owner = await harness.owner_headers(tenant)
    # The test client connects from 127.0.0.1.
    allowed = (await _create(harness, owner, allowed_ips=["127.0.0.0/8"])).json()["key"]
    blocked = (await _create(harness, owner, name="b", allowed_ips=["10.1.2.3"])).json()["key"]
    ok = await harness.client.get("/api/v1/auth/me", headers={"X-API-Key": allowed})
    assert ok.status_code == 200
    refused = await harness.client.get("/api/v1/auth/me", headers={"X-API-Key": blocked})
    assert refused.status_code == 403
    assert refused.json()["code"] == "AUTH_008"


async def test_revoked_and_forged_keys_are_refused(harness: Harness) -> None:
    tenant = await harness.create_tenant("acme")
    owner = await harness.owner_headers(tenant)
    created = (await _create(harness, owner)).json()
    key = created["key"]
    forged = key[:-4] + ("aaaa" if not key.endswith("aaaa") else "bbbb")
    assert (await harness.client.get("/api/v1/auth/me", headers={"X-API-Key": forged})).json()[
        "code"
    ] == "AUTH_001"
    revoked = await harness.client.delete(f"/api/v1/api-keys/{created['id']}", headers=owner)
    assert revoked.status_code == 200
    assert revoked.json()["revoked_at"] is not None
    after = await harness.client.get("/api/v1/auth/me", headers={"X-API-Key": key})
    assert after.status_code == 401
    assert after.json()["code"] == "AUTH_001"
    for junk in ("hpk_", "hpk_nope", "hpk_a_b", "random"):
        response = await harness.client.get("/api/v1/auth/me", headers={"X-API-Key": junk})
        assert response.status_code == 401


async def test_only_admins_manage_keys(harness: Harness) -> None:
    tenant = await harness.create_tenant("acme")
    await harness.add_member(tenant, "manager@acme.example.com", "manager")
    manager = await harness.login_headers("manager@acme.example.com", "member-password-1")
    refused = await _create(harness, manager)
    assert refused.status_code == 403
    assert refused.json()["code"] == "AUTH_006"


async def test_last_used_is_recorded(database_url: str, tmp_path: Path) -> None:
    running, lifespan = await start_harness(make_settings(database_url, tmp_path / "d"))
    try:
        tenant = await running.create_tenant("acme")
        key = (await _create(running, await running.owner_headers(tenant))).json()["key"]
        await running.client.get("/api/v1/auth/me", headers={"X-API-Key": key})
        listed = await running.client.get(
            "/api/v1/api-keys", headers=await running.owner_headers(tenant)
        )
    finally:
        await stop_harness(running, lifespan)
    assert listed.json()["api_keys"][0]["last_used_at"] is not None


async def test_bad_key_input_is_refused_and_stores_nothing(harness: Harness) -> None:
    tenant = await harness.create_tenant("acme")
    owner = await harness.owner_headers(tenant)
    refusals = [
        ({"expires_at": "2099-01-01T00:00:00"}, "expires_at"),  # no time zone
        ({"expires_at": "2099-01-01"}, "expires_at"),
        ({"expires_at": "9999-12-31T23:59:59-01:00"}, "expires_at"),  # past year 9999 in UTC
        ({"name": "erp\u0000"}, "name"),  # PostgreSQL cannot store it, SQLite would
        ({"name": "two\nlines"}, "name"),
        ({"scopes": ["tenant:read", "x" * 65]}, "scopes.1"),
    ]
    for body, field in refusals:
        response = await _create(harness, owner, **body)
        assert response.status_code == 422, (body, response.text)
        assert response.headers["content-type"] == "application/problem+json"
        assert response.json()["code"] == "VALIDATION_001"
        assert field in {error["field"] for error in response.json()["errors"]}
    # A lone surrogate (no UTF-8 for it) as a scope.
    raw = b'{"name": "erp", "scopes": ["\\ud800"]}'
    unknown = await harness.client.post(
        "/api/v1/api-keys", content=raw, headers={**owner, "Content-Type": "application/json"}
    )
    assert unknown.status_code == 422
    assert unknown.json()["code"] == "VALIDATION_001"
    assert unknown.json()["errors"][0]["field"] == "scopes.0"
    listed = await harness.client.get("/api/v1/api-keys", headers=owner)
    assert listed.json()["api_keys"] == []
    # With an offset, the moment is kept in UTC.
    created = await _create(harness, owner, expires_at="2099-01-01T02:00:00+02:00")
    assert created.status_code == 201
    assert created.json()["expires_at"].startswith("2099-01-01T00:00:00")
