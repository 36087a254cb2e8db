"""Field indexes (`indexes` of a collection) belong to the tenant and collection that declared
them: another tenant's writes never touch them, a value too large for a btree entry is stored
and found all the same, declaring an index over such values works, and a changed or deleted
declaration takes its indexes with it. PostgreSQL: the index is partial and serves the filter."""

from __future__ import annotations

import operator
import os
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import text

from homeport.records.indexes import index_name
from homeport.records.query import MAX_VALUE_LENGTH, parse_list_query
from homeport.records.repository import RecordRepository
from tests.conftest import Harness, Tenant, make_settings, running_harness
from tests.records.conftest import list_plan
from tests.sync.conftest import Device, World, upsert

NOTES_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "id": {"type": "string"},
        "title": {"type": "string"},  # no maxLength: any size a push may carry
        "status": {"type": "string"},
        "priority": {"type": "integer"},
    },
}
# PostgreSQL's btree entries hold at most 2704 bytes (8 kB pages): this one needs 3264.
LARGE = os.urandom(1600).hex()
# Beyond what compression brings under the limit ("index row requires 45864 bytes" for 4 MB).
HUGE = os.urandom(512 * 1024).hex()
# Within a btree entry but past what the index keeps exactly (its key stands in for it), and
# short enough for a filter value (at most MAX_VALUE_LENGTH characters).
MID = "e" * 800
assert len(MID) <= MAX_VALUE_LENGTH


def _records(name: str) -> str:
    return f"/api/v1/collections/{name}/records"


async def _declare(
    harness: Harness,
    headers: dict[str, str],
    name: str,
    indexes: list[str],
    *,
    update: bool = False,
) -> httpx.Response:
    body: dict[str, Any] = {"schema": NOTES_SCHEMA, "read": "tenant", "write": "tenant"}
    body["indexes"] = indexes
    if update:
        return await harness.client.put(f"/api/v1/collections/{name}", json=body, headers=headers)
    return await harness.client.post(
        "/api/v1/collections", json={"name": name, **body}, headers=headers
    )


async def _other_tenant(harness: Harness, slug: str) -> tuple[Tenant, Device]:
    tenant = await harness.create_tenant(slug)
    tokens = await harness.login(tenant.owner_email, tenant.owner_password, f"{slug}-phone")
    headers = {"Authorization": f"Bearer {tokens['access_token']}"}
    me = (await harness.client.get("/api/v1/auth/me", headers=headers)).json()
    return tenant, Device(harness, f"{slug}-phone", headers, me["user_id"])


async def _push_applied(device: Device, collection: str, record_id: str, data: Any) -> None:
    answer = await device.push([upsert(collection, record_id, data)])
    assert answer.status_code == 200, answer.text[:500]
    body = answer.json()
    assert [r["status"] for r in body["results"]] == ["applied"], body["errors"]


async def _title_of(harness: Harness, device: Device, collection: str, record_id: str) -> str:
    answer = await harness.client.get(f"{_records(collection)}/{record_id}", headers=device.headers)
    assert answer.status_code == 200, answer.text[:500]
    title: str = answer.json()["data"]["title"]
    return title


async def _ids(harness: Harness, device: Device, collection: str, params: Any) -> list[str]:
    answer = await harness.client.get(
        _records(collection), params={**params, "limit": 1000}, headers=device.headers
    )
    assert answer.status_code == 200, answer.text[:500]
    return [item["id"] for item in answer.json()["data"]]


async def _field_indexes(harness: Harness) -> dict[str, str]:
    """Name -> definition of every index on sync_records that reads a record field."""
    database = harness.state.database
    async with database.transaction() as session:
        if database.dialect == "postgresql":
            query = "SELECT indexname, indexdef FROM pg_indexes WHERE tablename = 'sync_records'"
        else:
            query = (
                "SELECT name, sql FROM sqlite_master "
                "WHERE type = 'index' AND tbl_name = 'sync_records' AND sql IS NOT NULL"
            )
        rows = (await session.execute(text(query))).all()
    return {name: sql for name, sql in rows if "data" in sql}


