"""Push and pull end to end on the real databases."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tests.conftest import Harness, Tenant, make_settings, running_harness
from tests.sync.conftest import VOICE_SCHEMA, Device, World, upsert


async def _owner(harness: Harness, tenant: Tenant) -> Device:
    tokens = await harness.login(tenant.owner_email, tenant.owner_password, "owner-phone")
    headers = {"Authorization": f"Bearer {tokens['access_token']}"}
    me = (await harness.client.get("/api/v1/auth/me", headers=headers)).json()
    return Device(harness, "owner-phone", headers, me["user_id"])


async def test_push_then_pull_round_trip(world: World) -> None:
    await world.collection("tasks")
    phone = await world.device("tech@acme.example.com")
    answer = await phone.push(
        [upsert("tasks", "t1", {"title": "Fix pump"}), upsert("tasks", "t2", {"title": "Oil"})]
    )
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert body["synced_items"] == 2
    assert body["failed_items"] == 0
    assert [r["status"] for r in body["results"]] == ["applied", "applied"]
    assert [r["version"] for r in body["results"]] == [1, 1]

    tablet = await world.device("boss@acme.example.com", role="manager")
    changes, cursor = await tablet.pull_all()
    assert [(c["id"], c["version"], c["op"]) for c in changes] == [
        ("t1", 1, "upsert"),
        ("t2", 1, "upsert"),
    ]
    assert changes[0]["data"] == {"title": "Fix pump"}  # stored as sent; the id travels apart
    again, _ = await tablet.pull_all(cursor)
    assert again == []


async def test_replay_returns_the_same_answer_and_changes_nothing(world: World) -> None:
    await world.collection("tasks")
    phone = await world.device("tech@acme.example.com")
    changes = [upsert("tasks", "t1", {"title": "A"})]
    first = await phone.push(changes, key="k-1")
    second = await phone.push(changes, key="k-1")
    assert second.status_code == 200
    assert second.json() == first.json()
    assert second.headers.get("idempotent-replay") == "true"
    pulled, _ = await phone.pull_all()
    assert [(c["id"], c["version"]) for c in pulled] == [("t1", 1)]
    other = await phone.push([upsert("tasks", "t1", {"title": "B"})], key="k-1")
    assert other.status_code == 409
    assert other.json()["code"] == "SYNC_003"


async def test_atomic_applies_nothing_when_one_item_fails(world: World) -> None:
    await world.collection("tasks")
    phone = await world.device("tech@acme.example.com")
    bad: dict[str, Any] = {"collection": "tasks", "id": "t2", "op": "upsert", "data": {"done": 1}}
    atomic = await phone.push([upsert("tasks", "t1", {"title": "A"}), bad], mode="atomic")
    assert atomic.status_code == 200
    body = atomic.json()
    assert [r["status"] for r in body["results"]] == ["rejected", "rejected"]
    assert body["synced_items"] == 0
    assert {(e["item_id"], e["error"]) for e in body["errors"]} == {
        ("t2", "VALIDATION_001"),
        ("t1", "ATOMIC_ABORTED"),
    }
    pulled, _ = await phone.pull_all()
    assert pulled == []

    best = await phone.push([upsert("tasks", "t1", {"title": "A"}), bad], mode="best_effort")
    body = best.json()
    assert [r["status"] for r in body["results"]] == ["applied", "rejected"]
    failing = body["errors"][0]
    assert failing["item_id"] == "t2"
    assert set(failing["fields"]) == {"done", "title"}
    pulled, _ = await phone.pull_all()
    assert [c["id"] for c in pulled] == ["t1"]


async def test_forged_cursor_is_refused(world: World) -> None:
    await world.collection("tasks")
    phone = await world.device("tech@acme.example.com")
    await phone.push([upsert("tasks", "t1", {"title": "A"})])
    _, cursor = await phone.pull_all()
    encoded, _, signature = cursor.partition(".")
    forged = await phone.pull(encoded + "." + signature[::-1])
    assert forged.status_code == 400
    assert forged.json()["code"] == "SYNC_001"
    garbage = await phone.pull("not-a-cursor")
    assert garbage.json()["code"] == "SYNC_001"


async def test_oversize_batch_is_refused(world: World) -> None:
    await world.collection("tasks")
    phone = await world.device("tech@acme.example.com")
    changes = [upsert("tasks", f"t{i}", {"title": "x"}) for i in range(1001)]
    answer = await phone.push(changes)
    assert answer.status_code == 400
    assert answer.json()["code"] == "SYNC_001"
    pulled, _ = await phone.pull_all()
    assert pulled == []


async def test_seed_wire_format_round_trips(world: World) -> None:
    await world.collection("voice_data", schema=VOICE_SCHEMA, id_field="verification_id")
    await world.collection(
        "behavioral_data",
        id_field="session_id",
        schema={"type": "object", "properties": {"session_id": {"type": "string"}}},
    )
    phone = await world.device("tech@acme.example.com")
    body = {
        "idempotency_key": "seed-1",
        "voice_data": [{"verification_id": "v1", "score": 0.9}],
        "behavioral_data": [{"session_id": "s1", "taps": 12}],
    }
    answer = await world.harness.client.post("/api/v1/sync/push", json=body, headers=phone.headers)
    assert answer.status_code == 200, answer.text
    assert answer.json()["synced_items"] == 2
    pulled, _ = await phone.pull_all()
    assert {(c["collection"], c["id"]): c["data"] for c in pulled} == {
        ("voice_data", "v1"): {"verification_id": "v1", "score": 0.9},
        ("behavioral_data", "s1"): {"session_id": "s1", "taps": 12},
    }


async def test_push_body_over_the_byte_limit_is_refused(tmp_path: Path, database_url: str) -> None:
    settings = make_settings(database_url, tmp_path / "data", sync_max_batch_bytes=2000)
    async with running_harness(settings) as harness:
        tenant = await harness.create_tenant("acme")
        world = World(harness, tenant, await _owner(harness, tenant))
        await world.collection("tasks")
        phone = await world.device("tech@acme.example.com")
        changes = [upsert("tasks", f"t{i}", {"title": "x" * 100}) for i in range(30)]
        answer = await phone.push(changes)
        assert answer.status_code == 413
        assert answer.json()["code"] == "SYNC_001"
        assert (await phone.pull_all())[0] == []
        # Other requests keep the general limit.
        small = await phone.push(changes[:2])
        assert small.status_code == 200


async def test_absurdly_nested_data_is_refused_cleanly(world: World) -> None:
    await world.collection("tasks", schema={"type": "object"})
    phone = await world.device("tech@acme.example.com")
    deep = "[" * 3000 + "]" * 3000
    raw = (
        '{"idempotency_key": "deep", "changes": [{"collection": "tasks", "id": "t1", '
        '"op": "upsert", "data": {"title": "x", "deep": ' + deep + "}}]}"
    )
    answer = await world.harness.client.post(
        "/api/v1/sync/push",
        content=raw,
        headers={**phone.headers, "Content-Type": "application/json"},
    )
    assert answer.status_code == 400
    assert answer.json()["code"] == "SYNC_001"
    nested: object = "leaf"
    for _ in range(900):
        nested = {"n": nested}
    answer = await phone.push(
        [{"collection": "tasks", "id": "t2", "op": "upsert", "data": {"n": nested}}]
    )
    assert answer.status_code == 200
    [error] = answer.json()["errors"]
    assert (error["item_id"], error["error"]) == ("t2", "SYNC_001")
    assert "nested" in error["message"]


async def test_an_id_taken_from_the_data_is_held_to_the_id_limits(world: World) -> None:
    """A change without ``id`` takes it from the data: that id is checked as ``id`` is (one of
    201 characters was stored on SQLite and was a 500 on PostgreSQL, as was a NUL in an id)."""
    await world.collection("tasks", schema={"type": "object"})
    phone = await world.device("tech@acme.example.com")
    answer = await phone.push(
        [
            {"collection": "tasks", "op": "upsert", "data": {"id": "x" * 201}},
            {"collection": "tasks", "op": "upsert", "data": {"id": ""}},
            {"collection": "tasks", "op": "upsert", "data": {"id": "y" * 200}},
            {"collection": "tasks", "id": "a\x00b", "op": "upsert", "data": {}},
        ],
        mode="best_effort",
    )
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert body["synced_items"] == 1
    assert [(error["error"], error["message"]) for error in body["errors"]] == [
        ("SYNC_001", "A record id is at most 200 characters, none of them NUL"),
        ("SYNC_002", "Missing record id (give `id` as a non-empty string)"),
        ("SYNC_001", "A record id is at most 200 characters, none of them NUL"),
    ]
    records, _cursor = await phone.pull_all()
    assert [record["id"] for record in records] == ["y" * 200]
