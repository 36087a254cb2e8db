"""Tenants, members, roles and invitations."""

from __future__ import annotations

from typing import Any

from sqlalchemy import update

from homeport.kit.clock import utcnow
from homeport.models.tenants import User
from tests.conftest import Harness


async def _platform_admin(harness: Harness) -> dict[str, str]:
    tenant = await harness.create_tenant("platform")
    async with harness.state.database.transaction() as session:
        await session.execute(
            update(User).where(User.email == tenant.owner_email).values(is_platform_admin=True)
        )
    return await harness.owner_headers(tenant)


async def test_platform_admin_creates_tenants_with_an_invited_owner(harness: Harness) -> None:
    admin = await _platform_admin(harness)
    created = await harness.client.post(
        "/api/v1/tenants",
        json={"slug": "acme", "name": "Acme", "owner_email": "Boss@Acme.example.com"},
        headers=admin,
    )
    assert created.status_code == 201, created.text
    body = created.json()
    token = body["invitation"]["token"]
    accepted = await harness.client.post(
        "/api/v1/auth/invitations/accept",
        json={"token": token, "password": "a-new-password", "display_name": "Boss"},
    )
    assert accepted.status_code == 200
    assert accepted.json()["email"] == "boss@acme.example.com"
    tokens = await harness.login("boss@acme.example.com", "a-new-password", tenant="acme")
    me = await harness.client.get(
        "/api/v1/auth/me", headers={"Authorization": f"Bearer {tokens['access_token']}"}
    )
    assert me.json()["role"] == "owner"
    assert me.json()["display_name"] == "Boss"
    # An invitation works once.
    again = await harness.client.post(
        "/api/v1/auth/invitations/accept", json={"token": token, "password": "another-password"}
    )
    assert again.status_code == 400
    assert again.json()["code"] == "AUTH_009"
    duplicate = await harness.client.post(
        "/api/v1/tenants", json={"slug": "acme", "name": "Again"}, headers=admin
    )
    assert duplicate.status_code == 409
    assert duplicate.json()["code"] == "VALIDATION_002"
    listed = (await harness.client.get("/api/v1/tenants", headers=admin)).json()["tenants"]
    assert sorted(t["slug"] for t in listed) == ["acme", "platform"]


async def test_only_platform_admins_create_tenants(harness: Harness) -> None:
    tenant = await harness.create_tenant("acme")
    response = await harness.client.post(
        "/api/v1/tenants",
        json={"slug": "evil", "name": "Evil"},
        headers=await harness.owner_headers(tenant),
    )
    assert response.status_code == 403
    assert response.json()["code"] == "AUTH_006"


async def test_expired_invitation_is_refused(harness: Harness) -> None:
    tenant = await harness.create_tenant("acme")
    owner = await harness.owner_headers(tenant)
    added = await harness.client.post(
        f"/api/v1/tenants/{tenant.id}/members",
        json={"email": "late@acme.example.com", "role": "member"},
        headers=owner,
    )
    token = added.json()["invitation"]["token"]
    assert added.json()["activated"] is False
    from homeport.models.tenants import Invitation

    async with harness.state.database.transaction() as session:
        await session.execute(update(Invitation).values(expires_at=utcnow()))
    response = await harness.client.post(
        "/api/v1/auth/invitations/accept", json={"token": token, "password": "long-enough-pw"}
    )
    assert response.status_code == 400
    assert response.json()["code"] == "AUTH_009"


async def _member(
    harness: Harness, owner: dict[str, str], tenant_id: str, email: str, role: str
) -> Any:
    response = await harness.client.post(
        f"/api/v1/tenants/{tenant_id}/members",
        json={"email": email, "role": role, "password": "member-password-1"},
        headers=owner,
    )
    assert response.status_code == 201, response.text
    return response.json()


async def test_role_rules(harness: Harness) -> None:
    tenant = await harness.create_tenant("acme")
    owner = await harness.owner_headers(tenant)
    admin_user = await _member(harness, owner, tenant.id, "admin@acme.example.com", "admin")
    member_user = await _member(harness, owner, tenant.id, "m@acme.example.com", "member")
    admin = await harness.login_headers("admin@acme.example.com", "member-password-1")
    member = await harness.login_headers("m@acme.example.com", "member-password-1")
    base = f"/api/v1/tenants/{tenant.id}/members"

    # Members cannot list or change members; managers can list.
    assert (await harness.client.get(base, headers=member)).status_code == 403
    promote = await harness.client.patch(
        f"{base}/{member_user['user_id']}", json={"role": "manager"}, headers=admin
    )
    assert promote.status_code == 200
    assert promote.json()["role"] == "manager"
    # The promotion applies at once, without a new login.
    assert (await harness.client.get(base, headers=member)).status_code == 200
    # Admins cannot hand out ownership or touch an owner.
    owner_id = next(
        m["user_id"]
        for m in (await harness.client.get(base, headers=owner)).json()["members"]
        if m["role"] == "owner"
    )
    assert (
        await harness.client.patch(
            f"{base}/{member_user['user_id']}", json={"role": "owner"}, headers=admin
        )
    ).status_code == 403
    assert (
        await harness.client.patch(f"{base}/{owner_id}", json={"role": "member"}, headers=admin)
    ).status_code == 403
    assert (await harness.client.delete(f"{base}/{owner_id}", headers=admin)).status_code == 403
    # The last owner stays.
    last = await harness.client.patch(f"{base}/{owner_id}", json={"role": "admin"}, headers=owner)
    assert last.status_code == 409
    assert last.json()["code"] == "VALIDATION_003"
    # An owner can make another owner, then step down.
    assert (
        await harness.client.patch(
            f"{base}/{admin_user['user_id']}", json={"role": "owner"}, headers=owner
        )
    ).status_code == 200
    assert (
        await harness.client.patch(f"{base}/{owner_id}", json={"role": "admin"}, headers=owner)
    ).status_code == 200
    bad_role = await harness.client.patch(
        f"{base}/{owner_id}", json={"role": "superuser"}, headers=admin
    )
    assert bad_role.status_code == 422