def _reads(definition: str, field: str) -> bool:
    """Whether an index definition reads this field (``data -> 'f'``, ``'$.f'``)."""
    return f"'{field}'" in definition or f"'$.{field}'" in definition


def _covers(definition: str, tenant: Tenant, collection: str) -> bool:
    """Whether a partial index definition is limited to exactly this tenant and collection."""
    where = definition.partition(" WHERE ")[2]
    return f"'{tenant.id}'" in where and f"'{collection}'" in where and "tenant_id" in where


async def _indexes_of(harness: Harness, field: str) -> dict[str, str]:
    return {n: d for n, d in (await _field_indexes(harness)).items() if _reads(d, field)}


async def _index_of(harness: Harness, tenant: Tenant, collection: str, field: str) -> str | None:
    """The name of the index on ``field`` limited to this tenant and collection, if any."""
    found = [
        name
        for name, definition in (await _indexes_of(harness, field)).items()
        if _covers(definition, tenant, collection)
    ]
    assert len(found) <= 1, found
    return found[0] if found else None


async def _present(harness: Harness, candidates: list[tuple[Tenant, str]]) -> set[tuple[str, str]]:
    """Which of these (tenant, field) pairs of the ``notes`` collections have their index."""
    found = set()
    for tenant, field in candidates:
        if await _index_of(harness, tenant, "notes", field) is not None:
            found.add((tenant.slug, field))
    return found


async def test_an_index_of_one_tenant_never_reaches_another_tenants_writes(
    world: World,
) -> None:
    harness, acme = world.harness, world.tenant
    assert (await _declare(harness, world.owner.headers, "notes", ["title"])).status_code == 201
    assert (await _declare(harness, world.owner.headers, "drafts", [])).status_code == 201
    beta, beta_owner = await _other_tenant(harness, "beta")
    # Same collection name, no indexes declared: acme's index must not cover these rows.
    assert (await _declare(harness, beta_owner.headers, "notes", [])).status_code == 201

    await _push_applied(beta_owner, "notes", "n1", {"title": LARGE})
    await _push_applied(beta_owner, "notes", "n2", {"title": HUGE})
    # Nor rows of acme's own collections that declare no index.
    await _push_applied(world.owner, "drafts", "d1", {"title": LARGE})
    assert await _title_of(harness, beta_owner, "notes", "n1") == LARGE
    assert await _title_of(harness, beta_owner, "notes", "n2") == HUGE
    assert await _title_of(harness, world.owner, "drafts", "d1") == LARGE

    title_indexes = await _indexes_of(harness, "title")
    assert len(title_indexes) == 1, title_indexes
    ((name, definition),) = title_indexes.items()
    assert _covers(definition, acme, "notes"), definition
    assert not _covers(definition, beta, "notes")
    # The name is deterministic and within PostgreSQL's 63 bytes.
    assert name == index_name(acme.id, "notes", "title")
    assert len(name) <= 63


async def test_a_value_too_large_for_a_btree_entry_is_stored_and_found(world: World) -> None:
    harness, owner = world.harness, world.owner
    assert (await _declare(harness, owner.headers, "notes", ["title"])).status_code == 201
    titles = {"a": "a", "b": "ab", "c": "f" * 300, "d": "0" * 600, "mid": MID}
    for record_id, title in titles.items():
        await _push_applied(owner, "notes", record_id, {"title": title})
    await _push_applied(owner, "notes", "large", {"title": LARGE})
    await _push_applied(owner, "notes", "huge", {"title": HUGE})
    # The records API writes through the same path.
    created = await harness.client.post(
        _records("notes"), json={"id": "rest", "title": LARGE + "0"}, headers=owner.headers
    )
    assert created.status_code == 201, created.text[:500]
    assert await _title_of(harness, owner, "notes", "huge") == HUGE
    assert await _title_of(harness, owner, "notes", "rest") == LARGE + "0"

    for record_id, title in titles.items():
        assert await _ids(harness, owner, "notes", {"filter[title]": title}) == [record_id]
    assert await _ids(harness, owner, "notes", {"filter[title][in]": f"ab,{MID}"}) == [
        "b",
        "mid",
    ]
    titles.update(large=LARGE, huge=HUGE, rest=LARGE + "0")
    # Hexadecimal digits and "e" compare the same in every collation.
    for op, pivot in [
        ("gt", LARGE[:10]),
        ("gte", LARGE[:900]),
        ("lt", HUGE[:900]),
        ("lte", MID),
        ("gt", MID),
    ]:
        keep = {"gt": operator.gt, "gte": operator.ge, "lt": operator.lt, "lte": operator.le}[op]
        expected = sorted(i for i, t in titles.items() if keep(t, pivot))
        got = await _ids(harness, owner, "notes", {f"filter[title][{op}]": pivot})
        assert got == expected, (op, pivot[:20], got, expected)


