from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import anyio
import httpx
import pytest

from homeport_client import HomeportClient, HomeportNetworkError
from homeport_fake import FakeServer
from homeport_live_fake import FakeLiveServer

pytestmark = pytest.mark.anyio

BASE = "http://homeport.test"


@pytest.fixture
def live(server: FakeServer) -> FakeLiveServer:
    return FakeLiveServer(server)


def make_client(
    server: FakeServer, live: FakeLiveServer, store_path: str, heartbeat: float = 5.0
) -> HomeportClient:
    return HomeportClient(
        BASE,
        store_path,
        "dev-a",
        transport=server.transport,
        ws_connect=live.connect,
        heartbeat_interval=heartbeat,
        reconnect_delay=(0.01, 0.05),
    )


@pytest.fixture
async def client(
    server: FakeServer, live: FakeLiveServer, store_path: str
) -> AsyncIterator[HomeportClient]:
    async with make_client(server, live, store_path) as c:
        await c.login("a@example.com", "pw")
        yield c


async def until(condition: Callable[[], bool], timeout: float = 3.0) -> None:
    with anyio.fail_after(timeout):
        while not condition():
            await anyio.sleep(0.005)


def rest_pushes(server: FakeServer) -> list[httpx.Request]:
    return [r for r in server.requests if r.url.path == "/api/v1/sync/push"]


# -- connecting and server_push ---------------------------------------------------------------


async def test_connect_url_headers_and_subscribe(
    client: HomeportClient, live: FakeLiveServer
) -> None:
    assert not client.is_live
    await client.connect_live(["notes", "people"])
    assert client.is_live
    socket = live.current
    assert socket.url == "ws://homeport.test/ws/mobile/sync/?device_id=dev-a"
    assert socket.headers["Authorization"] == "Bearer at-1"
    assert socket.headers["X-Homeport-Protocol"] == "1"
    assert live.sent("subscribe") == [{"cursor": None, "collections": ["notes", "people"]}]
    await client.connect_live(["people", "notes"])  # already live: nothing happens
    assert len(live.sockets) == 1
    with pytest.raises(RuntimeError):
        await client.connect_live()
    await client.disconnect_live()
    assert not client.is_live
    assert socket.closed == (1000, "client disconnect")


async def test_https_becomes_wss(server: FakeServer, live: FakeLiveServer) -> None:
    async with HomeportClient(
        "https://h.example/base/", ":memory:", "dev/1", ws_connect=live.connect
    ) as c:
        assert c._live_url() == "wss://h.example/base/ws/mobile/sync/?device_id=dev%2F1"


async def test_server_push_applied_and_cursor_kept_across_reopen(
    server: FakeServer, live: FakeLiveServer, store_path: str
) -> None:
    for i in range(5):
        server.write("notes", f"n{i}", {"i": i})
    async with make_client(server, live, store_path) as c:
        await c.login("a@example.com", "pw")
        await c.connect_live()
        await until(lambda: c.cursor() == "5")  # three pages of at most two
        assert [data["i"] for data in c.all("notes")] == [0, 1, 2, 3, 4]
        live.write("notes", "n9", {"i": 9})
        await until(lambda: c.cursor() == "6")
        assert c.get("notes", "n9") == {"i": 9}
        assert c.version("notes", "n9") == 1
        # a queued local change keeps showing on top of a pushed server change
        c.patch("notes", "n0", {"local": True})
        live.write("notes", "n0", {"i": 100})
        await until(lambda: c.version("notes", "n0") == 2)
        assert c.get("notes", "n0") == {"i": 100, "local": True}
        assert c.pending() == 1
        live.write("notes", "n1", None)  # delete
        await until(lambda: c.cursor() == "8")
        assert c.get("notes", "n1") is None
        assert c.version("notes", "n1") == 2
    server.write("notes", "n10", {"i": 10})  # while the app was closed
    async with make_client(server, live, store_path) as c:
        assert c.cursor() == "8"
        await c.connect_live()
        assert live.sent("subscribe")[-1] == {"cursor": "8"}
        await until(lambda: c.cursor() == "9")
        assert c.get("notes", "n10") == {"i": 10}
        # nothing from before the cursor was sent again
        updates = [
            update["entity_id"]
            for sent in live.current.pushed
            if sent["type"] == "server_push"
            for update in sent["payload"]["updates"]
        ]
        assert updates == ["n10"]


