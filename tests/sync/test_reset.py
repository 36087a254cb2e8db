"""Tombstone horizon (410 SYNC_006 and force-sync), protocol version, and pull scope."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import update

from homeport.kit.clock import utcnow
from homeport.models.sync import SyncRecord
from homeport.sync.repository import SyncRepository
from tests.sync.conftest import World, upsert


async def _age_tombstones(world: World, days: int) -> int:
    database = world.harness.state.database
    async with database.transaction() as session:
        await session.execute(
            update(SyncRecord)
            .where(SyncRecord.deleted.is_(True))
            .values(updated_at=utcnow() - timedelta(days=days))
        )
    async with database.transaction() as session:
        return await SyncRepository(session).compact_tombstones(utcnow() - timedelta(days=30))


async def test_cursor_older_than_the_tombstone_horizon_gets_reset(world: World) -> None:
    await world.collection("tasks")
    phone = await world.device("tech@acme.example.com")
    stale = await world.device("old@acme.example.com")
    await phone.push([upsert("tasks", "t1", {"title": "A"}), upsert("tasks", "t2", {"title": "B"})])
    _, stale_cursor = await stale.pull_all()
    deleted = await phone.push(
        [{"collection": "tasks", "id": "t1", "op": "delete", "base_version": 1}]
    )
    assert deleted.json()["results"][0]["status"] == "applied"
    _, fresh_cursor = await phone.pull_all()

    assert await _age_tombstones(world, days=31) == 1

    refused = await stale.pull(stale_cursor)
    assert refused.status_code == 410
    assert refused.json()["code"] == "SYNC_006"
    # A cursor taken after the deletion still works; so does a first download.
    assert (await phone.pull(fresh_cursor)).status_code == 200
    reset = await world.harness.client.post("/api/v1/sync/force-sync", headers=stale.headers)
    assert reset.status_code == 200
    changes, _ = await stale.pull_all(reset.json()["cursor"])
    assert [(c["id"], c["deleted"]) for c in changes] == [("t2", False)]


async def test_recent_tombstones_are_kept_and_pulled(world: World) -> None:
    await world.collection("tasks")
    phone = await world.device("tech@acme.example.com")
    other = await world.device("other@acme.example.com")
    await phone.push([upsert("tasks", "t1", {"title": "A"})])
    _, cursor = await other.pull_all()
    await phone.push([{"collection": "tasks", "id": "t1", "op": "delete", "base_version": 1}])
    assert await _age_tombstones(world, days=5) == 0
    changes, _ = await other.pull_all(cursor)
    assert [(c["id"], c["op"], c["deleted"], c["data"]) for c in changes] == [
        ("t1", "delete", True, None)
    ]


async def test_old_protocol_version_is_refused(world: World) -> None:
    await world.collection("tasks")
    phone = await world.device("tech@acme.example.com")
    headers = {**phone.headers, "X-Homeport-Protocol": "0"}
    pulled = await world.harness.client.get("/api/v1/sync/pull", headers=headers)
    assert pulled.status_code == 426
    assert pulled.json()["code"] == "SYNC_005"
    pushed = await world.harness.client.post(
        "/api/v1/sync/push",
        json={"idempotency_key": "k", "changes": [upsert("tasks", "t1", {"title": "A"})]},
        headers=headers,
    )
    assert pushed.json()["code"] == "SYNC_005"
    assert (await phone.pull_all())[0] == []  # nothing was applied
    current = {**phone.headers, "X-Homeport-Protocol": "1"}
    assert (await world.harness.client.get("/api/v1/sync/pull", headers=current)).status_code == 200


async def test_pull_only_returns_the_callers_scope(world: World) -> None:
    await world.collection("notes", read="owner", write="owner")
    await world.collection("tasks", read="role:manager", write="tenant")
    alice = await world.device("alice@acme.example.com")
    bob = await world.device("bob@acme.example.com")
    boss = await world.device("boss@acme.example.com", role="manager")
    await alice.push(
        [upsert("notes", "a1", {"title": "mine"}), upsert("tasks", "x", {"title": "t"})]
    )
    await bob.push([upsert("notes", "b1", {"title": "bob's"})])

    def keys(changes: list[dict[str, str]]) -> set[tuple[str, str]]:
        return {(c["collection"], c["id"]) for c in changes}

    assert keys((await alice.pull_all())[0]) == {("notes", "a1")}
    assert keys((await bob.pull_all())[0]) == {("notes", "b1")}
    assert keys((await boss.pull_all())[0]) == {("tasks", "x")}
    # Bob may not overwrite Alice's private note, even knowing its id and version.
    taken = await bob.push([upsert("notes", "a1", {"title": "hijack"}, base_version=1)])
    assert taken.json()["results"][0]["status"] == "rejected"
    assert taken.json()["errors"][0]["error"] == "AUTH_006"
    assert (await alice.pull_all())[0][0]["data"] == {"title": "mine"}
    limited = await alice.pull(collections="notes,nope")
    assert limited.status_code == 404
