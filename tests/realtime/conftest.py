"""Realtime tests run a real server (uvicorn in a thread) and real WebSocket clients."""

from __future__ import annotations

import asyncio
import contextlib
import json
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import websockets
from websockets.asyncio.client import ClientConnection

from homeport.config import Settings
from tests.conftest import make_settings, seed_tenant_owner
from tests.live_server import LiveServer

PASSWORD = "realtime-password-1"
TASKS = {"type": "object", "properties": {"title": {"type": "string"}}}


@dataclass
class Device:
    device_id: str
    token: str
    user_id: str


@dataclass
class Live:
    server: LiveServer
    settings: Settings
    http: httpx.AsyncClient
    tenant_id: str
    owner_email: str

    @property
    def ws_url(self) -> str:
        return self.server.base_url.replace("http://", "ws://") + "/ws/mobile/sync/"

    async def login(self, email: str, device_id: str | None = None) -> Device:
        device_id = device_id or f"dev-{uuid.uuid4().hex[:8]}"
        answer = await self.http.post(
            "/api/v1/auth/login",
            json={"email": email, "password": PASSWORD, "device_id": device_id},
        )
        assert answer.status_code == 200, answer.text
        token = answer.json()["access_token"]
        me = await self.http.get("/api/v1/auth/me", headers={"Authorization": f"Bearer {token}"})
        return Device(device_id, token, me.json()["user_id"])

    async def member(self, email: str, role: str = "member") -> None:
        owner = await self.login(self.owner_email, "owner-admin")
        answer = await self.http.post(
            f"/api/v1/tenants/{self.tenant_id}/members",
            json={"email": email, "role": role, "password": PASSWORD},
            headers={"Authorization": f"Bearer {owner.token}"},
        )
        assert answer.status_code == 201, answer.text

    async def collection(self, name: str, **spec: Any) -> None:
        owner = await self.login(self.owner_email, "owner-admin")
        body = {"name": name, "schema": TASKS, "read": "tenant", "write": "tenant", **spec}
        answer = await self.http.post(
            "/api/v1/collections", json=body, headers={"Authorization": f"Bearer {owner.token}"}
        )
        assert answer.status_code == 201, answer.text

    async def push(self, device: Device, changes: list[dict[str, Any]]) -> dict[str, Any]:
        answer = await self.http.post(
            "/api/v1/sync/push",
            json={"idempotency_key": uuid.uuid4().hex, "changes": changes},
            headers={"Authorization": f"Bearer {device.token}"},
        )
        assert answer.status_code == 200, answer.text
        body: dict[str, Any] = answer.json()
        return body

    def connect(self, device: Device, **query: str) -> Any:
        params = "&".join(f"{k}={v}" for k, v in {"device_id": device.device_id, **query}.items())
        return websockets.connect(
            f"{self.ws_url}?{params}",
            additional_headers={"Authorization": f"Bearer {device.token}"},
        )


async def send(ws: ClientConnection, kind: str, payload: Any) -> None:
    await ws.send(
        json.dumps({"type": kind, "payload": payload, "timestamp": "2026-01-01T00:00:00Z"})
    )


async def receive(ws: ClientConnection, kind: str, timeout: float = 5.0) -> dict[str, Any]:
    """The next message of this type (others of other types are skipped)."""
    import asyncio

    async def wait() -> dict[str, Any]:
        while True:
            message: dict[str, Any] = json.loads(await ws.recv())
            if message["type"] == kind:
                return message

    return await asyncio.wait_for(wait(), timeout)


async def _seed(settings: Settings, email: str) -> str:
    return await seed_tenant(settings, "acme", email)


@pytest.fixture
def live_settings(database_url: str, tmp_path: Path) -> Settings:
    return make_settings(database_url, tmp_path / "data", realtime_heartbeat_seconds=30)


@pytest.fixture
def live_server(live_settings: Settings) -> Iterator[LiveServer]:
    with LiveServer(live_settings) as server:
        yield server


@pytest.fixture
async def live(live_server: LiveServer, live_settings: Settings) -> AsyncIterator[Live]:
    email = "owner@acme.example.com"
    tenant_id = await _seed(live_settings, email)
    async with httpx.AsyncClient(base_url=live_server.base_url, timeout=30) as http:
        yield Live(live_server, live_settings, http, tenant_id, email)


# Helpers for the fan-out, limits and multi-instance tests (built on the fixtures above).


async def seed_tenant(settings: Settings, slug: str, email: str) -> str:
    """A tenant with its owner (password ``PASSWORD``), made straight in the database."""
    return await seed_tenant_owner(settings.resolved_database_url, slug, email, PASSWORD)


@contextlib.asynccontextmanager
async def running_live(
    settings: Settings, tenant_id: str | None = None, owner_email: str = "owner@acme.example.com"
) -> AsyncIterator[Live]:
    """A live server on ``settings``; seeds the acme tenant unless ``tenant_id`` is given."""
    with LiveServer(settings) as server:
        if tenant_id is None:
            tenant_id = await _seed(settings, owner_email)
        async with httpx.AsyncClient(base_url=server.base_url, timeout=30) as http:
            yield Live(server, settings, http, tenant_id, owner_email)


def upsert(record_id: str, title: str, collection: str = "tasks", **extra: Any) -> dict[str, Any]:
    return {
        "collection": collection,
        "id": record_id,
        "op": "upsert",
        "data": {"title": title},
        **extra,
    }


async def collect(
    ws: ClientConnection, count: int, timeout: float = 5.0
) -> tuple[list[dict[str, Any]], str | None]:
    """``server_push`` updates until ``count`` arrived (fails on timeout); the last cursor."""
    updates: list[dict[str, Any]] = []
    cursor: str | None = None
    while len(updates) < count:
        message = await receive(ws, "server_push", timeout)
        updates.extend(message["payload"]["updates"])
        cursor = message["payload"]["cursor"]
    return updates, cursor


async def quiet(ws: ClientConnection, seconds: float) -> list[dict[str, Any]]:
    """Every message received within ``seconds`` (used to prove nothing else arrives)."""
    got: list[dict[str, Any]] = []
    deadline = asyncio.get_running_loop().time() + seconds
    while (left := deadline - asyncio.get_running_loop().time()) > 0:
        try:
            got.append(json.loads(await asyncio.wait_for(ws.recv(), left)))
        except TimeoutError:
            break
    return got


async def close_of(ws: ClientConnection, timeout: float = 5.0) -> tuple[int, str]:
    """Read (and drop) messages until the server closes; its close code and reason."""

    async def wait() -> tuple[int, str]:
        try:
            while True:
                await ws.recv()
        except websockets.ConnectionClosed as closed:
            frame = closed.rcvd
        if frame is None:
            raise AssertionError("closed without a close frame from the server")
        return frame.code, frame.reason

    return await asyncio.wait_for(wait(), timeout)


async def pull_all(live: Live, device: Device, **query: str) -> list[dict[str, Any]]:
    """Every change the device may see, by REST pull from the start, in feed order."""
    changes: list[dict[str, Any]] = []
    cursor: str | None = None
    while True:
        params = {**query, **({"cursor": cursor} if cursor else {})}
        answer = await live.http.get(
            "/api/v1/sync/pull", params=params, headers={"Authorization": f"Bearer {device.token}"}
        )
        assert answer.status_code == 200, answer.text
        body = answer.json()
        changes.extend(body["changes"])
        cursor = body["cursor"]
        if not body["has_more"]:
            return changes