async def test_reconnect_after_drop_resumes_from_cursor(
    client: HomeportClient, server: FakeServer, live: FakeLiveServer
) -> None:
    server.write("notes", "a", {"v": 1})
    await client.connect_live()
    await until(lambda: client.cursor() == "1")
    live.current.close_from_server(1006)
    server.write("notes", "b", {"v": 2})  # nobody is subscribed to hear it
    await until(lambda: len(live.sockets) == 2 and client.is_live)
    assert live.sent("subscribe") == [{"cursor": None}, {"cursor": "1"}]
    await until(lambda: client.get("notes", "b") == {"v": 2})
    assert client.cursor() == "2"


async def test_close_4008_reconnects_and_resumes(
    client: HomeportClient, server: FakeServer, live: FakeLiveServer
) -> None:
    errors: list[dict[str, Any]] = []
    client.on_live_error(errors.append)
    await client.connect_live()
    live.write("notes", "a", {"v": 1})
    await until(lambda: client.cursor() == "1")
    live.current.close_from_server(4008, "fell behind")
    server.write("notes", "b", {"v": 2})
    await until(lambda: client.get("notes", "b") == {"v": 2})
    assert len(live.sockets) == 2
    assert live.sent("subscribe")[-1] == {"cursor": "1"}
    assert errors == []  # a reconnect is not an error


async def test_network_failures_while_reconnecting_back_off(
    client: HomeportClient, live: FakeLiveServer
) -> None:
    await client.connect_live()
    live.refuse = HomeportNetworkError("refused")
    live.current.close_from_server(1011, "restart")
    await anyio.sleep(0.1)
    assert not client.is_live
    live.refuse = None
    await until(lambda: client.is_live)
    assert len(live.sockets) == 2


async def test_auth_002_refreshes_then_reconnects(
    client: HomeportClient, server: FakeServer, live: FakeLiveServer
) -> None:
    await client.connect_live()
    server.expired_tokens.add("at-1")
    live.current.close_from_server(4401, "AUTH_002 Token expired")
    await until(lambda: len(live.sockets) == 2 and client.is_live)
    assert server.used_refresh_tokens == ["rt-1"]
    assert live.current.headers["Authorization"] == "Bearer at-2"
    live.write("notes", "a", {"v": 1})
    await until(lambda: client.get("notes", "a") == {"v": 1})


async def test_auth_failure_after_refresh_stops_and_reports(
    client: HomeportClient, live: FakeLiveServer
) -> None:
    errors: list[dict[str, Any]] = []
    client.on_live_error(errors.append)
    await client.connect_live()
    live.close_on_connect = [(4401, "AUTH_001 Session revoked")] * 5
    live.current.close_from_server(4401, "AUTH_001 Session revoked")
    await until(lambda: bool(errors))
    await anyio.sleep(0.05)
    assert len(live.sockets) == 2  # one refresh, one retry, then stop
    assert errors == [
        {"code": "AUTH_001", "message": "AUTH_001 Session revoked", "close_code": 4401}
    ]
    assert not client.is_live


@pytest.mark.parametrize("code", [4403, 1008])
async def test_forbidden_and_policy_closes_stop(
    client: HomeportClient, live: FakeLiveServer, code: int
) -> None:
    errors: list[dict[str, Any]] = []
    client.on_live_error(errors.append)
    await client.connect_live()
    live.current.close_from_server(code, "go away")
    await until(lambda: bool(errors))
    await anyio.sleep(0.05)
    assert len(live.sockets) == 1
    assert errors[0]["close_code"] == code
    assert not client.is_live
    if code == 1008:
        assert client._live_cooldown_until > time.monotonic() + 20