async def test_declaring_an_index_over_large_values_already_stored(world: World) -> None:
    harness, owner = world.harness, world.owner
    beta, beta_owner = await _other_tenant(harness, "beta")
    assert (await _declare(harness, beta_owner.headers, "notes", [])).status_code == 201
    await _push_applied(beta_owner, "notes", "n1", {"title": HUGE})
    await _push_applied(beta_owner, "notes", "n2", {"title": "0"})
    # Another tenant's large values are no obstacle to acme's declaration ...
    assert (await _declare(harness, owner.headers, "notes", ["title"])).status_code == 201
    await _push_applied(owner, "notes", "small", {"title": "0"})
    assert (await _declare(harness, owner.headers, "drafts", [])).status_code == 201
    await _push_applied(owner, "drafts", "big", {"title": LARGE})
    await _push_applied(owner, "drafts", "small", {"title": "0"})
    # ... nor are its own, when it adds the index later.
    changed = await _declare(harness, owner.headers, "drafts", ["title"], update=True)
    assert changed.status_code == 200, changed.text[:500]
    assert await _ids(harness, owner, "drafts", {"filter[title][gte]": LARGE[:900]}) == ["big"]
    assert await _ids(harness, owner, "drafts", {"filter[title]": "0"}) == ["small"]
    # And beta declares an index over its own huge value.
    changed = await _declare(harness, beta_owner.headers, "notes", ["title"], update=True)
    assert changed.status_code == 200, changed.text[:500]
    assert await _ids(harness, beta_owner, "notes", {"filter[title][gt]": HUGE[:900]}) == ["n1"]
    assert await _ids(harness, beta_owner, "notes", {"filter[title]": "0"}) == ["n2"]
    assert await _index_of(harness, world.tenant, "drafts", "title") is not None
    for tenant in (world.tenant, beta):
        assert await _index_of(harness, tenant, "notes", "title") is not None


async def test_changed_and_deleted_declarations_take_their_indexes_along(world: World) -> None:
    harness, owner, acme = world.harness, world.owner, world.tenant
    beta, beta_owner = await _other_tenant(harness, "beta")
    assert (await _declare(harness, owner.headers, "notes", ["title", "status"])).status_code == 201
    assert (await _declare(harness, beta_owner.headers, "notes", ["title"])).status_code == 201

    async def present() -> set[tuple[str, str]]:
        return await _present(harness, [(acme, "title"), (acme, "status"), (beta, "title")])

    assert await present() == {("acme", "title"), ("acme", "status"), ("beta", "title")}
    changed = await _declare(harness, owner.headers, "notes", ["status"], update=True)
    assert changed.status_code == 200, changed.text
    assert await present() == {("acme", "status"), ("beta", "title")}

    deleted = await harness.client.delete("/api/v1/collections/notes", headers=owner.headers)
    assert deleted.status_code in (200, 204), deleted.text
    # Deleting a collection drops its indexes at once; the other tenant's stay.
    assert await present() == {("beta", "title")}
    # Declared again without indexes: nothing of the old declaration is left.
    assert (await _declare(harness, owner.headers, "notes", [])).status_code == 201
    assert await present() == {("beta", "title")}
    assert (await _declare(harness, owner.headers, "notes", ["title"], update=True)).is_success
    assert await present() == {("acme", "title"), ("beta", "title")}


