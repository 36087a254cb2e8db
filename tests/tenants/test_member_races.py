"""Member changes and invitations at the same moment end as if they ran one after the other.

SQLite has one writer, so concurrent requests queue there; on PostgreSQL they overlap (the
in-process client runs each gathered request in its own task and transaction). Each race is
repeated a few rounds: one round does not always interleave the way that breaks.
"""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import Any

import httpx

from homeport.kit.clock import utcnow
from homeport.kit.ids import new_id
from homeport.kit.security import hash_token
from homeport.models.tenants import Invitation
from tests.conftest import Harness

ROUNDS = 5
ACCEPTS = 10


async def _owners(harness: Harness, tenant_id: str, headers: dict[str, str]) -> list[str]:
    listed = await harness.client.get(f"/api/v1/tenants/{tenant_id}/members", headers=headers)
    assert listed.status_code == 200, listed.text
    return [m["user_id"] for m in listed.json()["members"] if m["role"] == "owner"]


async def _add(
    harness: Harness, tenant_id: str, headers: dict[str, str], email: str, **body: Any
) -> dict[str, Any]:
    added = await harness.client.post(
        f"/api/v1/tenants/{tenant_id}/members",
        json={"email": email, "role": "member", **body},
        headers=headers,
    )
    assert added.status_code == 201, added.text
    result: dict[str, Any] = added.json()
    return result


async def _accept(harness: Harness, token: str, password: str) -> httpx.Response:
    return await harness.client.post(
        "/api/v1/auth/invitations/accept", json={"token": token, "password": password}
    )


async def test_two_owners_demoting_each_other_leave_an_owner(harness: Harness) -> None:
    tenant = await harness.create_tenant("acme")
    first = await harness.owner_headers(tenant)
    second_id = await harness.add_member(tenant, "second@acme.example.com", "owner")
    second = await harness.login_headers("second@acme.example.com", "member-password-1", "d2")
    first_id = next(u for u in await _owners(harness, tenant.id, first) if u != second_id)
    base = f"/api/v1/tenants/{tenant.id}/members"
    for round_ in range(ROUNDS):
        answers = await asyncio.gather(
            harness.client.patch(f"{base}/{second_id}", json={"role": "admin"}, headers=first),
            harness.client.patch(f"{base}/{first_id}", json={"role": "admin"}, headers=second),
        )
        codes = sorted(answer.status_code for answer in answers)
        owners = await _owners(harness, tenant.id, first)
        assert len(owners) == 1, (round_, codes)
        # The later one is no longer an owner by then, so it may not demote one.
        assert codes == [200, 403], (round_, codes)
        refused = next(answer for answer in answers if answer.status_code != 200)
        assert refused.json()["code"] == "AUTH_006"
        # Whoever is still an owner makes the other one an owner again for the next round.
        winner, loser = (first, second_id) if answers[0].status_code == 200 else (second, first_id)
        promoted = await harness.client.patch(
            f"{base}/{loser}", json={"role": "owner"}, headers=winner
        )
        assert promoted.status_code == 200, promoted.text


async def test_two_owners_removing_each_other_leave_an_owner(harness: Harness) -> None:
    tenant = await harness.create_tenant("acme")
    keeper = await harness.owner_headers(tenant)
    base = f"/api/v1/tenants/{tenant.id}/members"
    for round_ in range(ROUNDS):
        email = f"other{round_}@acme.example.com"
        added = await _add(harness, tenant.id, keeper, email, role="owner", password="pw-123456")
        other_id = added["user_id"]
        other = await harness.login_headers(email, "pw-123456", "d2")
        keeper_id = next(u for u in await _owners(harness, tenant.id, keeper) if u != other_id)
        answers = await asyncio.gather(
            harness.client.delete(f"{base}/{other_id}", headers=keeper),
            harness.client.delete(f"{base}/{keeper_id}", headers=other),
        )
        codes = sorted(answer.status_code for answer in answers)
        # One removal happens; the other caller is gone by then (its session ended: 401).
        assert codes == [204, 401], (round_, codes)
        if answers[1].status_code == 204:
            keeper = other
        assert len(await _owners(harness, tenant.id, keeper)) == 1


async def test_an_invitation_is_accepted_once_when_sent_at_once(harness: Harness) -> None:
    tenant = await harness.create_tenant("acme")
    owner = await harness.owner_headers(tenant)
    for round_ in range(ROUNDS):
        email = f"new{round_}@acme.example.com"
        token = (await _add(harness, tenant.id, owner, email))["invitation"]["token"]
        passwords = [f"password-{round_}-{n}" for n in range(ACCEPTS)]
        answers = await asyncio.gather(
            *(_accept(harness, token, password) for password in passwords)
        )
        codes = [answer.status_code for answer in answers]
        assert sorted(codes) == [200] + [400] * (ACCEPTS - 1), (round_, codes)
        assert {a.json()["code"] for a in answers if a.status_code == 400} == {"AUTH_009"}
        # The password is the winner's.
        winner = passwords[codes.index(200)]
        await harness.login(email, winner, tenant="acme")


async def test_an_old_invitation_is_void_after_removal_and_re_adding(harness: Harness) -> None:
    tenant = await harness.create_tenant("acme")
    owner = await harness.owner_headers(tenant)
    email = "x@acme.example.com"
    added = await _add(harness, tenant.id, owner, email)
    old_token = added["invitation"]["token"]
    removed = await harness.client.delete(
        f"/api/v1/tenants/{tenant.id}/members/{added['user_id']}", headers=owner
    )
    assert removed.status_code == 204
    refused = await _accept(harness, old_token, "old-password-1")
    assert refused.status_code == 400
    assert refused.json()["code"] == "AUTH_009"
    again = await _add(harness, tenant.id, owner, email)
    new_token = again["invitation"]["token"]
    assert new_token != old_token
    stale = await _accept(harness, old_token, "old-password-1")
    assert stale.status_code == 400, stale.text
    assert stale.json()["code"] == "AUTH_009"
    accepted = await _accept(harness, new_token, "new-password-1")
    assert accepted.status_code == 200, accepted.text
    await harness.login(email, "new-password-1", tenant="acme")


async def test_a_new_invitation_replaces_an_older_pending_one(harness: Harness) -> None:
    tenant = await harness.create_tenant("acme")
    owner = await harness.owner_headers(tenant)
    email = "y@acme.example.com"
    added = await _add(harness, tenant.id, owner, email)
    removed = await harness.client.delete(
        f"/api/v1/tenants/{tenant.id}/members/{added['user_id']}", headers=owner
    )
    assert removed.status_code == 204
    # A pending invitation the removal did not cancel (one issued before this rule existed).
    leftover = "hpi_leftover-invitation-token"
    now = utcnow()
    async with harness.state.database.transaction() as session:
        session.add(
            Invitation(
                id=new_id(),
                tenant_id=tenant.id,
                user_id=added["user_id"],
                token_hash=hash_token(leftover),
                role="member",
                created_by=None,
                created_at=now,
                expires_at=now + timedelta(days=1),
            )
        )
    new_token = (await _add(harness, tenant.id, owner, email))["invitation"]["token"]
    stale = await _accept(harness, leftover, "old-password-1")
    assert stale.status_code == 400, stale.text
    assert stale.json()["code"] == "AUTH_009"
    assert (await _accept(harness, new_token, "new-password-1")).status_code == 200
