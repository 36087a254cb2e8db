"""Fan-out: resume without gap or duplicate, scope of what a connection gets, conflicts."""

from __future__ import annotations

import asyncio
import json
from typing import Any

from tests.realtime.conftest import (
    TASKS,
    Device,
    Live,
    collect,
    pull_all,
    quiet,
    receive,
    seed_tenant,
    send,
    upsert,
)


def pushes(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [m for m in messages if m["type"] == "server_push"]


async def until_types(ws: Any, kinds: set[str], timeout: float = 5.0) -> dict[str, Any]:
    """The first message of each of ``kinds``, in whatever order they come."""
    got: dict[str, Any] = {}

    async def wait() -> None:
        while not kinds <= got.keys():
            message = json.loads(await ws.recv())
            got.setdefault(message["type"], message)

    await asyncio.wait_for(wait(), timeout)
    return got


async def test_reconnect_mid_stream_gets_every_change_once_in_feed_order(live: Live) -> None:
    await live.collection("tasks")
    writer = await live.login(live.owner_email, "writer")
    reader = await live.login(live.owner_email, "reader")
    ids = [f"r{i:02d}" for i in range(60)]

    async def write() -> None:
        for record_id in ids:
            await live.push(writer, [upsert(record_id, record_id)])

    writing = asyncio.create_task(write())
    received: list[dict[str, Any]] = []
    cursor: str | None = None
    try:
        async with live.connect(reader) as ws:
            await send(ws, "subscribe", {"cursor": None})
            while len(received) < 10:
                message = await receive(ws, "server_push")
                received.extend(message["payload"]["updates"])
                cursor = message["payload"]["cursor"]
        assert not writing.done(), "the writer finished before the disconnect: test too weak"
        async with live.connect(reader) as ws:
            await send(ws, "subscribe", {"cursor": cursor})
            await asyncio.wait_for(writing, 10)
            rest, _ = await collect(ws, len(ids) - len(received), timeout=5)
            received.extend(rest)
            assert pushes(await quiet(ws, 0.5)) == []  # nothing more (no duplicate)
    finally:
        writing.cancel()
    feed = await pull_all(live, reader)
    assert [(u["entity_id"], u["version"]) for u in received] == [
        (c["id"], c["version"]) for c in feed
    ]
    assert sorted(u["entity_id"] for u in received) == ids


async def _collection_as(live: Live, owner: Device, name: str, **spec: Any) -> None:
    body = {"name": name, "schema": TASKS, "read": "tenant", "write": "tenant", **spec}
    answer = await live.http.post(
        "/api/v1/collections", json=body, headers={"Authorization": f"Bearer {owner.token}"}
    )
    assert answer.status_code == 201, answer.text


async def test_other_tenants_changes_are_never_sent(live: Live) -> None:
    await live.collection("tasks")
    await seed_tenant(live.settings, "beta", "owner@beta.example.com")
    beta = await live.login("owner@beta.example.com", "beta-phone")
    await _collection_as(live, beta, "tasks")
    acme = await live.login(live.owner_email, "acme-phone")
    await live.push(acme, [upsert("acme-old", "history")])
    async with live.connect(beta) as ws:
        await send(ws, "subscribe", {"cursor": None})
        await live.push(acme, [upsert("acme-1", "secret of acme")])
        await asyncio.sleep(0.3)
        await live.push(beta, [upsert("beta-1", "mine")])
        updates, _ = await collect(ws, 1)
        assert [u["entity_id"] for u in updates] == ["beta-1"]
        await live.push(acme, [upsert("acme-2", "secret of acme")])
        assert pushes(await quiet(ws, 0.5)) == []


async def test_rules_decide_what_a_member_gets(live: Live) -> None:
    await live.collection("tasks")  # read: tenant (the marker)
    await live.collection("notes", read="owner", write="owner")
    await live.collection("secrets", read="role:manager", write="role:manager")
    await live.member("member@acme.example.com")
    await live.member("manager@acme.example.com", role="manager")
    owner = await live.login(live.owner_email, "owner-phone")
    member = await live.login("member@acme.example.com", "member-phone")
    manager = await live.login("manager@acme.example.com", "manager-phone")
    await live.push(owner, [upsert("n-old", "owner's", "notes"), upsert("s-old", "x", "secrets")])
    async with live.connect(member) as for_member, live.connect(manager) as for_manager:
        await send(for_member, "subscribe", {"cursor": None})
        await send(for_manager, "subscribe", {"cursor": None})
        history, _ = await collect(for_manager, 1)  # the manager sees secrets, not notes
        assert [u["entity_id"] for u in history] == ["s-old"]
        await live.push(owner, [upsert("n-1", "owner's", "notes"), upsert("s-1", "x", "secrets")])
        await live.push(member, [upsert("m-1", "member's", "notes")])
        await live.push(owner, [upsert("marker", "last")])
        got: list[str] = []
        while "marker" not in got:
            got.extend(u["entity_id"] for u in (await collect(for_member, 1))[0])
        assert got == ["m-1", "marker"]
        got = []
        while "marker" not in got:
            got.extend(u["entity_id"] for u in (await collect(for_manager, 1))[0])
        assert got == ["s-1", "marker"]
    async with live.connect(member) as ws:  # the catch-up path applies the same rules
        await send(ws, "subscribe", {"cursor": None})
        history, _ = await collect(ws, 2)
        assert [u["entity_id"] for u in history] == ["m-1", "marker"]
        assert pushes(await quiet(ws, 0.3)) == []
    assert [c["id"] for c in await pull_all(live, member)] == ["m-1", "marker"]


async def test_collections_filter_delivers_only_those_collections(live: Live) -> None:
    await live.collection("tasks")
    await live.collection("notes")
    writer = await live.login(live.owner_email, "writer")
    reader = await live.login(live.owner_email, "reader")
    await live.push(writer, [upsert("t-old", "x"), upsert("n-old", "x", "notes")])
    async with live.connect(reader) as ws:
        await send(ws, "subscribe", {"cursor": None, "collections": ["notes"]})
        history, _ = await collect(ws, 1)
        assert [(u["entity_type"], u["entity_id"]) for u in history] == [("notes", "n-old")]
        await live.push(writer, [upsert("t-1", "x"), upsert("n-1", "x", "notes")])
        await live.push(writer, [upsert("t-2", "x")])
        await live.push(writer, [upsert("n-2", "x", "notes")])
        got, _ = await collect(ws, 2)
        assert [(u["entity_type"], u["entity_id"]) for u in got] == [
            ("notes", "n-1"),
            ("notes", "n-2"),
        ]
        assert pushes(await quiet(ws, 0.3)) == []


async def test_manual_conflict_is_announced_and_resolved_over_the_websocket(live: Live) -> None:
    await live.collection("docs", conflict_policy="manual")
    phone = await live.login(live.owner_email, "phone")
    tablet = await live.login(live.owner_email, "tablet")
    watcher = await live.login(live.owner_email, "watcher")
    await live.push(phone, [upsert("d1", "v1", "docs")])
    await live.push(tablet, [upsert("d1", "tablet edit", "docs", base_version=1)])
    async with live.connect(phone) as ws, live.connect(watcher) as watching:
        await send(watching, "subscribe", {"cursor": None})
        history, _ = await collect(watching, 1)
        assert [(u["entity_id"], u["version"]) for u in history] == [("d1", 2)]
        await send(
            ws,
            "sync",
            {
                "idempotency_key": "conflicting",
                "changes": [upsert("d1", "phone edit", "docs", base_version=1)],
            },
        )
        got = await until_types(ws, {"sync_response", "conflict"})
        answer = got["sync_response"]["payload"]
        assert [r["status"] for r in answer["results"]] == ["conflict"], answer
        conflict = got["conflict"]["payload"]
        assert conflict["domain"] == "docs"
        assert conflict["mobile_id"] == "d1"
        assert conflict["conflict_id"]
        assert conflict["server_version"] == 2
        assert conflict["server_data"] == {"title": "tablet edit"}
        assert sorted(conflict["resolution_options"]) == ["accept_client", "accept_server", "merge"]
        assert pushes(await quiet(watching, 0.3)) == []  # manual: the server copy was kept

        await send(
            ws,
            "resolve_conflict",
            {
                "conflict_id": conflict["conflict_id"],
                "resolution": "accept_client",
                "client_data": {"title": "phone edit"},
            },
        )
        resolved = (await receive(ws, "conflict_resolved"))["payload"]
        assert resolved["conflict_id"] == conflict["conflict_id"]
        updates, _ = await collect(watching, 1)
        assert [(u["entity_id"], u["operation"], u["version"], u["data"]) for u in updates] == [
            ("d1", "update", 3, {"title": "phone edit"})
        ]
    feed = await pull_all(live, watcher)
    assert [(c["id"], c["version"], c["data"]) for c in feed] == [
        ("d1", 3, {"title": "phone edit"})
    ]


async def test_subscriber_of_another_role_joining_during_a_catch_up_is_served(live: Live) -> None:
    """Bug: hub.py computes ``reach`` for the roles present when a feed step starts; a
    connection of another role that joins during the step's database reads raises KeyError in
    ``_catch_up`` after it was popped from ``joining``, so it never gets anything."""
    await live.collection("tasks")
    await live.member("member@acme.example.com")
    await live.member("manager@acme.example.com", role="manager")
    owner = await live.login(live.owner_email, "owner-phone")
    for batch in range(3):  # 2400 rows: the catch-up reads five pages
        await live.push(owner, [upsert(f"t{batch}-{i:03d}", "x") for i in range(800)])
    member = await live.login("member@acme.example.com", "member-phone")
    manager = await live.login("manager@acme.example.com", "manager-phone")
    async with live.connect(member) as first, live.connect(manager) as second:
        await send(first, "subscribe", {"cursor": None})
        await asyncio.sleep(0.01)  # the member's catch-up starts...
        await send(second, "subscribe", {"cursor": None})  # ... and the manager joins meanwhile
        updates, _ = await collect(second, 2400, timeout=5)
    assert len(updates) == 2400