async def test_first_connection_refused(client: HomeportClient, live: FakeLiveServer) -> None:
    live.refuse = HomeportNetworkError("refused")
    with pytest.raises(HomeportNetworkError):
        await client.connect_live()
    assert not client.is_live


# -- inbox, conflicts, errors -----------------------------------------------------------------


async def test_inbox_callback_once_and_acked_also_on_redelivery(
    server: FakeServer, live: FakeLiveServer, store_path: str
) -> None:
    seen: list[str] = []
    async with make_client(server, live, store_path) as c:
        await c.login("a@example.com", "pw")

        @c.on_inbox
        async def inbox(message: dict[str, Any]) -> None:
            assert message["kind"] == "notice"
            seen.append(message["message_id"])

        await c.connect_live()
        live.send_inbox("m1", {"text": "hi"})
        await until(lambda: live.acks == ["m1"])
        assert seen == ["m1"]
        live.current.push("inbox", {"message_id": "m1", "kind": "notice", "body": {}})
        await until(lambda: live.acks == ["m1", "m1"])
        assert seen == ["m1"]
    # the delivered ids are kept in the store: a new client acks without calling again
    async with make_client(server, live, store_path) as c:
        calls: list[str] = []
        c.on_inbox(lambda m: calls.append(m["message_id"]))
        await c.connect_live()
        live.current.push("inbox", {"message_id": "m1", "kind": "notice", "body": {}})
        live.send_inbox("m2")
        await until(lambda: live.acks == ["m1", "m1", "m1", "m2"])
        assert calls == ["m2"]


async def test_failing_inbox_callback_is_not_acked_and_redelivered(
    client: HomeportClient, live: FakeLiveServer
) -> None:
    errors: list[dict[str, Any]] = []
    client.on_live_error(errors.append)
    attempts: list[str] = []

    def inbox(message: dict[str, Any]) -> None:
        attempts.append(message["message_id"])
        if len(attempts) == 1:
            raise RuntimeError("busy")

    client.on_inbox(inbox)
    await client.connect_live()
    live.send_inbox("m1")
    await until(lambda: bool(errors))
    assert errors[0]["code"] == "INBOX_CALLBACK_FAILED"
    assert live.acks == []
    live.current.close_from_server(1001)  # the server redelivers unacked messages on subscribe
    await until(lambda: live.acks == ["m1"])
    assert attempts == ["m1", "m1"]


async def test_conflict_message_calls_the_conflict_callbacks(
    client: HomeportClient, live: FakeLiveServer
) -> None:
    entries: list[dict[str, Any]] = []
    client.on_conflict(entries.append)
    await client.connect_live()
    conflict = {
        "conflict_id": "c-9",
        "domain": "notes",
        "mobile_id": "n1",
        "server_version": 4,
        "client_version": 3,
        "server_data": {"v": "server"},
        "resolution_options": ["server_wins", "client_wins", "merge"],
    }
    live.current.push("conflict", conflict)
    live.current.push("conflict", conflict)  # redelivered: reported once
    live.current.push("heartbeat_ack", {"server_time": "x"})
    await until(lambda: client.last_server_time == "x")
    assert entries == [
        {
            **conflict,
            "collection": "notes",
            "id": "n1",
            "resolution": None,
            "status": "pending",
            "server": {"version": 4, "data": {"v": "server"}},
        }
    ]
    await client.resolve_conflict("c-9", "client_wins", {"v": "mine"})
    assert live.sent("resolve_conflict") == [
        {"conflict_id": "c-9", "resolution": "client_wins", "client_data": {"v": "mine"}}
    ]


