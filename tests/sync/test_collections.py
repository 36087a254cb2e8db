"""The collections admin API and what a collection's declaration does to sync, on both databases."""

from __future__ import annotations

import asyncio
import copy
import time
from typing import Any

import pytest

from homeport.sync.repository import SyncRepository
from tests.sync.conftest import TASK_SCHEMA, Device, World, upsert

URL = "/api/v1/collections"
PROBLEM_JSON = "application/problem+json"


async def feed(device: Device, ready: Any = bool, wait_s: float = 10.0) -> list[dict[str, Any]]:
    """``pull_all`` until ``ready(changes)``: on PostgreSQL the feed holds back changes above the
    cluster's oldest running transaction, which other databases on the server can delay."""
    deadline = time.monotonic() + wait_s
    while True:
        changes, _ = await device.pull_all()
        if ready(changes) or time.monotonic() > deadline:
            return changes
        await asyncio.sleep(0.05)


def with_property(name: str, spec: dict[str, Any], required: bool = False) -> dict[str, Any]:
    schema = copy.deepcopy(TASK_SCHEMA)
    schema["properties"][name] = spec
    if required:
        schema["required"] = [*schema["required"], name]
    return schema


async def put(world: World, name: str, body: dict[str, Any], **params: Any) -> Any:
    return await world.harness.client.put(
        f"{URL}/{name}", json=body, params=params, headers=world.owner.headers
    )


async def get(world: World, name: str) -> Any:
    return await world.harness.client.get(f"{URL}/{name}", headers=world.owner.headers)


def spec(**overrides: Any) -> dict[str, Any]:
    return {"schema": TASK_SCHEMA, "read": "tenant", "write": "tenant", **overrides}


def assert_problem(answer: Any, status: int, code: str) -> dict[str, Any]:
    assert answer.status_code == status, answer.text
    assert answer.headers["content-type"].startswith(PROBLEM_JSON)
    body: dict[str, Any] = answer.json()
    assert body["code"] == code
    assert body["status"] == status
    return body


# Create, list, get, update, delete


async def test_collection_lifecycle(world: World) -> None:
    client, headers = world.harness.client, world.owner.headers
    created = await client.post(
        URL, json={"name": "tasks", **spec(conflict_policy="client_wins")}, headers=headers
    )
    assert created.status_code == 201, created.text
    body = created.json()
    assert body["name"] == "tasks"
    assert body["action"] == "created"
    assert body["breaking"] == []
    collection = body["collection"]
    assert collection["schema"] == TASK_SCHEMA
    assert collection["id_field"] == "id"
    assert collection["read"] == "tenant"
    assert collection["write"] == "tenant"
    assert collection["conflict_policy"] == "client_wins"
    assert collection["owner_field"] is None
    assert collection["schema_version"] == 1

    await world.collection("notes", id_field="note_id", schema={"type": "object"})
    listed = await client.get(URL, headers=headers)
    assert listed.status_code == 200
    assert [c["name"] for c in listed.json()["collections"]] == ["notes", "tasks"]
    one = await get(world, "notes")
    assert one.status_code == 200
    assert one.json()["id_field"] == "note_id"
    assert one.json()["read"] == "tenant"

    # An additive change: a new optional property.
    additive = with_property("priority", {"type": "integer"})
    updated = await put(world, "tasks", spec(schema=additive, conflict_policy="client_wins"))
    assert updated.status_code == 200, updated.text
    body = updated.json()
    assert body["action"] == "updated"
    assert body["changes"] == ["schema: + property priority"]
    assert body["breaking"] == []
    assert body["collection"]["schema"] == additive
    assert body["collection"]["schema_version"] == 2
    assert (await get(world, "tasks")).json()["schema"] == additive

    same = await put(world, "tasks", spec(schema=additive, conflict_policy="client_wins"))
    assert same.json()["action"] == "unchanged"
    assert same.json()["collection"]["schema_version"] == 2

    rules = await put(world, "tasks", spec(schema=additive, read="owner", write="role:manager"))
    body = rules.json()
    assert body["action"] == "updated"
    assert set(body["changes"]) == {
        "read: tenant -> owner",
        "write: tenant -> role:manager",
        "conflict_policy: client_wins -> server_wins",
    }
    assert body["collection"]["schema_version"] == 2  # the schema did not change

    missing = await put(world, "nothing", spec())
    assert_problem(missing, 404, "NOT_FOUND")

    deleted = await client.delete(f"{URL}/tasks", headers=headers)
    assert deleted.status_code == 204
    assert_problem(await get(world, "tasks"), 404, "NOT_FOUND")
    assert [c["name"] for c in (await client.get(URL, headers=headers)).json()["collections"]] == [
        "notes"
    ]
    assert_problem(await client.delete(f"{URL}/tasks", headers=headers), 404, "NOT_FOUND")


