"""Collection options of the records API (sortable, indexes, searchable, facets): declared
through the admin API or the manifest, checked against the schema, indexes really built."""

from __future__ import annotations

from typing import Any

import pytest
import yaml
from sqlalchemy import text

from homeport.records.indexes import index_name
from homeport.sync.manifest import ManifestError, parse_manifest
from tests.records.conftest import ORDERS_SCHEMA, Rest, list_plan

OPTIONS = ("sortable", "indexes", "searchable", "facets")


async def test_options_round_trip_through_the_admin_api(rest: Rest) -> None:
    got = await rest.client.get("/api/v1/collections/orders", headers=rest.owner.headers)
    assert got.json()["sortable"] == ["priority", "title", "amount", "ref"]
    assert got.json()["indexes"] == ["status", "priority"]
    assert got.json()["searchable"] == []
    body = {
        "schema": ORDERS_SCHEMA,
        "read": "tenant",
        "write": "tenant",
        "sortable": ["amount"],
        "indexes": ["paid"],
        "searchable": ["title"],
        "facets": ["status"],
    }
    changed = await rest.client.put(
        "/api/v1/collections/orders", json=body, headers=rest.owner.headers
    )
    assert changed.status_code == 200, changed.text
    assert changed.json()["action"] == "updated"
    assert (
        "sortable: ['priority', 'title', 'amount', 'ref'] -> ['amount']"
        in (changed.json()["changes"])
    )
    assert {k: changed.json()["collection"][k] for k in OPTIONS} == {
        "sortable": ["amount"],
        "indexes": ["paid"],
        "searchable": ["title"],
        "facets": ["status"],
    }
    # Sorting follows the declaration at once.
    assert (await rest.list({"sort": "priority"})).status_code == 400
    assert (await rest.list({"sort": "amount"})).status_code == 200


@pytest.mark.parametrize("option", OPTIONS)
async def test_an_option_must_name_a_schema_property(rest: Rest, option: str) -> None:
    body = {"name": "broken", "schema": ORDERS_SCHEMA, option: ["title", "nowhere"]}
    answer = await rest.client.post("/api/v1/collections", json=body, headers=rest.owner.headers)
    assert answer.status_code == 422
    assert "nowhere" in answer.text
    twice = {"name": "broken", "schema": ORDERS_SCHEMA, option: ["title", "title"]}
    answer = await rest.client.post("/api/v1/collections", json=twice, headers=rest.owner.headers)
    assert answer.status_code == 422
    bad_name = {"name": "broken", "schema": ORDERS_SCHEMA, option: ["x'); drop table y; --"]}
    answer = await rest.client.post(
        "/api/v1/collections", json=bad_name, headers=rest.owner.headers
    )
    assert answer.status_code == 422
    listed = await rest.client.get("/api/v1/collections", headers=rest.owner.headers)
    assert "broken" not in [c["name"] for c in listed.json()["collections"]]


def test_the_manifest_accepts_and_checks_the_options() -> None:
    entry: dict[str, Any] = {
        "name": "orders",
        "schema": ORDERS_SCHEMA,
        "sortable": ["priority"],
        "indexes": ["status"],
        "searchable": ["title"],
        "facets": ["status"],
    }
    parsed = parse_manifest(yaml.safe_dump({"collections": [entry]}))
    spec = parsed.collections[0]
    assert (spec.sortable, spec.indexes, spec.searchable, spec.facets) == (
        ["priority"],
        ["status"],
        ["title"],
        ["status"],
    )
    with pytest.raises(ManifestError, match="facets: nowhere is not a property"):
        parse_manifest(yaml.safe_dump({"collections": [{**entry, "facets": ["nowhere"]}]}))


async def test_declared_indexes_exist_and_serve_the_filter(rest: Rest) -> None:
    """The expression index is built on declare, and the planner uses it for a filter."""

    for start in (0, 1000):
        operations = [
            {"op": "create", "data": {"title": "t", "status": f"s{i % 100}"}}
            for i in range(start, start + 1000)
        ]
        answer = await rest.client.post(
            "/api/v1/collections/orders/records:batch",
            json={"operations": operations},
            headers=rest.owner.headers,
        )
        assert answer.status_code == 200
    database = rest.harness.state.database
    async with database.transaction() as session:
        postgres = database.dialect == "postgresql"
        if postgres:  # what autovacuum does on its own once the table has grown
            await session.execute(text("ANALYZE sync_records"))
        names_query = (
            "SELECT indexname FROM pg_indexes WHERE tablename = 'sync_records'"
            if postgres
            else "SELECT name FROM sqlite_master WHERE type = 'index'"
        )
        names = set((await session.execute(text(names_query))).scalars())
        tenant_id = rest.world.tenant.id
        assert {
            index_name(tenant_id, "orders", "status"),
            index_name(tenant_id, "orders", "priority"),
        } <= names
        if postgres:
            await session.execute(text("SET LOCAL enable_seqscan = off"))
        plan = await list_plan(session, tenant_id, "orders", [("filter[status]", "s7")])
        assert index_name(tenant_id, "orders", "status") in plan, plan
