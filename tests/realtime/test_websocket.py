"""The WebSocket protocol against a real server."""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Callable
from typing import Any

import pytest
import websockets

from homeport.realtime.hub import TenantFeed
from tests.realtime.conftest import Device, Live, receive, send


def upsert(record_id: str, title: str, **extra: object) -> dict[str, object]:
    return {
        "collection": "tasks",
        "id": record_id,
        "op": "upsert",
        "data": {"title": title},
        **extra,
    }


async def test_subscriber_gets_history_then_live_changes(live: Live) -> None:
    await live.collection("tasks")
    writer = await live.login(live.owner_email, "writer")
    reader = await live.login(live.owner_email, "reader")
    await live.push(writer, [upsert("t1", "before")])
    async with live.connect(reader) as ws:
        await send(ws, "subscribe", {"cursor": None})
        history = await receive(ws, "server_push")
        assert [(u["entity_id"], u["operation"]) for u in history["payload"]["updates"]] == [
            ("t1", "create")
        ]
        await live.push(writer, [upsert("t2", "live"), upsert("t1", "changed", base_version=1)])
        pushed = await receive(ws, "server_push")
        updates = pushed["payload"]["updates"]
        assert [(u["entity_id"], u["operation"], u["version"]) for u in updates] == [
            ("t2", "create", 1),
            ("t1", "update", 2),
        ]
        assert updates[1]["data"] == {"title": "changed"}
        assert pushed["payload"]["cursor"]


async def test_heartbeat_and_bad_frames(live: Live) -> None:
    device = await live.login(live.owner_email)
    async with live.connect(device) as ws:
        await send(ws, "heartbeat", {"client_time": "2026-01-01T00:00:00Z"})
        ack = await receive(ws, "heartbeat_ack")
        assert ack["payload"]["server_time"].endswith("Z")
        await ws.send("{not json")
        error = await receive(ws, "error")
        assert error["payload"]["code"] == "SYNC_001"
        await send(ws, "dance", {})
        error = await receive(ws, "error")
        assert error["payload"]["code"] == "SYNC_001"
        await send(ws, "heartbeat", {})  # still open
        await receive(ws, "heartbeat_ack")


async def test_bad_tokens_and_foreign_devices_are_closed(live: Live) -> None:
    device = await live.login(live.owner_email)
    bad = websockets.connect(
        f"{live.ws_url}?device_id={device.device_id}",
        additional_headers={"Authorization": "Bearer not-a-token"},
    )
    async with bad as ws:
        with pytest.raises(websockets.ConnectionClosed) as closed:
            await ws.recv()
    assert closed.value.rcvd is not None
    assert closed.value.rcvd.code == 4401
    assert closed.value.rcvd.reason.startswith("AUTH_001")
    async with live.connect(device, device_id="someone-else") as ws:
        with pytest.raises(websockets.ConnectionClosed) as closed:
            await ws.recv()
    assert closed.value.rcvd is not None
    assert closed.value.rcvd.code == 4403
    token_in_query = websockets.connect(
        f"{live.ws_url}?device_id={device.device_id}&token={device.token}"
    )
    async with token_in_query as ws:
        await send(ws, "heartbeat", {})
        await receive(ws, "heartbeat_ack")


async def test_sync_over_websocket_answers_like_rest(live: Live) -> None:
    await live.collection("tasks")
    device = await live.login(live.owner_email)
    batch = [
        upsert("a", "one"),
        {"collection": "tasks", "id": "b", "op": "upsert", "data": {"title": 5}},
    ]
    async with live.connect(device) as ws:
        await send(ws, "sync", {"idempotency_key": "ws-1", "changes": batch})
        answer = (await receive(ws, "sync_response"))["payload"]
    assert [r["status"] for r in answer["results"]] == ["applied", "rejected"]
    assert answer["errors"][0]["item_id"] == "b"
    rest = await live.http.post(
        "/api/v1/sync/push",
        json={"idempotency_key": "ws-1", "changes": batch},
        headers={"Authorization": f"Bearer {device.token}"},
    )
    assert rest.json() == answer  # the same key and body: the stored answer