async def test_defaults(world: World) -> None:
    created = await world.harness.client.post(
        URL, json={"name": "things"}, headers=world.owner.headers
    )
    assert created.status_code == 201
    collection = created.json()["collection"]
    assert collection["schema"] == {"type": "object"}
    assert (collection["read"], collection["write"]) == ("owner", "owner")
    assert collection["conflict_policy"] == "server_wins"


# Validation


INVALID = [
    pytest.param({"name": "Tasks"}, id="upper-case-name"),
    pytest.param({"name": "1tasks"}, id="digit-first-name"),
    pytest.param({"name": "my-tasks"}, id="dash-name"),
    pytest.param({"name": "t" * 64}, id="long-name"),
    pytest.param({"name": ""}, id="empty-name"),
    pytest.param({"name": "tasks", "read": "everyone"}, id="bad-read-rule"),
    pytest.param({"name": "tasks", "write": "role:boss"}, id="unknown-role"),
    pytest.param({"name": "tasks", "conflict_policy": "newest_wins"}, id="bad-policy"),
    pytest.param({"name": "tasks", "schema": {"type": "array"}}, id="array-schema"),
    pytest.param({"name": "tasks", "schema": {"type": "string"}}, id="string-schema"),
    pytest.param({"name": "tasks", "schema": []}, id="schema-not-object"),
    pytest.param({"name": "tasks", "schema": "object"}, id="schema-a-string"),
    pytest.param(
        {"name": "tasks", "schema": {"type": "object", "properties": {"a": {"type": "nonsense"}}}},
        id="bad-type",
    ),
    pytest.param({"name": "tasks", "schema": {"type": 5}}, id="type-not-a-string"),
    pytest.param(
        {"name": "tasks", "schema": {"type": "object", "required": "title"}}, id="bad-required"
    ),
    pytest.param({"name": "tasks", "schema": {"x-owner-field": 3}}, id="bad-owner-field"),
    pytest.param({"name": "tasks", "id_field": "record-id"}, id="bad-id-field"),
    pytest.param({"name": "tasks", "colour": "blue"}, id="unknown-key"),
    pytest.param({}, id="no-name"),
]


@pytest.mark.parametrize("body", INVALID)
async def test_invalid_declarations_are_refused_and_store_nothing(
    world: World, body: dict[str, Any]
) -> None:
    client, headers = world.harness.client, world.owner.headers
    answer = await client.post(URL, json=body, headers=headers)
    problem = assert_problem(answer, 422, "VALIDATION_001")
    assert problem["errors"], problem
    assert all({"field", "message"} <= set(error) for error in problem["errors"])
    assert (await client.get(URL, headers=headers)).json() == {"collections": []}


INVALID_UPDATES = [
    p for p in INVALID if isinstance(p.values[0], dict) and p.values[0].get("name") == "tasks"
]


@pytest.mark.parametrize("body", INVALID_UPDATES)
async def test_invalid_updates_change_nothing(world: World, body: dict[str, Any]) -> None:
    before = (await world.collection("tasks"))["collection"]
    update = {**spec(), **{k: v for k, v in body.items() if k != "name"}}
    answer = await put(world, "tasks", update, force="true")
    assert_problem(answer, 422, "VALIDATION_001")
    assert (await get(world, "tasks")).json() == before


