"""Sync test helpers: a tenant with collections and logged-in devices."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

import pytest

from homeport.kit.canonical import content_hash
from tests.conftest import Harness, Tenant

TASK_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "id": {"type": "string"},
        "title": {"type": "string", "maxLength": 200},
        "done": {"type": "boolean"},
        "notes": {"type": "string"},
    },
    "required": ["title"],
}

VOICE_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "verification_id": {"type": "string"},
        "score": {"type": "number"},
    },
    "required": ["verification_id"],
}


@dataclass
class Device:
    harness: Harness
    device_id: str
    headers: dict[str, str]
    user_id: str

    async def push(self, changes: list[dict[str, Any]], **extra: Any) -> Any:
        body = {"idempotency_key": extra.pop("key", uuid.uuid4().hex), "changes": changes, **extra}
        return await self.harness.client.post("/api/v1/sync/push", json=body, headers=self.headers)

    async def pull(self, cursor: str | None = None, **params: Any) -> Any:
        query = {k: v for k, v in {"cursor": cursor, **params}.items() if v is not None}
        return await self.harness.client.get(
            "/api/v1/sync/pull", params=query, headers=self.headers
        )

    async def pull_all(self, cursor: str | None = None, limit: int = 1000) -> tuple[list[Any], str]:
        changes: list[Any] = []
        while True:
            answer = await self.pull(cursor, limit=limit)
            assert answer.status_code == 200, answer.text
            body = answer.json()
            changes.extend(body["changes"])
            cursor = body["cursor"]
            if not body["has_more"]:
                return changes, cursor


def upsert(collection: str, record_id: str, data: dict[str, Any], **fields: Any) -> dict[str, Any]:
    return {
        "collection": collection,
        "id": record_id,
        "op": "upsert",
        "data": data,
        "hash": content_hash(data),
        **fields,
    }


@dataclass
class World:
    harness: Harness
    tenant: Tenant
    owner: Device

    async def device(
        self, email: str, role: str = "member", device_id: str | None = None
    ) -> Device:
        if email != self.tenant.owner_email:
            await self.harness.add_member(self.tenant, email, role)
            password = "member-password-1"
        else:
            password = self.tenant.owner_password
        device_id = device_id or f"dev-{uuid.uuid4().hex[:8]}"
        tokens = await self.harness.login(email, password, device_id)
        headers = {"Authorization": f"Bearer {tokens['access_token']}"}
        me = (await self.harness.client.get("/api/v1/auth/me", headers=headers)).json()
        return Device(self.harness, device_id, headers, me["user_id"])

    async def collection(self, name: str, **spec: Any) -> dict[str, Any]:
        body = {"name": name, "schema": TASK_SCHEMA, "read": "tenant", "write": "tenant", **spec}
        answer = await self.harness.client.post(
            "/api/v1/collections", json=body, headers=self.owner.headers
        )
        assert answer.status_code == 201, answer.text
        return dict(answer.json())


@pytest.fixture
async def world(harness: Harness) -> World:
    tenant = await harness.create_tenant("acme")
    tokens = await harness.login(tenant.owner_email, tenant.owner_password, "owner-phone")
    headers = {"Authorization": f"Bearer {tokens['access_token']}"}
    me = (await harness.client.get("/api/v1/auth/me", headers=headers)).json()
    owner = Device(harness, "owner-phone", headers, me["user_id"])
    return World(harness, tenant, owner)