async def test_error_message_goes_to_on_live_error(
    client: HomeportClient, live: FakeLiveServer
) -> None:
    errors: list[dict[str, Any]] = []

    @client.on_live_error
    async def on_live_error(error: dict[str, Any]) -> None:
        errors.append(error)

    await client.connect_live()
    live.current.push("error", {"code": "RATE_LIMITED", "message": "slow down"})
    live.current.incoming.put_nowait("not json")
    await until(lambda: len(errors) == 2)
    assert errors[0] == {"code": "RATE_LIMITED", "message": "slow down"}
    assert errors[1]["code"] == "BAD_MESSAGE"
    assert client.is_live


# -- live_sync --------------------------------------------------------------------------------


async def test_live_sync_answer_applied_like_push(
    client: HomeportClient, server: FakeServer, live: FakeLiveServer
) -> None:
    server.write("people", "p3", {"name": "Cy"})
    conflicts: list[dict[str, Any]] = []
    client.on_conflict(conflicts.append)
    await client.connect_live()
    await until(lambda: client.version("people", "p3") == 1)
    client.put("people", "p1", {"name": "Al"})
    client.delete("people", "p2")
    report = await client.live_sync(batch_size=1)
    assert rest_pushes(server) == []
    assert report.batches == 2
    assert report.applied == 2
    assert client.pending() == 0
    assert client.version("people", "p1") == 1
    assert client.get("people", "p1") == {"name": "Al"}
    bodies = live.sent("sync")
    assert [b["changes"][0]["id"] for b in bodies] == ["p1", "p2"]
    assert bodies[0]["device_id"] == "dev-a"
    assert bodies[0]["mode"] == "best_effort"
    assert len({b["idempotency_key"] for b in bodies}) == 2
    # the stored body is sent byte for byte inside the message
    assert live.sync_texts[0].startswith('{"type":"sync","payload":{"idempotency_key":')
    # a conflict in the answer is handled like a push answer
    server.write("people", "p3", {"name": "Cyril"})  # not broadcast: client keeps version 1
    client.patch("people", "p3", {"name": "Mine"})
    report = await client.live_sync()
    assert len(report.conflicts) == 1
    assert conflicts[0]["id"] == "p3"
    assert client.get("people", "p3") == {"name": "Cyril"}
    assert client.version("people", "p3") == 2


async def test_unanswered_live_sync_is_resent_with_same_key(
    client: HomeportClient, server: FakeServer, live: FakeLiveServer
) -> None:
    await client.connect_live()
    client.put("people", "p1", {"name": "Al"})
    client.put("people", "p2", {"name": "Bo"})
    live.lose_sync_answers = 1  # applied, then the connection drops before the answer
    report = await client.live_sync()
    # the same stored batch went over REST under the same key and was answered once
    (resent,) = rest_pushes(server)
    assert json.loads(resent.content) == live.sent("sync")[0]
    assert report.applied == 2
    assert client.pending() == 0
    assert server.records[("people", "p2")].version == 1
    await until(lambda: client.is_live)  # and the live connection came back by itself
    client.patch("people", "p1", {"name": "Alan"})
    await client.live_sync()
    assert len(live.sent("sync")) == 2


async def test_sync_timeout_keeps_the_batch_for_the_next_call(
    server: FakeServer, live: FakeLiveServer, store_path: str
) -> None:
    async with HomeportClient(
        BASE,
        store_path,
        "dev-a",
        transport=server.transport,
        ws_connect=live.connect,
        timeout=0.1,
    ) as c:
        await c.login("a@example.com", "pw")
        await c.connect_live()
        c.put("people", "p1", {"name": "Al"})
        original = live.handle

        def swallow_sync(socket: Any, kind: str, payload: dict[str, Any], text: str) -> None:
            if kind != "sync":
                original(socket, kind, payload, text)

        live.handle = swallow_sync  # type: ignore[method-assign]
        with pytest.raises(HomeportNetworkError):
            await c.live_sync()
        live.handle = original  # type: ignore[method-assign]
        report = await c.live_sync()
        assert report.applied == 1
        first, second = live.sent("sync")
        assert first == second


