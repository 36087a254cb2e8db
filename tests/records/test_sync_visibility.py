"""A records API write is a change in the sync feed: pulls and WebSocket subscribers see it."""

from __future__ import annotations

import asyncio
from typing import Any

from tests.realtime.conftest import Live, collect, send
from tests.realtime.conftest import live as live  # fixtures shared with the realtime tests
from tests.realtime.conftest import live_server as live_server
from tests.realtime.conftest import live_settings as live_settings
from tests.records.conftest import ORDERS, Rest


async def test_rest_writes_show_up_in_a_sync_pull(rest: Rest) -> None:
    _changes, cursor = await rest.owner.pull_all()
    phone = await rest.world.device("phone@acme.example.com", "member")
    await rest.create({"id": "o1", "title": "Pump"})
    patched = await rest.client.patch(
        f"{ORDERS}/o1", json={"status": "open"}, headers=rest.owner.headers
    )
    assert patched.status_code == 200
    await rest.create({"id": "o2", "title": "Valve"})
    assert (await rest.client.delete(f"{ORDERS}/o2", headers=rest.owner.headers)).status_code == 204
    # On PostgreSQL the feed holds a change back while any older transaction of the cluster
    # is open (a parallel test run's): wait for it rather than assert on the first pull.
    changes: list[dict[str, Any]] = []
    for _attempt in range(100):
        changes, _ = await phone.pull_all(cursor)
        if len(changes) == 2:
            break
        await asyncio.sleep(0.05)
    assert [(c["id"], c["op"], c["version"], c["data"]) for c in changes] == [
        ("o1", "upsert", 2, {"id": "o1", "title": "Pump", "status": "open"}),
        ("o2", "delete", 2, None),
    ]
    # And a device's push is what the records API then serves.
    pushed = await phone.push(
        [
            {
                "collection": "orders",
                "id": "o1",
                "op": "patch",
                "data": {"priority": 4},
                "base_version": 2,
            }
        ]
    )
    assert pushed.json()["results"][0]["status"] == "applied"
    record = await rest.client.get(f"{ORDERS}/o1", headers=rest.owner.headers)
    assert record.json()["version"] == 3
    assert record.json()["data"]["priority"] == 4
    assert record.headers["etag"] == '"3"'


async def test_rest_writes_reach_a_websocket_subscriber(live: Live) -> None:
    await live.collection("tasks")
    subscriber = await live.login(live.owner_email, "tablet")
    writer = await live.login(live.owner_email, "erp")
    headers = {"Authorization": f"Bearer {writer.token}"}
    path = "/api/v1/collections/tasks/records"
    async with live.connect(subscriber) as ws:
        await send(ws, "subscribe", {"cursor": None})
        created = await live.http.post(
            path, json={"id": "t1", "title": "from REST"}, headers=headers
        )
        assert created.status_code == 201, created.text
        updates, _cursor = await collect(ws, 1)
        assert updates[0]["entity_id"] == "t1"
        assert updates[0]["operation"] in ("upsert", "create", "update")
        assert updates[0]["data"]["title"] == "from REST"
        patched = await live.http.patch(f"{path}/t1", json={"title": "patched"}, headers=headers)
        assert patched.status_code == 200
        updates, _cursor = await collect(ws, 1)
        assert updates[0]["data"]["title"] == "patched"
        deleted = await live.http.delete(f"{path}/t1", headers=headers)
        assert deleted.status_code == 204
        updates, _cursor = await collect(ws, 1)
        assert updates[0]["entity_id"] == "t1"
        assert updates[0]["operation"] == "delete"
