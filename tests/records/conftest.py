"""Records API test helpers: a tenant with an ``orders`` collection and logged-in callers."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import httpx
import pytest

from tests.conftest import Harness
from tests.sync.conftest import Device, World
from tests.sync.conftest import world as world  # the fixture, shared with the sync tests

ORDERS_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "id": {"type": "string"},
        "title": {"type": "string", "maxLength": 200},
        "status": {"type": "string"},
        "priority": {"type": "integer"},
        "amount": {"type": "number"},
        "paid": {"type": "boolean"},
        "tags": {"type": "array", "items": {"type": "string"}},
        "ref": {},
        "address": {"type": "object"},
    },
    "required": ["title"],
}
ORDERS = "/api/v1/collections/orders/records"


@dataclass
class Rest:
    world: World

    @property
    def client(self) -> httpx.AsyncClient:
        return self.world.harness.client

    @property
    def harness(self) -> Harness:
        return self.world.harness

    @property
    def owner(self) -> Device:
        return self.world.owner

    async def create(
        self, data: dict[str, Any], headers: dict[str, str] | None = None, path: str = ORDERS
    ) -> dict[str, Any]:
        answer = await self.client.post(path, json=data, headers=headers or self.owner.headers)
        assert answer.status_code == 201, answer.text
        body: dict[str, Any] = answer.json()
        return body

    async def list(
        self, params: dict[str, Any] | list[tuple[str, Any]], headers: dict[str, str] | None = None
    ) -> httpx.Response:
        return await self.client.get(ORDERS, params=params, headers=headers or self.owner.headers)

    async def api_key(self, *scopes: str) -> dict[str, str]:
        answer = await self.client.post(
            "/api/v1/api-keys",
            json={"name": "erp", "scopes": list(scopes)},
            headers=self.owner.headers,
        )
        assert answer.status_code == 201, answer.text
        return {"X-API-Key": answer.json()["key"]}


@pytest.fixture
async def rest(world: World) -> Rest:
    await world.collection(
        "orders",
        schema=ORDERS_SCHEMA,
        sortable=["priority", "title", "amount", "ref"],
        indexes=["status", "priority"],
    )
    return Rest(world)
