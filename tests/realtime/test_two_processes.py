"""Two `homeport serve` processes on one PostgreSQL database and one Redis."""

from __future__ import annotations

import asyncio
import os
import re
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import websockets

from tests.realtime.conftest import receive, send

pytestmark = pytest.mark.postgres_only


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def _wait_ready(base: str, process: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + 60
    while True:
        try:
            if httpx.get(f"{base}/health/ready").status_code == 200:
                return
        except httpx.TransportError:
            pass
        assert process.poll() is None, log.read_text()
        assert time.monotonic() < deadline, "not ready within 60 s"
        time.sleep(0.2)


@pytest.fixture
def two_servers(
    database_url: str, redis_url: str, tmp_path: Path
) -> Iterator[tuple[str, str, str]]:
    """Instances A and B (separate processes, shared data dir for the secrets); yields their
    URLs and the owner's generated password."""
    env = {
        **os.environ,
        "HOMEPORT_DATABASE_URL": database_url,
        "HOMEPORT_REDIS_URL": redis_url,
        "HOMEPORT_REDIS_KEY_PREFIX": f"homeport-test-{uuid.uuid4().hex[:8]}",
        "HOMEPORT_ARGON2_MEMORY_COST_KIB": "8192",
        "HOMEPORT_RATE_LIMIT_LOGIN": "1000/minute",
    }
    data = tmp_path / "data"
    processes: list[subprocess.Popen[bytes]] = []
    urls = []
    try:
        for name in ("a", "b"):
            port = _free_port()
            log = tmp_path / f"{name}.log"
            with log.open("w") as output:
                process = subprocess.Popen(
                    [
                        sys.executable,
                        "-m",
                        "homeport.cli",
                        "serve",
                        "--port",
                        str(port),
                        "--data-dir",
                        str(data),
                    ],
                    env=env,
                    stdout=output,
                    stderr=subprocess.STDOUT,
                )
            processes.append(process)
            urls.append(f"http://127.0.0.1:{port}")
            _wait_ready(urls[-1], process, log)
        printed = re.search(r"password: (\S+)", (tmp_path / "a.log").read_text())
        assert printed, (tmp_path / "a.log").read_text()
        yield urls[0], urls[1], printed.group(1)
    finally:
        for process in processes:
            process.terminate()
        for process in processes:
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()


async def test_a_change_and_an_inbox_message_cross_processes(
    two_servers: tuple[str, str, str],
) -> None:
    url_a, url_b, password = two_servers
    async with httpx.AsyncClient(timeout=30) as http:

        async def login(base: str, device: str) -> str:
            answer = await http.post(
                f"{base}/api/v1/auth/login",
                json={"email": "admin@example.com", "password": password, "device_id": device},
            )
            assert answer.status_code == 200, answer.text
            token: str = answer.json()["access_token"]
            return token

        writer = await login(url_a, "writer-on-a")
        reader = await login(url_b, "reader-on-b")
        headers = {"Authorization": f"Bearer {writer}"}
        created = await http.post(
            f"{url_a}/api/v1/collections",
            json={"name": "tasks", "read": "tenant", "write": "tenant"},
            headers=headers,
        )
        assert created.status_code == 201, created.text
        ws_url = url_b.replace("http://", "ws://") + "/ws/mobile/sync/?device_id=reader-on-b"
        async with websockets.connect(
            ws_url, additional_headers={"Authorization": f"Bearer {reader}"}
        ) as ws:
            await send(ws, "subscribe", {"cursor": None})
            await send(ws, "heartbeat", {})
            await receive(ws, "heartbeat_ack")
            await asyncio.sleep(0.3)
            started = time.monotonic()
            pushed = await http.post(
                f"{url_a}/api/v1/sync/push",
                json={
                    "idempotency_key": "x-1",
                    "changes": [
                        {"collection": "tasks", "id": "t1", "op": "upsert", "data": {"n": 1}}
                    ],
                },
                headers=headers,
            )
            assert pushed.status_code == 200, pushed.text
            message = await receive(ws, "server_push", timeout=5)
            assert [u["entity_id"] for u in message["payload"]["updates"]] == ["t1"]
            assert time.monotonic() - started < 1.9  # through Redis, not the 2 s safety poll
            posted = await http.post(
                f"{url_a}/api/v1/devices/reader-on-b/inbox",
                json={"kind": "ping", "body": {}},
                headers=headers,
            )
            assert posted.status_code == 201, posted.text
            inbox = await receive(ws, "inbox", timeout=5)
            assert inbox["payload"]["message_id"] == posted.json()["message_id"]
