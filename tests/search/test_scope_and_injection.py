"""Tenants and read rules bound hits, facets and suggestions; no search text gives a 5xx."""

from __future__ import annotations

import random

from tests.search.conftest import Device, World, hit_ids, note, push_ok, search, searchable


async def test_another_tenant_never_shows(world: World) -> None:
    await searchable(world)
    await push_ok(world.owner, [note("mine", "pump", status="ours")])
    harness = world.harness
    other = await harness.create_tenant("globex")
    headers = await harness.owner_headers(other)
    me = (await harness.client.get("/api/v1/auth/me", headers=headers)).json()
    stranger = Device(harness, "owner-device", headers, me["user_id"])
    await searchable(
        World(harness, other, stranger),
    )
    await push_ok(stranger, [note("theirs", "pump pumpkin", status="theirs")])

    body = (await search(world.owner, "pump")).json()
    assert [hit["id"] for hit in body["hits"]] == ["mine"]
    assert body["collections"]["notes"]["facets"]["status"] == [{"value": "ours", "count": 1}]
    assert "pumpkin" not in {s["term"] for s in body["suggestions"]}
    theirs = (await search(stranger, "pump")).json()
    assert [hit["id"] for hit in theirs["hits"]] == ["theirs"]
    assert "pumpkin" in {s["term"] for s in theirs["suggestions"]}


async def test_owner_rule_limits_hits_facets_and_suggestions(world: World) -> None:
    await searchable(world, read="owner", write="owner")
    alice = await world.device("alice@acme.example.com")
    bob = await world.device("bob@acme.example.com")
    await push_ok(alice, [note("a1", "pump pumpkin", status="alice")])
    await push_ok(bob, [note("b1", "pump", status="bob")])

    body = (await search(bob, "pum")).json()
    assert [hit["id"] for hit in body["hits"]] == ["b1"]
    assert body["collections"]["notes"]["total"] == 1
    assert body["collections"]["notes"]["facets"]["status"] == [{"value": "bob", "count": 1}]
    assert [s["term"] for s in body["suggestions"]] == ["pump"]
    assert await hit_ids(alice, "pump") == ["a1"]
    assert await hit_ids(bob, "pumpkin") == []


async def test_role_rule_hides_the_collection_from_lower_roles(world: World) -> None:
    await searchable(world, "notes", read="role:manager", write="tenant")
    await searchable(world, "tasks", read="tenant")
    member = await world.device("member@acme.example.com")
    manager = await world.device("boss@acme.example.com", role="manager")
    await push_ok(member, [note("n1", "pump"), {**note("t1", "pump"), "collection": "tasks"}])

    body = (await search(member, "pump")).json()
    assert [(hit["collection"], hit["id"]) for hit in body["hits"]] == [("tasks", "t1")]
    assert set(body["collections"]) == {"tasks"}
    named = (await search(member, "pump", collections="notes")).json()
    assert named["hits"] == []
    assert named["collections"] == {}
    assert {hit["id"] for hit in (await search(manager, "pump")).json()["hits"]} == {"n1", "t1"}


NASTY = [
    '"',
    '""',
    '"pump',
    "pump\"'",
    "'",
    "pump*",
    "*",
    "**pump",
    "pump:*",
    ":",
    "title:pump",
    "body : pump",
    "NEAR(pump valve)",
    "NEAR(pump valve, 2)",
    "pump NEAR valve",
    "pump AND",
    "OR",
    "NOT pump",
    "pump & | !valve",
    "((pump",
    "pump)))",
    "(",
    "^pump",
    "{title body}: pump",
    "pump -valve",
    "+pump",
    "\\",
    "pump\\",
    "pump\x00valve",
    "%",
    "_",
    "pump'; DROP TABLE sync_records; --",
    "é",
    "ß straße",
    "日本語",
    "🔧 pump",
    "pump " * 200,
    "x" * 500,
    "x" * 501,
    "y" * 20_000,
]


async def test_hostile_search_text_never_breaks_the_query(world: World) -> None:
    await searchable(world)
    await push_ok(world.owner, [note("n1", "pump valve", tags=["straße", "日本語"])])
    rng = random.Random(6)
    alphabet = "\"'*:()^{}+-&|!\\%_ NEARORNOTpumpé日\t\n"
    generated = [
        "".join(rng.choice(alphabet) for _ in range(rng.randint(1, 30))) for _ in range(60)
    ]
    for text in NASTY + generated:
        for params in ({}, {"collections": "notes"}):
            answer = await search(world.owner, text, **params)
            assert answer.status_code in (200, 400), (text, answer.text)
            if answer.status_code == 400:
                assert answer.json()["code"] == "VALIDATION_004", text
                assert answer.json()["parameter"] == "q", text
    assert await hit_ids(world.owner, "pump'; DROP TABLE sync_records; --") == ["n1"]
    assert await hit_ids(world.owner, "NEAR(pump valve)") == ["n1"]
    assert (await search(world.owner, "x" * 501)).status_code == 400


async def test_api_keys_need_collections_read_and_then_read_everything(world: World) -> None:
    await searchable(world, read="owner", write="owner")
    alice = await world.device("alice@acme.example.com")
    await push_ok(alice, [note("a1", "pump")])
    client = world.harness.client

    async def key(scopes: list[str]) -> dict[str, str]:
        created = await client.post(
            "/api/v1/api-keys",
            json={"name": "erp", "scopes": scopes},
            headers=world.owner.headers,
        )
        assert created.status_code == 201, created.text
        return {"X-API-Key": created.json()["key"]}

    reader = await key(["collections:read"])
    found = await client.get("/api/v1/search", params={"q": "pump"}, headers=reader)
    assert found.status_code == 200, found.text
    assert [hit["id"] for hit in found.json()["hits"]] == ["a1"]
    refused = await client.get(
        "/api/v1/search", params={"q": "pump"}, headers=await key(["tenant:read"])
    )
    assert refused.status_code == 403
    assert refused.json()["code"] == "AUTH_006"