async def test_live_sync_uses_rest_when_not_connected(
    client: HomeportClient, server: FakeServer, live: FakeLiveServer
) -> None:
    client.put("people", "p1", {"name": "Al"})
    report = await client.live_sync()
    assert report.applied == 1
    assert len(rest_pushes(server)) == 1
    assert live.sockets == []


async def test_heartbeats_and_silent_server(
    server: FakeServer, live: FakeLiveServer, store_path: str
) -> None:
    async with make_client(server, live, store_path, heartbeat=0.02) as c:
        await c.login("a@example.com", "pw")
        await c.connect_live()
        await until(lambda: len(live.sent("heartbeat")) >= 3)
        assert c.last_server_time == "2026-01-01T00:00:00Z"
        assert len(live.sockets) == 1
        live.silent = True  # no more heartbeat_ack: the client drops the dead connection
        await until(lambda: len(live.sockets) == 2)
        assert live.sockets[0].closed == (1000, "no heartbeat_ack")


# -- the default connector against a real WebSocket server ------------------------------------


async def test_websockets_connector_end_to_end(server: FakeServer, store_path: str) -> None:
    from websockets.asyncio.server import ServerConnection, serve

    seen: list[tuple[str, str | None, dict[str, Any]]] = []

    async def handler(ws: ServerConnection) -> None:
        request = ws.request
        assert request is not None
        seen.append((request.path, request.headers.get("Authorization"), {}))
        subscribe = json.loads(await ws.recv())
        seen[-1][2].update(subscribe)
        update = {"entity_type": "n", "entity_id": "a", "operation": "create", "version": 1}
        push = {"updates": [{**update, "data": {"x": 1}}], "cursor": "c1"}
        await ws.send(json.dumps({"type": "server_push", "payload": push, "timestamp": "t"}))
        await ws.recv()  # wait for the client's heartbeat, then refuse the device
        await ws.close(4403, "AUTH_005 not your device")

    async with serve(handler, "127.0.0.1", 0) as ws_server:
        port = next(iter(ws_server.sockets)).getsockname()[1]
        errors: list[dict[str, Any]] = []
        async with HomeportClient(
            f"http://127.0.0.1:{port}",
            store_path,
            "dev-a",
            transport=server.transport,
            heartbeat_interval=0.05,
        ) as c:
            c.on_live_error(errors.append)
            await c.login("a@example.com", "pw")
            await c.connect_live()
            await until(lambda: bool(errors))
            assert c.get("n", "a") == {"x": 1}
            assert c.cursor() == "c1"
            assert errors == [
                {"code": "AUTH_005", "message": "AUTH_005 not your device", "close_code": 4403}
            ]
            assert not c.is_live
    path, authorization, subscribe = seen[0]
    assert path == "/ws/mobile/sync/?device_id=dev-a"
    assert authorization == "Bearer at-1"
    assert subscribe["type"] == "subscribe"
    assert subscribe["payload"] == {"cursor": None}


async def test_websockets_connector_refused_upgrade(server: FakeServer, store_path: str) -> None:
    from websockets.asyncio.server import ServerConnection, serve
    from websockets.http11 import Request, Response

    from homeport_client import HomeportError

    def refuse(connection: ServerConnection, request: Request) -> Response:
        return connection.respond(403, "forbidden\n")

    async def handler(ws: ServerConnection) -> None:  # pragma: no cover - never reached
        await ws.close()

    async with serve(handler, "127.0.0.1", 0, process_request=refuse) as ws_server:
        port = next(iter(ws_server.sockets)).getsockname()[1]
        async with HomeportClient(
            f"http://127.0.0.1:{port}", store_path, "dev-a", transport=server.transport
        ) as c:
            await c.login("a@example.com", "pw")
            with pytest.raises(HomeportError) as caught:
                await c.connect_live()
            assert caught.value.status == 403
            assert not c.is_live
