"""Hostile WebSocket messages and inbox posts, against a real server on SQLite and PostgreSQL.

A message the server cannot accept is answered (an ``error`` frame, or an item error in the
``sync_response``) and the connection stays usable; an unexpected failure while handling one
message is an ``error`` ``INTERNAL`` followed by a close with ``1011``, never a silent ``1000``.
Frames are sent with ``json.dumps``, which writes a lone surrogate as the six characters
``\\ud800`` and NaN / Infinity as bare tokens, as a hostile client would.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from typing import Any

import httpx
import pytest
from websockets.asyncio.client import ClientConnection

from homeport.sync.service import SyncService
from tests.realtime.conftest import Device, Live, close_of, pull_all, receive, upsert


async def send_raw(ws: ClientConnection, kind: str, payload: Any) -> None:
    await ws.send(
        json.dumps({"type": kind, "payload": payload, "timestamp": "2026-01-01T00:00:00Z"})
    )


async def still_usable(ws: ClientConnection) -> None:
    await send_raw(ws, "heartbeat", {})
    await receive(ws, "heartbeat_ack")


async def pulled(live: Live, device: Device, expect: int = 0) -> list[dict[str, Any]]:
    """What the device pulls, waiting up to 10 s for ``expect`` changes (PostgreSQL's feed holds
    a just-committed change back while an older transaction of the cluster runs)."""
    deadline = time.monotonic() + 10
    while True:
        changes = await pull_all(live, device)
        if len(changes) >= expect or time.monotonic() > deadline:
            return changes
        await asyncio.sleep(0.05)


def nested(levels: int) -> Any:
    value: Any = "leaf"
    for _ in range(levels):
        value = {"n": value}
    return value


# sync


@pytest.mark.parametrize("key", ["k-\ud800", "k-\x00"], ids=["surrogate", "nul"])
async def test_a_sync_with_an_unstorable_idempotency_key_is_an_error_frame(
    live: Live, key: str
) -> None:
    await live.collection("tasks")
    device = await live.login(live.owner_email)
    async with live.connect(device) as ws:
        await send_raw(ws, "sync", {"idempotency_key": key, "changes": [upsert("t1", "x")]})
        error = await receive(ws, "error")
        assert error["payload"]["code"] == "VALIDATION_001"
        await still_usable(ws)
    assert await pulled(live, device) == []


async def test_a_sync_with_hostile_items_answers_item_errors(live: Live) -> None:
    await live.collection("tasks")
    device = await live.login(live.owner_email)
    changes = [
        upsert("t1", "a\ud800"),
        {"collection": "tasks", "id": "t2", "data": {"title": "x", "\udc00": 1}},
        upsert("t3", "x", hlc="²²²²²²²²²²²²²:00000:x"),
        upsert("t4", "x", hlc="1795626452733:¹¹¹¹¹:x"),
        upsert("t5", "x", hlc=f"{int(time.time() * 1000):013d}:00000:x\x00"),
        upsert("t6", "x", base_version="1"),
        upsert("ok", "fine"),
    ]
    async with live.connect(device) as ws:
        await send_raw(ws, "sync", {"idempotency_key": uuid.uuid4().hex, "changes": changes})
        answer = (await receive(ws, "sync_response"))["payload"]
        assert answer["synced_items"] == 1
        assert [(e["item_id"], e["error"]) for e in answer["errors"]] == [
            (f"t{n}", "SYNC_001") for n in range(1, 7)
        ]
        await still_usable(ws)
    assert [change["id"] for change in await pulled(live, device, 1)] == ["ok"]


# ack and resolve_conflict


@pytest.mark.parametrize(
    "ids", [["\ud800"], ["ok", "x\x00"], ["x" * 65]], ids=["surrogate", "nul", "too_long"]
)
async def test_an_ack_with_ids_that_cannot_be_ids_is_an_error_frame(
    live: Live, ids: list[str]
) -> None:
    device = await live.login(live.owner_email)
    async with live.connect(device) as ws:
        await send_raw(ws, "ack", {"message_ids": ids})
        error = await receive(ws, "error")
        assert error["payload"]["code"] == "SYNC_001"
        await still_usable(ws)


async def _pending_conflict(live: Live, device: Device) -> str:
    await live.collection("tasks", conflict_policy="manual")
    await live.push(device, [upsert("t1", "first")])
    body = await live.push(device, [upsert("t1", "blind")])
    [conflict] = body["conflicts"]
    assert conflict["status"] == "pending"
    return str(conflict["conflict_id"])


async def _conflict_status(live: Live, device: Device) -> list[str]:
    listed = await live.http.get(
        "/api/v1/sync/conflicts", headers={"Authorization": f"Bearer {device.token}"}
    )
    assert listed.status_code == 200, listed.text
    return [entry["resolution_result"] for entry in listed.json()["conflicts"]]


@pytest.mark.parametrize(
    "conflict_id", ["\ud800", "c\x00", "c" * 65], ids=["surrogate", "nul", "too_long"]
)
async def test_resolve_conflict_with_an_id_that_cannot_be_an_id_is_an_error_frame(
    live: Live, conflict_id: str
) -> None:
    device = await live.login(live.owner_email)
    async with live.connect(device) as ws:
        await send_raw(
            ws, "resolve_conflict", {"conflict_id": conflict_id, "resolution": "accept_server"}
        )
        error = await receive(ws, "error")
        assert error["payload"]["code"] == "SYNC_001"
        await still_usable(ws)


@pytest.mark.parametrize(
    "data",
    [
        {"title": "x", "n": float("nan")},
        {"title": "x", "n": float("-inf")},
        {"title": "a\ud800"},
        {"title": "a\x00"},
        {"title": "x", "n": 2**70},
        {"title": "x", "n": nested(100)},
    ],
    ids=["nan", "infinity", "surrogate", "nul", "integer_2_70", "nested_100_levels"],
)
async def test_resolve_conflict_with_hostile_merged_data_is_an_error_frame(
    live: Live, data: dict[str, Any]
) -> None:
    device = await live.login(live.owner_email)
    conflict_id = await _pending_conflict(live, device)
    async with live.connect(device) as ws:
        await send_raw(
            ws,
            "resolve_conflict",
            {"conflict_id": conflict_id, "resolution": "merge", "client_data": data},
        )
        error = await receive(ws, "error")
        assert error["payload"]["code"] == "VALIDATION_001"
        await still_usable(ws)
    assert await _conflict_status(live, device) == ["pending"]
    [record] = await pulled(live, device, 1)
    assert (record["version"], record["data"]) == (1, {"title": "first"})


# An unexpected failure


async def test_an_unexpected_failure_is_an_internal_error_then_1011(
    live: Live, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No message a client can send is known to fail unexpectedly any more: the failure is
    injected (the server runs in this process), to prove the handler's last line of defence."""
    await live.collection("tasks")
    device = await live.login(live.owner_email)

    async def broken(*_args: Any, **_kwargs: Any) -> Any:
        raise RuntimeError("injected failure with a secret-looking text: hunter2")

    async with live.connect(device) as ws:
        await still_usable(ws)
        monkeypatch.setattr(SyncService, "push", broken)
        await send_raw(ws, "sync", {"idempotency_key": "k1", "changes": [upsert("t1", "x")]})
        error = await receive(ws, "error")
        assert error["payload"]["code"] == "INTERNAL"
        assert "hunter2" not in error["payload"]["message"]
        code, _reason = await close_of(ws)
    assert code == 1011
    monkeypatch.undo()
    async with live.connect(device) as ws:  # the server itself is fine
        await still_usable(ws)