async def test_removing_a_member_ends_their_sessions(harness: Harness) -> None:
    tenant = await harness.create_tenant("acme")
    owner = await harness.owner_headers(tenant)
    added = await _member(harness, owner, tenant.id, "leaver@acme.example.com", "member")
    leaver = await harness.login_headers("leaver@acme.example.com", "member-password-1")
    assert (await harness.client.get("/api/v1/auth/me", headers=leaver)).status_code == 200
    removed = await harness.client.delete(
        f"/api/v1/tenants/{tenant.id}/members/{added['user_id']}", headers=owner
    )
    assert removed.status_code == 204
    assert (await harness.client.get("/api/v1/auth/me", headers=leaver)).status_code == 401
    relogin = await harness.client.post(
        "/api/v1/auth/login",
        json={
            "email": "leaver@acme.example.com",
            "password": "member-password-1",
            "device_id": "d",
        },
    )
    assert relogin.status_code == 401
    duplicate = await harness.client.post(
        f"/api/v1/tenants/{tenant.id}/members",
        json={"email": tenant.owner_email, "role": "member"},
        headers=owner,
    )
    assert duplicate.status_code == 409


async def test_existing_person_joins_a_second_tenant_without_invitation(harness: Harness) -> None:
    acme = await harness.create_tenant("acme")
    globex = await harness.create_tenant("globex")
    joined = await harness.client.post(
        f"/api/v1/tenants/{globex.id}/members",
        json={"email": acme.owner_email, "role": "member"},
        headers=await harness.owner_headers(globex),
    )
    assert joined.status_code == 201
    assert joined.json()["invitation"] is None
    assert joined.json()["activated"] is True


async def test_names_and_addresses_are_checked_alike_on_every_database(harness: Harness) -> None:
    # SQLite would store a NUL that PostgreSQL refuses; control and invisible characters
    # would make look-alike accounts. Every one is a 422 naming the field, and nothing is kept.
    admin = await _platform_admin(harness)
    tenant_bodies = [
        ({"slug": "nul", "name": "Acme\u0000"}, "name"),
        ({"slug": "tab", "name": "Ac\tme"}, "name"),
        ({"slug": "mail", "name": "Acme", "owner_email": "boss\n@acme.example.com"}, "owner_email"),
    ]
    for body, field in tenant_bodies:
        refused = await harness.client.post("/api/v1/tenants", json=body, headers=admin)
        assert refused.status_code == 422, (body, refused.text)
        assert [error["field"] for error in refused.json()["errors"]] == [field]
    listed = (await harness.client.get("/api/v1/tenants", headers=admin)).json()["tenants"]
    assert [t["slug"] for t in listed] == ["platform"]
    tenant = await harness.create_tenant("acme")
    owner = await harness.owner_headers(tenant)
    base = f"/api/v1/tenants/{tenant.id}/members"
    member_bodies = [
        {"email": "a\u200b@acme.example.com"},
        {"email": "a@acme..example.com"},
        {"email": "<script>@acme.example.com"},
        {"email": "a\u0000@acme.example.com"},
        {"email": "ok@acme.example.com", "display_name": "Jo\u0000"},
        {"email": "ok@acme.example.com", "display_name": "Jo\r\nBcc: x"},
    ]
    for body in member_bodies:
        refused = await harness.client.post(base, json={**body, "role": "member"}, headers=owner)
        assert refused.status_code == 422, (body, refused.text)
        assert refused.json()["code"] == "VALIDATION_001"
    members = (await harness.client.get(base, headers=owner)).json()["members"]
    assert [m["email"] for m in members] == [tenant.owner_email]
    # Any script, and emoji, are names.
    added = await harness.client.post(
        base,
        json={"email": "jo@acme.example.com", "display_name": "👩‍🔧 Jo 東京", "role": "member"},
        headers=owner,
    )
    assert added.status_code == 201, added.text
    assert added.json()["display_name"] == "👩‍🔧 Jo 東京"