async def test_duplicate_is_refused(world: World) -> None:
    await world.collection("tasks")
    answer = await world.harness.client.post(
        URL, json={"name": "tasks", **spec(schema={"type": "object"})}, headers=world.owner.headers
    )
    assert_problem(answer, 409, "VALIDATION_002")
    assert (await get(world, "tasks")).json()["schema"] == TASK_SCHEMA


async def test_same_name_in_another_tenant_is_separate(world: World) -> None:
    await world.collection("tasks")
    other = await world.harness.create_tenant("globex")
    headers = await world.harness.owner_headers(other)
    answer = await world.harness.client.post(URL, json={"name": "tasks"}, headers=headers)
    assert answer.status_code == 201
    mine = (await get(world, "tasks")).json()
    assert mine["schema"] == TASK_SCHEMA
    theirs = await world.harness.client.get(f"{URL}/tasks", headers=headers)
    assert theirs.json()["schema"] == {"type": "object"}


# Additive and breaking schema changes


BREAKING = [
    pytest.param(
        with_property("title", {"type": "integer"}), ["property title changed"], id="type-change"
    ),
    pytest.param(
        with_property("due", {"type": "string"}, required=True),
        ["property due became required"],
        id="new-required",
    ),
    pytest.param(
        {**TASK_SCHEMA, "required": ["title", "done"]},
        ["property done became required"],
        id="existing-becomes-required",
    ),
    pytest.param(
        {**TASK_SCHEMA, "additionalProperties": False},
        ["additionalProperties became false"],
        id="closed",
    ),
    pytest.param(
        with_property("title", {"type": "string", "maxLength": 10}),
        ["property title changed"],
        id="tighter-constraint",
    ),
    pytest.param(
        {**TASK_SCHEMA, "minProperties": 2},
        ["schema keyword minProperties changed"],
        id="new-keyword",
    ),
    pytest.param(
        {**TASK_SCHEMA, "x-owner-field": "notes"},
        ["x-owner-field changed"],
        id="owner-field",
    ),
]


@pytest.mark.parametrize(("schema", "breaking"), BREAKING)
async def test_breaking_change_needs_force(
    world: World, schema: dict[str, Any], breaking: list[str]
) -> None:
    before = (await world.collection("tasks"))["collection"]
    refused = await put(world, "tasks", spec(schema=schema))
    problem = assert_problem(refused, 409, "VALIDATION_003")
    assert problem["breaking"] == breaking
    for what in breaking:
        assert what in problem["detail"]
    assert (await get(world, "tasks")).json() == before

    forced = await put(world, "tasks", spec(schema=schema), force="true")
    assert forced.status_code == 200, forced.text
    body = forced.json()
    assert body["action"] == "updated"
    assert body["breaking"] == breaking
    assert body["collection"]["schema"] == schema
    assert body["collection"]["schema_version"] == 2
    after = (await get(world, "tasks")).json()
    assert after["schema"] == schema
    assert after["schema_version"] == 2

    # The forced change is recorded.
    async with world.harness.state.database.transaction() as session:
        changes = await SyncRepository(session).list_schema_changes(world.tenant.id, "tasks")
        recorded = [(c.from_version, c.to_version, c.breaking, c.new_schema) for c in changes]
    assert recorded == [(1, 2, breaking, schema)]


async def test_restricting_extra_properties_with_a_schema_is_breaking(world: World) -> None:
    """``additionalProperties: {type: string}`` rejects stored records with other extra fields
    just like ``false`` does."""
    await world.collection("tasks")
    phone = await world.device("tech@acme.example.com")
    await phone.push([upsert("tasks", "t1", {"title": "A", "estimate": 3})])
    schema = {**TASK_SCHEMA, "additionalProperties": {"type": "string"}}
    problem = assert_problem(await put(world, "tasks", spec(schema=schema)), 409, "VALIDATION_003")
    assert problem["breaking"] == ["additionalProperties changed"]
    assert (await get(world, "tasks")).json()["schema"] == TASK_SCHEMA