# The inbox


async def _post_inbox(live: Live, device_id: str, body: dict[str, Any]) -> httpx.Response:
    admin = await live.login(live.owner_email, "admin-console")
    return await live.http.post(
        f"/api/v1/devices/{device_id}/inbox",
        content=json.dumps(body).encode(),
        headers={"Authorization": f"Bearer {admin.token}", "Content-Type": "application/json"},
    )


@pytest.mark.parametrize(
    "post",
    [
        {"kind": "wipe", "body": {"n": float("nan")}},
        {"kind": "wipe", "body": {"n": [float("inf")]}},
        {"kind": "wipe", "body": {"n": "a\x00"}},
        {"kind": "wipe", "body": {"k\x00": 1}},
        {"kind": "wipe", "body": {"n": "a\ud800"}},
        {"kind": "wipe", "body": {"\ud800": 1}},
        {"kind": "wi\x00pe"},
        {"kind": "wipe", "ttl_seconds": "60"},
        {"kind": "wipe", "ttl_seconds": 60.0},
    ],
    ids=[
        "nan",
        "infinity",
        "nul_in_a_value",
        "nul_in_a_key",
        "surrogate_in_a_value",
        "surrogate_in_a_key",
        "nul_in_kind",
        "ttl_as_text",
        "ttl_as_float",
    ],
)
async def test_an_inbox_message_that_cannot_be_stored_or_sent_is_a_422(
    live: Live, post: dict[str, Any]
) -> None:
    device = await live.login(live.owner_email)
    answer = await _post_inbox(live, device.device_id, post)
    assert answer.status_code == 422, answer.text
    assert answer.json()["code"] == "VALIDATION_001"
    async with live.connect(device) as ws:  # nothing was stored: no inbox message comes
        await send_raw(ws, "heartbeat", {})
        first = json.loads(await ws.recv())
        assert first["type"] == "heartbeat_ack", first