async def test_the_partial_index_serves_the_list_filter(world: World) -> None:
    harness, owner, acme = world.harness, world.owner, world.tenant
    assert (await _declare(harness, owner.headers, "notes", ["status"])).status_code == 201
    beta, beta_owner = await _other_tenant(harness, "beta")
    assert (await _declare(harness, beta_owner.headers, "notes", ["status"])).status_code == 201
    for start in range(0, 5000, 1000):
        operations = [
            {
                "op": "create",
                "data": {"id": f"r{i:05}", "status": "open" if i % 100 == 7 else "done"},
            }
            for i in range(start, start + 1000)
        ]
        answer = await harness.client.post(
            f"{_records('notes')}:batch", json={"operations": operations}, headers=owner.headers
        )
        assert answer.status_code == 200, answer.text[:500]
    answer = await harness.client.post(
        f"{_records('notes')}:batch",
        json={"operations": [{"op": "create", "data": {"id": "b1", "status": "open"}}]},
        headers=beta_owner.headers,
    )
    assert answer.status_code == 200, answer.text[:500]
    expected = [f"r{i:05}" for i in range(7, 5000, 100)]
    assert await _ids(harness, owner, "notes", {"filter[status]": "open"}) == expected
    assert await _ids(harness, beta_owner, "notes", {"filter[status]": "open"}) == ["b1"]

    database = harness.state.database
    postgres = database.dialect == "postgresql"
    name = await _index_of(harness, acme, "notes", "status")
    assert name is not None, await _field_indexes(harness)
    assert await _index_of(harness, beta, "notes", "status") not in (None, name)
    async with database.transaction() as session:
        if postgres:
            await session.execute(text("ANALYZE sync_records"))
        plan = await list_plan(session, acme.id, "notes", [("filter[status]", "open")])
    # No enable_seqscan = off: the planner picks the index on its own statistics.
    assert name in plan, plan