async def test_removing_a_property_of_a_closed_schema_is_breaking(world: World) -> None:
    closed = {**TASK_SCHEMA, "additionalProperties": False}
    await world.collection("tasks", schema=closed)
    smaller = copy.deepcopy(closed)
    del smaller["properties"]["notes"]
    problem = assert_problem(await put(world, "tasks", spec(schema=smaller)), 409, "VALIDATION_003")
    assert problem["breaking"] == ["property notes removed while additionalProperties is false"]
    typed = {**TASK_SCHEMA, "additionalProperties": {"type": "boolean"}}
    await put(world, "tasks", spec(schema=typed), force="true")
    smaller = copy.deepcopy(typed)
    del smaller["properties"]["notes"]
    problem = assert_problem(await put(world, "tasks", spec(schema=smaller)), 409, "VALIDATION_003")
    assert problem["breaking"] == [
        "property notes removed while additionalProperties is restricted"
    ]
    # Opening a closed schema again is additive.
    answer = await put(world, "tasks", spec(schema=TASK_SCHEMA))
    assert answer.status_code == 200, answer.text
    assert answer.json()["breaking"] == []


async def test_several_breaking_changes_are_all_listed(world: World) -> None:
    await world.collection("tasks")
    schema = with_property("title", {"type": "integer"})
    schema["properties"]["due"] = {"type": "string"}
    schema["required"] = ["title", "due"]
    schema["additionalProperties"] = False
    problem = assert_problem(await put(world, "tasks", spec(schema=schema)), 409, "VALIDATION_003")
    assert problem["breaking"] == [
        "property title changed",
        "property due became required",
        "additionalProperties became false",
    ]


async def test_changing_the_id_field_is_breaking(world: World) -> None:
    await world.collection("tasks")
    problem = assert_problem(
        await put(world, "tasks", spec(id_field="task_id")), 409, "VALIDATION_003"
    )
    assert problem["breaking"] == ["id_field changed from id to task_id"]
    forced = await put(world, "tasks", spec(id_field="task_id"), force="true")
    assert forced.json()["collection"]["id_field"] == "task_id"


async def test_additive_changes_in_a_row_bump_the_version(world: World) -> None:
    await world.collection("tasks")
    first = with_property("priority", {"type": "integer"})
    second = copy.deepcopy(first)
    second["properties"]["tags"] = {"type": "array", "items": {"type": "string"}}
    second["description"] = "Work to do"
    assert (await put(world, "tasks", spec(schema=first))).json()["collection"][
        "schema_version"
    ] == 2
    answer = await put(world, "tasks", spec(schema=second))
    assert answer.status_code == 200, answer.text
    assert answer.json()["breaking"] == []
    assert answer.json()["collection"]["schema_version"] == 3
    # Dropping a property while other properties stay allowed accepts every stored record.
    answer = await put(world, "tasks", spec(schema=TASK_SCHEMA))
    assert answer.status_code == 200, answer.text
    assert answer.json()["collection"]["schema_version"] == 4
    # Relaxing required is additive too.
    relaxed = {**TASK_SCHEMA, "required": []}
    answer = await put(world, "tasks", spec(schema=relaxed))
    assert answer.status_code == 200, answer.text
    assert answer.json()["breaking"] == []


async def test_new_property_is_usable_after_an_additive_change(world: World) -> None:
    await world.collection("tasks")
    phone = await world.device("tech@acme.example.com")
    accepted = await phone.push(
        [upsert("tasks", "t1", {"title": "A", "priority": "high"})]
    )  # any value goes while priority is undeclared
    assert accepted.json()["results"][0]["status"] == "applied"
    # t1 holds a priority the new property rejects: declaring it needs force.
    numbered = spec(schema=with_property("priority", {"type": "integer"}))
    problem = assert_problem(await put(world, "tasks", numbered), 409, "VALIDATION_003")
    assert problem["breaking"] == [
        "property priority added, but stored records hold values of it that it rejects "
        "(record 't1')"
    ]
    assert (await put(world, "tasks", numbered, force="true")).status_code == 200
    answer = await phone.push([upsert("tasks", "t2", {"title": "B", "priority": "high"})])
    body = answer.json()
    assert body["results"][0]["status"] == "rejected"
    assert body["errors"][0]["fields"] == ["priority"]
    ok = await phone.push([upsert("tasks", "t3", {"title": "C", "priority": 2})])
    assert ok.json()["results"][0]["status"] == "applied"


