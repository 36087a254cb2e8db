"""Limits of a connection: slow consumers, heartbeat silence, rate limit, frame size, bad
subscriptions."""

from __future__ import annotations

import asyncio
import json
import socket
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import websockets

from tests.conftest import make_settings
from tests.realtime.conftest import (
    Device,
    Live,
    close_of,
    collect,
    pull_all,
    quiet,
    receive,
    running_live,
    seed_tenant,
    send,
    upsert,
)


@pytest.fixture
async def tight(database_url: str, tmp_path: Path) -> AsyncIterator[Live]:
    """A server with tiny limits: 1 s heartbeat, a send queue of 2, 5 messages a minute and
    frames of at most 2000 bytes."""
    settings = make_settings(
        database_url,
        tmp_path / "data",
        realtime_heartbeat_seconds=1,
        realtime_send_queue=2,
        realtime_messages_per_minute=5,
        realtime_max_frame_bytes=2000,
    )
    async with running_live(settings) as live:
        yield live


@pytest.fixture
async def slow_queue(database_url: str, tmp_path: Path) -> AsyncIterator[Live]:
    settings = make_settings(
        database_url,
        tmp_path / "data",
        realtime_heartbeat_seconds=30,
        realtime_send_queue=2,
        max_request_body_bytes=2 * 1024 * 1024,
    )
    async with running_live(settings) as live:
        yield live