async def test_inbox_is_delivered_until_acknowledged(live: Live) -> None:
    device = await live.login(live.owner_email)
    admin = await live.login(live.owner_email, "admin-console")
    posted = await live.http.post(
        f"/api/v1/devices/{device.device_id}/inbox",
        json={"kind": "wipe_cache", "body": {"reason": "test"}},
        headers={"Authorization": f"Bearer {admin.token}"},
    )
    assert posted.status_code == 201, posted.text
    message_id = posted.json()["message_id"]
    async with live.connect(device) as ws:
        first = await receive(ws, "inbox")
        assert first["payload"]["message_id"] == message_id
        assert first["payload"]["body"] == {"reason": "test"}
    async with live.connect(device) as ws:  # not acknowledged: delivered again
        again = await receive(ws, "inbox")
        assert again["payload"]["message_id"] == message_id
        await send(ws, "ack", {"message_ids": [message_id]})
        await send(ws, "heartbeat", {})
        await receive(ws, "heartbeat_ack")
    async with live.connect(device) as ws:
        await send(ws, "heartbeat", {})
        message = await receive(ws, "heartbeat_ack")
        assert message["type"] == "heartbeat_ack"  # no inbox message came first


async def test_presence_lists_connected_devices(live: Live) -> None:
    device = await live.login(live.owner_email, "phone-7")
    headers = {"Authorization": f"Bearer {device.token}"}
    async with live.connect(device) as ws:
        await send(ws, "heartbeat", {})
        await receive(ws, "heartbeat_ack")
        listed = await live.http.get("/api/v1/realtime/presence", headers=headers)
        assert [d["device_id"] for d in listed.json()["devices"]] == ["phone-7"]
    import asyncio

    for _ in range(50):
        listed = await live.http.get("/api/v1/realtime/presence", headers=headers)
        if not listed.json()["devices"]:
            break
        await asyncio.sleep(0.05)
    assert listed.json()["devices"] == []


async def test_record_leaving_scope_arrives_as_a_delete(live: Live) -> None:
    schema = {"type": "object", "x-owner-field": "assignee"}
    await live.collection("jobs", schema=schema, read="owner", write="role:manager")
    await live.member("alice@acme.example.com")
    await live.member("bob@acme.example.com")
    await live.member("boss@acme.example.com", role="manager")
    alice = await live.login("alice@acme.example.com")
    bob = await live.login("bob@acme.example.com")
    boss = await live.login("boss@acme.example.com")

    def job(assignee: str, **extra: object) -> dict[str, object]:
        data = {"title": "Fix", "assignee": assignee}
        return {"collection": "jobs", "id": "j1", "op": "upsert", "data": data, **extra}

    async with live.connect(alice) as alice_ws, live.connect(bob) as bob_ws:
        for ws in (alice_ws, bob_ws):
            await send(ws, "subscribe", {"cursor": None})
        await live.push(boss, [job(alice.user_id)])
        first = (await receive(alice_ws, "server_push"))["payload"]["updates"]
        assert [(u["entity_id"], u["operation"]) for u in first] == [("j1", "create")]
        await live.push(boss, [job(bob.user_id, base_version=1)])
        gone = (await receive(alice_ws, "server_push"))["payload"]["updates"]
        assert [(u["entity_id"], u["operation"], u["data"]) for u in gone] == [
            ("j1", "delete", None)
        ]
        arrived = (await receive(bob_ws, "server_push"))["payload"]["updates"]
        assert [(u["entity_id"], u["version"]) for u in arrived] == [("j1", 2)]
        assert arrived[0]["data"]["assignee"] == bob.user_id


async def test_a_logged_out_session_loses_its_connection(live: Live) -> None:
    device = await live.login(live.owner_email)
    async with live.connect(device) as ws:
        await send(ws, "heartbeat", {})
        await receive(ws, "heartbeat_ack")
        logout = await live.http.post(
            "/api/v1/auth/logout", headers={"Authorization": f"Bearer {device.token}"}
        )
        assert logout.status_code == 204
        await send(ws, "heartbeat", {})
        await receive(ws, "heartbeat_ack")
        with pytest.raises(websockets.ConnectionClosed) as closed:
            await ws.recv()
    assert closed.value.rcvd is not None
    assert closed.value.rcvd.code == 4401
    assert closed.value.rcvd.reason.startswith("AUTH_001")