# Delete


async def test_delete_with_records_needs_force(world: World) -> None:
    client, headers = world.harness.client, world.owner.headers
    await world.collection("tasks")
    phone = await world.device("tech@acme.example.com")
    await phone.push([upsert("tasks", "t1", {"title": "A"}), upsert("tasks", "t2", {"title": "B"})])
    refused = await client.delete(f"{URL}/tasks", headers=headers)
    problem = assert_problem(refused, 409, "VALIDATION_003")
    assert "2 records" in problem["detail"]
    assert (await get(world, "tasks")).status_code == 200

    forced = await client.delete(f"{URL}/tasks", params={"force": "true"}, headers=headers)
    assert forced.status_code == 204
    assert_problem(await get(world, "tasks"), 404, "NOT_FOUND")
    answer = await phone.push([upsert("tasks", "t3", {"title": "C"})])
    assert answer.json()["errors"][0]["error"] == "NOT_FOUND"

    # Declared again, it starts empty: the old records are gone for good.
    await world.collection("tasks")
    async with world.harness.state.database.transaction() as session:
        assert await SyncRepository(session).count_records(world.tenant.id, "tasks") == 0
    await phone.push([upsert("tasks", "t9", {"title": "new"})])
    changes = await feed(phone, lambda cs: any(c["id"] == "t9" for c in cs))
    assert [(c["id"], c["version"]) for c in changes] == [("t9", 1)]


async def test_delete_of_an_empty_collection_needs_no_force(world: World) -> None:
    await world.collection("tasks")
    answer = await world.harness.client.delete(f"{URL}/tasks", headers=world.owner.headers)
    assert answer.status_code == 204


# Permissions


async def test_only_owners_and_admins_declare_collections(world: World) -> None:
    client = world.harness.client
    await world.collection("tasks")
    member = await world.device("tech@acme.example.com")
    manager = await world.device("boss@acme.example.com", role="manager")
    admin = await world.device("admin@acme.example.com", role="admin")
    for device in (member, manager):
        created = await client.post(URL, json={"name": "notes"}, headers=device.headers)
        assert_problem(created, 403, "AUTH_006")
        changed = await client.put(
            f"{URL}/tasks", json=spec(schema={"type": "object"}), headers=device.headers
        )
        assert_problem(changed, 403, "AUTH_006")
        deleted = await client.delete(f"{URL}/tasks", headers=device.headers)
        assert_problem(deleted, 403, "AUTH_006")
        # Reading is fine.
        assert (await client.get(URL, headers=device.headers)).status_code == 200
        assert (await client.get(f"{URL}/tasks", headers=device.headers)).status_code == 200
    names = [
        c["name"] for c in (await client.get(URL, headers=member.headers)).json()["collections"]
    ]
    assert names == ["tasks"]
    assert (await get(world, "tasks")).json()["schema"] == TASK_SCHEMA

    created = await client.post(URL, json={"name": "notes"}, headers=admin.headers)
    assert created.status_code == 201
    anonymous = await client.get(URL)
    assert anonymous.status_code == 401


# Owner field and rules


JOB_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {"title": {"type": "string"}, "assignee": {"type": "string"}},
    "required": ["title"],
    "x-owner-field": "assignee",
}