@pytest.mark.postgres_only
async def test_the_index_is_exact_for_long_values(world: World) -> None:
    """Each filter goes through the field's index (searched for its keys, long values found
    under their shared one), and answers what a sequential scan answers."""
    harness, owner, acme = world.harness, world.owner, world.tenant
    # One indexed field per collection, so that a filter has one index to go through.
    assert (await _declare(harness, owner.headers, "notes", ["title"])).is_success
    assert (await _declare(harness, owner.headers, "scores", ["priority"])).is_success
    titles = {"a": "a", "b": "ab", "c": "c", "mid": MID, "large": LARGE, "huge": HUGE, "n": None}
    for number, (record_id, title) in enumerate(titles.items()):
        data: dict[str, Any] = {"priority": number}
        if title is not None:
            data["title"] = title
        await _push_applied(owner, "notes", record_id, data)
        await _push_applied(owner, "scores", record_id, data)
    # Enough rows that reading the whole collection costs more than the index.
    for name in ("notes", "scores"):
        for start in range(0, 3000, 1000):
            operations = [
                {"op": "create", "data": {"id": f"f{i:05}", "priority": 1000 + i}}
                for i in range(start, start + 1000)
            ]
            answer = await harness.client.post(
                f"{_records(name)}:batch", json={"operations": operations}, headers=owner.headers
            )
            assert answer.status_code == 200, answer.text[:500]
    filters = [
        ("notes", [("filter[title]", "ab")]),
        ("notes", [("filter[title]", MID)]),
        ("notes", [("filter[title][in]", f"c,{MID}")]),
        ("notes", [("filter[title][gt]", "ab")]),
        ("notes", [("filter[title][gt]", MID)]),
        ("notes", [("filter[title][lt]", LARGE[:900])]),
        ("notes", [("filter[title][gte]", HUGE[:900])]),
        ("scores", [("filter[priority][gte]", "2"), ("filter[priority][lt]", "5")]),
        ("scores", [("filter[priority][in]", "1,4")]),
    ]
    names = {
        "notes": await _index_of(harness, acme, "notes", "title"),
        "scores": await _index_of(harness, acme, "scores", "priority"),
    }
    assert None not in names.values(), await _field_indexes(harness)
    database = harness.state.database
    async with database.transaction() as session:
        await session.execute(text("ANALYZE sync_records"))

    def op_of(parameters: list[tuple[str, str]]) -> str:
        key = parameters[0][0]
        return key.split("][")[1].rstrip("]") if "][" in key else "eq"

    for name, parameters in filters:
        answers = []
        for scan in ("index", "sequential"):
            async with database.transaction() as session:
                if scan == "sequential":
                    await session.execute(text("SET LOCAL enable_indexscan = off"))
                    await session.execute(text("SET LOCAL enable_bitmapscan = off"))
                repository = RecordRepository(session)
                collection = await repository.get_collection(acme.id, name)
                assert collection is not None
                query = parse_list_query(parameters, collection, default_limit=50, max_limit=100)
                statement = repository.list_query(
                    acme.id,
                    name,
                    query,
                    owner_id=None,
                    after=None,
                    ranked=None,
                    indexed=collection.indexes,
                )
                rows = await repository.list_records(statement)
                answers.append([row.record_id for row in rows])
                compiled = statement.compile(
                    dialect=session.get_bind().dialect, compile_kwargs={"literal_binds": True}
                )
                plan_rows = (await session.execute(text(f"EXPLAIN {compiled}"))).all()
                plan = "\n".join(str(row[0]) for row in plan_rows)
                if scan == "index" and op_of(parameters) in ("eq", "in"):
                    # The index is searched for the filter's keys, not read whole. (A range
                    # goes through it or not as the planner's estimates have it.)
                    assert f" on {names[name]}" in plan or f" using {names[name]}" in plan, plan
                    assert "Index Cond: (CASE WHEN" in plan, plan
                elif scan == "sequential":
                    assert "Seq Scan" in plan, plan
        assert answers[0] == answers[1], (parameters, answers)
        field, value = parameters[0]
        if field == "filter[title]":
            assert answers[0] == [i for i, t in titles.items() if t == value]
        if field == "filter[title][in]":
            assert answers[0] == ["c", "mid"]
        if field == "filter[priority][in]":
            assert answers[0] == ["b", "large"]
        if field == "filter[priority][gte]":
            assert answers[0] == ["c", "large", "mid"]


async def test_declarations_beyond_the_budget_are_kept_and_answered_without_an_index(
    database_url: str, tmp_path: Path
) -> None:
    # Every write pays for every field index of the table: at most two exist here.
    settings = make_settings(database_url, tmp_path / "data", records_max_field_indexes=2)
    async with running_harness(settings) as harness:
        acme, acme_owner = await _other_tenant(harness, "acme")
        beta, beta_owner = await _other_tenant(harness, "beta")
        assert (
            await _declare(harness, acme_owner.headers, "notes", ["title", "status"])
        ).is_success
        late = await _declare(harness, beta_owner.headers, "notes", ["status"])
        assert late.status_code == 201, late.text  # accepted: the declaration is kept
        assert late.json()["collection"]["indexes"] == ["status"]

        async def present() -> set[tuple[str, str]]:
            return await _present(harness, [(acme, "title"), (acme, "status"), (beta, "status")])

        assert await present() == {("acme", "title"), ("acme", "status")}
        for number in range(30):
            status = "open" if number % 7 == 0 else "done"
            await _push_applied(beta_owner, "notes", f"b{number:02}", {"status": status})
        expected = [f"b{number:02}" for number in range(0, 30, 7)]
        # Filters on the field without an index answer the same (reading the collection).
        assert await _ids(harness, beta_owner, "notes", {"filter[status]": "open"}) == expected
        assert await _ids(harness, beta_owner, "notes", {"filter[status][ne]": "done"}) == expected

        # A declaration giving up an index makes room: the waiting one is built.
        freed = await _declare(harness, acme_owner.headers, "notes", ["status"], update=True)
        assert freed.status_code == 200, freed.text
        assert await present() == {("acme", "status"), ("beta", "status")}
        assert await _ids(harness, beta_owner, "notes", {"filter[status]": "open"}) == expected
