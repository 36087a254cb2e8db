"""The Python SDK against the real server (in process), on both databases."""

from __future__ import annotations

from typing import Any

import httpx
from homeport_client import HomeportClient

from tests.sync.conftest import World


def _client(world: World, device_id: str) -> HomeportClient:
    transport = httpx.ASGITransport(app=world.harness.app, client=("127.0.0.1", 50000))
    return HomeportClient("http://homeport.test", ":memory:", device_id, transport=transport)


async def test_two_devices_share_records_through_the_server(world: World) -> None:
    await world.collection("tasks")
    await world.harness.add_member(world.tenant, "tech@acme.example.com", "member")
    async with _client(world, "phone") as phone, _client(world, "tablet") as tablet:
        await phone.login("tech@acme.example.com", "member-password-1")
        await tablet.login(world.tenant.owner_email, world.tenant.owner_password)
        phone.put("tasks", "t1", {"title": "Fix pump"})
        phone.put("tasks", "t2", {"title": "Oil change"})
        phone.delete("tasks", "t2")
        report = await phone.sync()
        assert phone.pending() == 0
        assert report.push.applied == 2
        await tablet.sync()
        assert tablet.get("tasks", "t1") == {"title": "Fix pump"}
        assert tablet.get("tasks", "t2") is None
        tablet.patch("tasks", "t1", {"done": True})
        await tablet.sync()
        await phone.sync()
        assert phone.get("tasks", "t1") == {"title": "Fix pump", "done": True}
        assert phone.version("tasks", "t1") == 2


async def test_a_rejected_change_leaves_the_queue_and_reaches_the_error_callback(
    world: World,
) -> None:
    await world.collection("tasks")
    errors: list[dict[str, Any]] = []
    async with _client(world, "phone") as phone:
        await phone.login(world.tenant.owner_email, world.tenant.owner_password)
        phone.on_error(errors.append)
        phone.put("nope", "x1", {"title": "unknown collection"})
        phone.put("tasks", "t1", {"done": "not a boolean"})
        phone.put("tasks", "t2", {"title": "fine"})
        await phone.push()
        assert phone.pending() == 0
        assert sorted((e["item_id"], e["error"]) for e in errors) == [
            ("t1", "VALIDATION_001"),
            ("x1", "NOT_FOUND"),
        ]
        await phone.push()  # nothing left: the errors are not reported again
        assert len(errors) == 2


async def test_conflicts_reach_the_conflict_callback(world: World) -> None:
    await world.collection("tasks", conflict_policy="server_wins")
    conflicts: list[dict[str, Any]] = []
    async with _client(world, "a") as first, _client(world, "b") as second:
        for client in (first, second):
            await client.login(world.tenant.owner_email, world.tenant.owner_password)
        second.on_conflict(conflicts.append)
        first.put("tasks", "t1", {"title": "first"})
        await first.sync()
        await second.sync()
        first.patch("tasks", "t1", {"title": "first again"})
        second.patch("tasks", "t1", {"title": "second"})
        await first.sync()
        await second.sync()
        assert [(c["id"], c["resolution"], c["winner"]) for c in conflicts] == [
            ("t1", "server_wins", "server")
        ]
        assert second.get("tasks", "t1") == {"title": "first again"}