async def test_owner_field_decides_who_reads_a_record(world: World) -> None:
    created = await world.collection("jobs", schema=JOB_SCHEMA, read="owner", write="tenant")
    assert created["collection"]["owner_field"] == "assignee"
    alice = await world.device("alice@acme.example.com")
    bob = await world.device("bob@acme.example.com")
    answer = await world.owner.push(
        [
            upsert("jobs", "j1", {"title": "for alice", "assignee": alice.user_id}),
            upsert("jobs", "j2", {"title": "for bob", "assignee": bob.user_id}),
            upsert("jobs", "j3", {"title": "nobody named"}),
        ]
    )
    assert answer.json()["synced_items"] == 3, answer.text
    await alice.push([upsert("jobs", "j4", {"title": "alice's own"})])

    def ids(changes: list[dict[str, Any]]) -> list[str]:
        return sorted(c["id"] for c in changes)

    assert ids(await feed(alice, lambda cs: len(cs) >= 2)) == ["j1", "j4"]
    assert ids(await feed(bob)) == ["j2"]
    # The creator owns a record that names nobody, whatever their role.
    assert ids(await feed(world.owner)) == ["j3"]

    # Handing j2 over to alice moves it into her scope.
    await world.owner.push(
        [upsert("jobs", "j2", {"title": "now alice", "assignee": alice.user_id}, base_version=1)]
    )
    assert ids(await feed(alice, lambda cs: len(cs) >= 3)) == ["j1", "j2", "j4"]


async def test_role_write_rule(world: World) -> None:
    await world.collection("reports", read="tenant", write="role:manager")
    member = await world.device("tech@acme.example.com")
    manager = await world.device("boss@acme.example.com", role="manager")
    answer = await manager.push([upsert("reports", "r1", {"title": "weekly"})])
    assert answer.json()["results"][0]["status"] == "applied"

    answer = await member.push(
        [
            upsert("reports", "r2", {"title": "mine"}),
            upsert("reports", "r1", {"title": "edited"}, base_version=1),
            {"collection": "reports", "id": "r1", "op": "delete", "base_version": 1},
        ]
    )
    body = answer.json()
    assert [r["status"] for r in body["results"]] == ["rejected"] * 3
    assert [(e["item_id"], e["error"]) for e in body["errors"]] == [
        ("r2", "AUTH_006"),
        ("r1", "AUTH_006"),
        ("r1", "AUTH_006"),
    ]
    changes = await feed(member)
    assert [(c["id"], c["version"], c["data"]) for c in changes] == [("r1", 1, {"title": "weekly"})]
    # A higher role passes a role rule.
    admin = await world.device("admin@acme.example.com", role="admin")
    answer = await admin.push([upsert("reports", "r1", {"title": "by admin"}, base_version=1)])
    assert answer.json()["results"][0]["status"] == "applied"


async def test_owner_write_rule(world: World) -> None:
    await world.collection("notes", read="tenant", write="owner")
    alice = await world.device("alice@acme.example.com")
    bob = await world.device("bob@acme.example.com")
    manager = await world.device("boss@acme.example.com", role="manager")
    await alice.push([upsert("notes", "n1", {"title": "alice"})])
    for device in (bob, manager):
        answer = await device.push(
            [
                upsert("notes", "n1", {"title": "taken over"}, base_version=1),
                {"collection": "notes", "id": "n1", "op": "patch", "data": {"title": "x"}},
                {"collection": "notes", "id": "n1", "op": "delete", "base_version": 1},
            ]
        )
        body = answer.json()
        assert [e["error"] for e in body["errors"]] == ["AUTH_006"] * 3
    answer = await alice.push([upsert("notes", "n1", {"title": "still mine"}, base_version=1)])
    assert answer.json()["results"][0]["status"] == "applied"
    changes = await feed(bob, lambda cs: any(c["version"] == 2 for c in cs))
    assert [(c["id"], c["version"], c["data"]) for c in changes] == [
        ("n1", 2, {"title": "still mine"})
    ]


async def test_owner_rule_with_owner_field(world: World) -> None:
    await world.collection("jobs", schema=JOB_SCHEMA, read="tenant", write="owner")
    alice = await world.device("alice@acme.example.com")
    bob = await world.device("bob@acme.example.com")
    # Bob may not create a record owned by alice, nor hand his own record to her.
    answer = await bob.push([upsert("jobs", "j1", {"title": "x", "assignee": alice.user_id})])
    assert answer.json()["errors"][0]["error"] == "AUTH_006"
    await bob.push([upsert("jobs", "j2", {"title": "bob's", "assignee": bob.user_id})])
    answer = await bob.push(
        [upsert("jobs", "j2", {"title": "yours", "assignee": alice.user_id}, base_version=1)]
    )
    assert answer.json()["errors"][0]["error"] == "AUTH_006"
    # Alice may not edit bob's record.
    answer = await alice.push([upsert("jobs", "j2", {"title": "mine now"}, base_version=1)])
    assert answer.json()["errors"][0]["error"] == "AUTH_006"
    changes = await feed(alice)
    assert [(c["id"], c["data"]) for c in changes] == [
        ("j2", {"title": "bob's", "assignee": bob.user_id})
    ]