async def test_the_sync_answer_comes_before_its_conflict(live: Live) -> None:
    await live.collection("tasks", conflict_policy="manual")
    device = await live.login(live.owner_email)
    await live.push(device, [upsert("t1", "first")])
    async with live.connect(device) as ws:
        await send(ws, "sync", {"idempotency_key": "late", "changes": [upsert("t1", "blind")]})
        kinds = []
        while "conflict" not in kinds:
            kinds.append(json.loads(await ws.recv())["type"])
    assert kinds.index("sync_response") < kinds.index("conflict")


async def test_every_connection_of_a_device_gets_its_inbox(live: Live) -> None:
    device = await live.login(live.owner_email)
    admin = await live.login(live.owner_email, "console")
    async with live.connect(device) as first, live.connect(device) as second:
        for ws in (first, second):
            await send(ws, "heartbeat", {})
            await receive(ws, "heartbeat_ack")
        posted = await live.http.post(
            f"/api/v1/devices/{device.device_id}/inbox",
            json={"kind": "ping", "body": {}},
            headers={"Authorization": f"Bearer {admin.token}"},
        )
        message_id = posted.json()["message_id"]
        for ws in (first, second):
            assert (await receive(ws, "inbox"))["payload"]["message_id"] == message_id


async def _two_members_notes(live: Live) -> tuple[Device, Device, Callable[[str], Any]]:
    """alice and bob each wrote a note; the owner can change the collection's read rule."""
    await live.collection("notes")
    await live.member("alice@acme.example.com")
    await live.member("bob@acme.example.com")
    alice = await live.login("alice@acme.example.com")
    bob = await live.login("bob@acme.example.com")
    owner = await live.login(live.owner_email, "console")
    await live.push(alice, [note("a1")])
    await live.push(bob, [note("b1")])

    async def set_read(rule: str) -> None:
        answer = await live.http.put(
            "/api/v1/collections/notes",
            json={"schema": {"type": "object"}, "read": rule, "write": "tenant"},
            headers={"Authorization": f"Bearer {owner.token}"},
        )
        assert answer.status_code == 200, answer.text

    return alice, bob, set_read


def note(record_id: str) -> dict[str, object]:
    return {"collection": "notes", "id": record_id, "op": "upsert", "data": {}}


def moves(message: dict[str, Any]) -> list[tuple[str, str]]:
    return [(u["entity_id"], u["operation"]) for u in message["payload"]["updates"]]


async def test_a_narrower_read_rule_takes_records_off_live_devices(live: Live) -> None:
    alice, bob, set_read = await _two_members_notes(live)
    async with live.connect(bob) as ws:
        await send(ws, "subscribe", {"cursor": None})
        assert sorted(moves(await receive(ws, "server_push"))) == [
            ("a1", "create"),
            ("b1", "create"),
        ]
        await live.push(alice, [note("a2")])  # delivered live: bob's connection is in the feed
        assert moves(await receive(ws, "server_push")) == [("a2", "create")]
        await set_read("owner")
        assert sorted(moves(await receive(ws, "server_push"))) == [
            ("a1", "delete"),
            ("a2", "delete"),
        ]
        await set_read("tenant")
        assert sorted(moves(await receive(ws, "server_push"))) == [
            ("a1", "create"),
            ("a2", "create"),
        ]


async def test_a_rule_changed_between_history_and_going_live_is_applied(
    live: Live, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The history is sent under the rules of its read; the feed reader that makes the
    connection live reads them again and must take back what they no longer allow."""
    _alice, bob, set_read = await _two_members_notes(live)
    gate = threading.Event()
    step = TenantFeed._step

    async def step_after_the_gate(feed: TenantFeed) -> None:
        await asyncio.to_thread(gate.wait, 10)
        await step(feed)

    monkeypatch.setattr(TenantFeed, "_step", step_after_the_gate)
    async with live.connect(bob) as ws:
        await send(ws, "subscribe", {"cursor": None})
        assert sorted(moves(await receive(ws, "server_push"))) == [
            ("a1", "create"),
            ("b1", "create"),
        ]
        await set_read("owner")  # bob's connection waits to join the feed
        gate.set()
        assert moves(await receive(ws, "server_push")) == [("a1", "delete")]
        await set_read("tenant")
        assert moves(await receive(ws, "server_push")) == [("a1", "create")]