def lazy_client(live: Live, device: Device) -> Any:
    """A client that stops reading from the socket once one message waits unread, with a
    small receive buffer (the kernel would otherwise absorb megabytes) and no compression."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8192)
    sock.connect(("127.0.0.1", live.server.port))
    sock.setblocking(False)
    return websockets.connect(
        f"{live.ws_url}?device_id={device.device_id}",
        additional_headers={"Authorization": f"Bearer {device.token}"},
        sock=sock,
        max_queue=1,
        compression=None,  # else repeated data shrinks to nothing
        max_size=None,
    )


async def test_slow_consumer_is_closed_4008_and_resumes_without_loss(slow_queue: Live) -> None:
    live = slow_queue
    await live.collection("tasks")
    writer = await live.login(live.owner_email, "writer")
    reader = await live.login(live.owner_email, "reader")
    big = "x" * 300_000
    ids = [f"big-{i:02d}" for i in range(30)]
    received: list[dict[str, Any]] = []
    cursor: str | None = None
    async with lazy_client(live, reader) as ws:
        await send(ws, "subscribe", {"cursor": None})
        await send(ws, "heartbeat", {})
        await receive(ws, "heartbeat_ack")
        await asyncio.sleep(0.2)
        for record_id in ids:  # the client reads nothing meanwhile
            await live.push(writer, [upsert(record_id, big)])

        async def drain() -> None:
            nonlocal cursor
            while True:
                message = json.loads(await asyncio.wait_for(ws.recv(), 10))
                if message["type"] == "server_push":
                    received.extend(message["payload"]["updates"])
                    cursor = message["payload"]["cursor"]

        with pytest.raises(websockets.ConnectionClosed) as closed:
            await drain()
    assert closed.value.rcvd is not None
    assert closed.value.rcvd.code == 4008
    assert len(received) < len(ids), "never overflowed: the test did not make a slow consumer"
    resume = websockets.connect(
        f"{live.ws_url}?device_id={reader.device_id}",
        additional_headers={"Authorization": f"Bearer {reader.token}"},
        max_size=None,  # the catch-up packs many big rows into one message
    )
    async with resume as ws:
        await send(ws, "subscribe", {"cursor": cursor})
        rest, _ = await collect(ws, len(ids) - len(received), timeout=10)
        received.extend(rest)
        assert [m for m in await quiet(ws, 0.3) if m["type"] == "server_push"] == []
    feed = await pull_all(live, reader)
    assert [(u["entity_id"], u["version"]) for u in received] == [
        (c["id"], c["version"]) for c in feed
    ]
    assert sorted(u["entity_id"] for u in received) == ids


async def test_silent_client_is_closed_4002_and_heartbeating_one_stays(tight: Live) -> None:
    live = tight
    silent = await live.login(live.owner_email, "silent")
    chatty = await live.login(live.owner_email, "chatty")
    loop = asyncio.get_running_loop()
    async with live.connect(silent) as quiet_ws, live.connect(chatty) as talking:
        started = loop.time()

        async def keep_talking() -> None:
            # 4 heartbeats in 3.6 s: under the 5 a minute limit, never 3 s apart
            for _ in range(4):
                await send(talking, "heartbeat", {})
                await receive(talking, "heartbeat_ack")
                await asyncio.sleep(0.9)

        talker = asyncio.create_task(keep_talking())
        code, _reason = await close_of(quiet_ws, timeout=6)
        elapsed = loop.time() - started
        await talker
        assert code == 4002
        assert 2.5 <= elapsed <= 4.5, elapsed
        await send(talking, "heartbeat", {})  # the 5th message: still open
        await receive(talking, "heartbeat_ack")


async def test_rate_limit_answers_rate_001_then_closes_abuse_1008(tight: Live) -> None:
    live = tight
    device = await live.login(live.owner_email)
    async with live.connect(device) as ws:
        for _ in range(5):
            await send(ws, "heartbeat", {})
            await receive(ws, "heartbeat_ack")
        await send(ws, "heartbeat", {})
        error = await receive(ws, "error")
        assert error["payload"]["code"] == "RATE_001"
        # Still open: nine more excess messages are each answered with an error...
        for _ in range(9):
            await send(ws, "heartbeat", {})
            assert (await receive(ws, "error"))["payload"]["code"] == "RATE_001"
        # ... and the next one is answered too, then closes the connection with a policy
        # violation (the answer is sent before the close).
        await send(ws, "heartbeat", {})
        assert (await receive(ws, "error"))["payload"]["code"] == "RATE_001"
        code, _reason = await close_of(ws)
        assert code == 1008


async def test_oversize_frame_is_refused_with_sync_001_and_stays_open(tight: Live) -> None:
    live = tight
    device = await live.login(live.owner_email)
    async with live.connect(device) as ws:
        await send(ws, "heartbeat", {"padding": "x" * 5000})
        error = await receive(ws, "error")
        assert error["payload"]["code"] == "SYNC_001"
        await send(ws, "heartbeat", {})
        await receive(ws, "heartbeat_ack")


async def test_bad_subscriptions_are_answered_and_the_connection_stays(live: Live) -> None:
    await live.collection("tasks")
    device = await live.login(live.owner_email)
    await live.push(device, [upsert("t1", "x")])
    pulled = await live.http.get(
        "/api/v1/sync/pull", headers={"Authorization": f"Bearer {device.token}"}
    )
    good = pulled.json()["cursor"]
    forged = good[:-4] + ("AAAA" if not good.endswith("AAAA") else "BBBB")
    await seed_tenant(live.settings, "beta", "owner@beta.example.com")
    beta = await live.login("owner@beta.example.com", "beta-phone")
    beta_cursor = (
        await live.http.get("/api/v1/sync/pull", headers={"Authorization": f"Bearer {beta.token}"})
    ).json()["cursor"]
    async with live.connect(device) as ws:
        for cursor in ("not-a-cursor", forged, beta_cursor):
            await send(ws, "subscribe", {"cursor": cursor})
            error = await receive(ws, "error")
            assert error["payload"]["code"] == "SYNC_001", (cursor, error)
        await send(ws, "subscribe", {"cursor": None, "collections": ["tasks", "nope"]})
        error = await receive(ws, "error")
        assert error["payload"]["code"] == "NOT_FOUND"
        assert "nope" in error["payload"]["message"]
        await send(ws, "heartbeat", {})
        await receive(ws, "heartbeat_ack")
        await send(ws, "subscribe", {"cursor": good})  # a good one still works afterwards
        await live.push(device, [upsert("t2", "y")])
        updates, _ = await collect(ws, 1)
        assert [u["entity_id"] for u in updates] == ["t2"]