# Schema validation on push


async def test_push_validation_lists_every_failing_field(world: World) -> None:
    schema = with_property("count", {"type": "integer", "minimum": 0})
    await world.collection("tasks", schema=schema)
    phone = await world.device("tech@acme.example.com")
    bad = {"done": "yes", "notes": 5, "count": -1}
    answer = await phone.push(
        [upsert("tasks", "t1", bad), upsert("tasks", "t2", {"title": "fine"})]
    )
    body = answer.json()
    assert [r["status"] for r in body["results"]] == ["rejected", "applied"]
    [error] = body["errors"]
    assert error["item_id"] == "t1"
    assert error["error"] == "VALIDATION_001"
    assert error["fields"] == ["count", "done", "notes", "title"]
    for name in error["fields"]:
        assert name in error["message"]

    answer = await phone.push([upsert("tasks", "t3", {"title": "x" * 201})])
    assert answer.json()["errors"][0]["fields"] == ["title"]
    answer = await phone.push(
        [
            {
                "collection": "tasks",
                "id": "t2",
                "op": "patch",
                "data": {"done": "no"},
                "base_version": 1,
            }
        ]
    )
    assert answer.json()["errors"][0]["fields"] == ["done"]


async def test_adding_a_property_that_stored_records_hold_with_other_values_is_breaking(
    world: World,
) -> None:
    """Removing a property is additive (stored values stay, as extra fields); adding it back
    with another type would reject them, so that is breaking, and adding it back as it was is
    not."""
    estimate = {"type": "string"}
    await world.collection("tasks", schema=with_property("estimate", estimate))
    phone = await world.device("tech@acme.example.com")
    pushed = await phone.push(
        [
            upsert("tasks", "t1", {"title": "A", "estimate": "3h"}),
            upsert("tasks", "t2", {"title": "B"}),
            upsert("tasks", "t3", {"title": "C", "site": {"dock": "7"}}),
        ]
    )
    assert [r["status"] for r in pushed.json()["results"]] == ["applied"] * 3
    removed = await put(world, "tasks", spec(schema=TASK_SCHEMA))
    assert removed.status_code == 200, removed.text
    assert removed.json()["breaking"] == []

    as_number = with_property("estimate", {"type": "integer"})
    as_number["properties"]["site"] = {"type": "object", "required": ["dock", "bay"]}
    as_number["properties"]["due"] = {"type": "string", "format": "date"}  # no record has it
    problem = assert_problem(
        await put(world, "tasks", spec(schema=as_number)), 409, "VALIDATION_003"
    )
    assert problem["breaking"] == [
        "property estimate added, but stored records hold values of it that it rejects "
        "(record 't1')",
        "property site added, but stored records hold values of it that it rejects (record 't3')",
    ]
    assert (await get(world, "tasks")).json()["schema"] == TASK_SCHEMA
    # Back as it was: the stored values match; a new field no record holds is additive too.
    again = with_property("estimate", estimate)
    again["properties"]["due"] = {"type": "string", "format": "date"}
    answer = await put(world, "tasks", spec(schema=again))
    assert answer.status_code == 200, answer.text
    assert answer.json()["breaking"] == []
    # A deleted record's old value does not count.
    deleted = await phone.push(
        [{"collection": "tasks", "id": "t3", "op": "delete", "base_version": 1}]
    )
    assert deleted.json()["results"][0]["status"] == "applied"
    site = {**again, "properties": {**again["properties"], "site": {"type": "string"}}}
    answer = await put(world, "tasks", spec(schema=site))
    assert answer.status_code == 200, answer.text
