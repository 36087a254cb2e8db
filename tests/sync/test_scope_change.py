"""A record handed to another owner leaves the previous owner's devices as a deletion."""

from __future__ import annotations

from tests.sync.conftest import World, upsert

ASSIGNED = {
    "type": "object",
    "x-owner-field": "assignee",
    "properties": {"title": {"type": "string"}, "assignee": {"type": "string"}},
}


async def test_reassigned_record_is_deleted_on_the_old_owners_device(world: World) -> None:
    await world.collection("jobs", schema=ASSIGNED, read="owner", write="role:manager")
    alice = await world.device("alice@acme.example.com")
    bob = await world.device("bob@acme.example.com")
    boss = await world.device("boss@acme.example.com", role="manager")
    created = await boss.push([upsert("jobs", "j1", {"title": "Fix", "assignee": alice.user_id})])
    assert created.json()["results"][0]["status"] == "applied"
    seen, alice_cursor = await alice.pull_all()
    assert [(c["id"], c["op"]) for c in seen] == [("j1", "upsert")]
    assert (await bob.pull_all())[0] == []

    moved = await boss.push(
        [upsert("jobs", "j1", {"title": "Fix", "assignee": bob.user_id}, base_version=1)]
    )
    assert moved.json()["results"][0]["status"] == "applied"
    gone, _ = await alice.pull_all(alice_cursor)
    assert [(c["id"], c["op"], c["deleted"], c["data"]) for c in gone] == [
        ("j1", "delete", True, None)
    ]
    arrived, _ = await bob.pull_all()
    assert [(c["id"], c["op"], c["data"]["assignee"]) for c in arrived] == [
        ("j1", "upsert", bob.user_id)
    ]
    # A fresh device of Alice's gets the deletion too (harmless), never the data.
    tokens = await world.harness.login("alice@acme.example.com", "member-password-1", "new")
    fresh = await world.harness.client.get(
        "/api/v1/sync/pull", headers={"Authorization": f"Bearer {tokens['access_token']}"}
    )
    assert [(c["id"], c["data"]) for c in fresh.json()["changes"]] == [("j1", None)]
