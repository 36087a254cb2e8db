"""Records API test helpers: a tenant with an ``orders`` collection and logged-in callers."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from homeport.records.query import parse_list_query
from homeport.records.repository import RecordRepository
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


async def list_plan(
    session: AsyncSession, tenant_id: str, collection: str, parameters: list[tuple[str, str]]
) -> str:
    """The database's plan for the records list query of ``parameters`` (EXPLAIN)."""
    repository = RecordRepository(session)
    declared = await repository.get_collection(tenant_id, collection)
    assert declared is not None
    query = parse_list_query(parameters, declared, default_limit=50, max_limit=1000)
    statement = repository.list_query(
        tenant_id,
        collection,
        query,
        owner_id=None,
        after=None,
        ranked=None,
        indexed=declared.indexes,
    )
    compiled = statement.compile(
        dialect=session.get_bind().dialect, compile_kwargs={"literal_binds": True}
    )
    explain = "EXPLAIN" if session.get_bind().dialect.name == "postgresql" else "EXPLAIN QUERY PLAN"
    rows = (await session.execute(text(f"{explain} {compiled}"))).all()
    return "\n".join(str(row[-1]) for row in rows)
