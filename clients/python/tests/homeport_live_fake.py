"""An in-memory stand-in for the live (WebSocket) endpoint, for the SDK's own unit tests.

It shares state (records, change log, tokens, idempotency keys) with :class:`FakeServer`, so a
batch sent over the socket and resent over REST is answered once.
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs, urlsplit

from homeport_client import LiveConnectionClosed
from homeport_fake import FakeServer, body_identity

Close = tuple[int, str]


def message(kind: str, payload: dict[str, Any]) -> str:
    return json.dumps({"type": kind, "payload": payload, "timestamp": "2026-01-01T00:00:00Z"})


class FakeSocket:
    """The client's end of one connection."""

    def __init__(self, server: FakeLiveServer, url: str, headers: dict[str, str]) -> None:
        self.server = server
        self.url = url
        self.headers = headers
        self.device_id = parse_qs(urlsplit(url).query)["device_id"][0]
        self.incoming: asyncio.Queue[str | Close] = asyncio.Queue()
        self.received: list[dict[str, Any]] = []  # what the client sent
        self.pushed: list[dict[str, Any]] = []  # what the server sent
        self.closed: Close | None = None
        self.subscribed = False
        self.collections: set[str] | None = None

    # -- WebSocketLike ----------------------------------------------------------------------

    async def send(self, text: str) -> None:
        if self.closed is not None:
            raise LiveConnectionClosed(*self.closed)
        parsed = json.loads(text)
        assert set(parsed) == {"type", "payload", "timestamp"}
        assert parsed["timestamp"].endswith("Z")
        self.received.append(parsed)
        self.server.log.append(parsed)
        self.server.handle(self, parsed["type"], parsed["payload"], text)

    async def recv(self) -> str:
        item = await self.incoming.get()
        if isinstance(item, tuple):
            self.closed = item
            raise LiveConnectionClosed(*item)
        return item

    async def close(self, code: int = 1000, reason: str = "") -> None:
        if self.closed is None:
            self.closed = (code, reason)
            self.incoming.put_nowait((code, reason))

    # -- server side ------------------------------------------------------------------------

    @property
    def open(self) -> bool:
        return self.closed is None

    def push(self, kind: str, payload: dict[str, Any]) -> None:
        if self.closed is None:
            self.pushed.append({"type": kind, "payload": payload})
            self.incoming.put_nowait(message(kind, payload))

    def close_from_server(self, code: int, reason: str = "") -> None:
        """The server closes: the client sees it on its next ``recv()``."""
        self.incoming.put_nowait((code, reason))


@dataclass
class FakeLiveServer:
    http: FakeServer
    page_size: int = 2
    sockets: list[FakeSocket] = field(default_factory=list)
    log: list[dict[str, Any]] = field(default_factory=list)  # every message clients sent
    sync_texts: list[str] = field(default_factory=list)  # raw ``sync`` messages
    acks: list[str] = field(default_factory=list)
    unacked: dict[str, dict[str, Any]] = field(default_factory=dict)  # redelivered on subscribe
    # failure injection
    close_on_connect: list[Close] = field(default_factory=list)  # next connections close so
    lose_sync_answers: int = 0  # apply the sync, then drop the connection without an answer
    silent: bool = False  # no heartbeat_ack
    refuse: Exception | None = None  # raised by connect()

    async def connect(self, url: str, headers: dict[str, str]) -> FakeSocket:
        if self.refuse is not None:
            raise self.refuse
        socket = FakeSocket(self, url, headers)
        self.sockets.append(socket)
        token = headers.get("Authorization", "").removeprefix("Bearer ")
        if self.close_on_connect:
            socket.close_from_server(*self.close_on_connect.pop(0))
        elif token in self.http.expired_tokens:
            socket.close_from_server(4401, "AUTH_002 Token expired")
        elif token != self.http.access_token:
            socket.close_from_server(4401, "AUTH_001 Invalid token")
        return socket

    @property
    def current(self) -> FakeSocket:
        return self.sockets[-1]

    def sent(self, kind: str) -> list[dict[str, Any]]:
        """Payloads of the messages of ``kind`` the clients sent."""
        return [m["payload"] for m in self.log if m["type"] == kind]

    # -- what other devices do --------------------------------------------------------------

    def write(self, collection: str, record_id: str, data: dict[str, Any] | None) -> None:
        """A change by another device, pushed to every subscribed connection."""
        self.http.write(collection, record_id, data)
        for socket in self.sockets:
            wanted = socket.collections is None or collection in socket.collections
            if socket.open and socket.subscribed and wanted:
                socket.push(
                    "server_push",
                    {
                        "updates": [self._update(collection, record_id)],
                        "cursor": str(len(self.http.log)),
                    },
                )

    def send_inbox(self, message_id: str, body: dict[str, Any] | None = None) -> None:
        payload = {
            "message_id": message_id,
            "kind": "notice",
            "body": body or {},
            "expires_at": "2099-01-01T00:00:00Z",
        }
        self.unacked[message_id] = payload
        self.current.push("inbox", payload)

    # -- handler ----------------------------------------------------------------------------

    def handle(self, socket: FakeSocket, kind: str, payload: dict[str, Any], text: str) -> None:
        if kind == "subscribe":
            self._subscribe(socket, payload)
        elif kind == "sync":
            self.sync_texts.append(text)
            self._sync(socket, payload)
        elif kind == "heartbeat":
            assert isinstance(payload["client_time"], str)
            if not self.silent:
                socket.push("heartbeat_ack", {"server_time": "2026-01-01T00:00:00Z"})
        elif kind == "ack":
            for message_id in payload["message_ids"]:
                self.acks.append(message_id)
                self.unacked.pop(message_id, None)

    def _update(self, collection: str, record_id: str) -> dict[str, Any]:
        record = self.http.records[(collection, record_id)]
        return {
            "entity_type": collection,
            "entity_id": record_id,
            "operation": "delete" if record.deleted else "update",
            "version": record.version,
            "data": record.data,
        }

    def _subscribe(self, socket: FakeSocket, payload: dict[str, Any]) -> None:
        socket.subscribed = True
        wanted = payload.get("collections")
        socket.collections = None if wanted is None else set(wanted)
        position = int(payload.get("cursor") or 0)
        log = self.http.log
        while position < len(log):
            updates: list[dict[str, Any]] = []
            while position < len(log) and len(updates) < self.page_size:
                collection, record_id = log[position]
                position += 1
                if socket.collections is None or collection in socket.collections:
                    updates.append(self._update(collection, record_id))
            socket.push("server_push", {"updates": updates, "cursor": str(position)})
        for pending in self.unacked.values():
            socket.push("inbox", pending)

    def _sync(self, socket: FakeSocket, body: dict[str, Any]) -> None:
        key = body["idempotency_key"]
        stored = self.http.idempotency.get(key)
        if stored is not None:
            identity, answer = stored
            if identity != body_identity(body):
                socket.push("error", {"code": "SYNC_003", "message": "key reused"})
                return
        else:
            answer = self.http._apply(body)
            self.http.idempotency[key] = (body_identity(body), answer)
        if self.lose_sync_answers:
            self.lose_sync_answers -= 1
            socket.close_from_server(1006)
            return
        socket.push("sync_response", answer)
