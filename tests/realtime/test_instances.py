"""Two server instances on one database and one Redis: fan-out, inbox and presence cross over."""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path

from homeport.config import Settings
from tests.conftest import make_settings
from tests.realtime.conftest import _seed, collect, receive, running_live, send, upsert


async def test_changes_inbox_and_presence_cross_instances(
    database_url: str, redis_url: str, tmp_path: Path
) -> None:
    prefix = f"homeport-test-{uuid.uuid4().hex[:8]}"

    def settings() -> Settings:
        return make_settings(
            database_url,
            tmp_path / "data",  # one data dir: both instances share secrets.json (keys, cursors)
            redis_url=redis_url,
            redis_key_prefix=prefix,
            realtime_heartbeat_seconds=30,
        )

    first = settings()
    tenant_id = await _seed(first, "owner@acme.example.com")
    async with (
        running_live(first, tenant_id) as a,
        running_live(settings(), tenant_id) as b,
    ):
        await a.collection("tasks")
        writer = await a.login(a.owner_email, "writer-on-a")
        reader = await b.login(b.owner_email, "reader-on-b")
        async with b.connect(reader) as ws:
            await send(ws, "subscribe", {"cursor": None})
            await send(ws, "heartbeat", {})
            await receive(ws, "heartbeat_ack")
            await asyncio.sleep(0.2)  # the subscription has joined B's feed reader

            # A change pushed through A reaches the device connected to B.
            started = asyncio.get_running_loop().time()
            await a.push(writer, [upsert("t1", "from a")])
            updates, _ = await collect(ws, 1, timeout=4)
            assert [(u["entity_id"], u["operation"], u["data"]) for u in updates] == [
                ("t1", "create", {"title": "from a"})
            ]
            # Well under the readers' 2 s safety poll: the hint came through Redis.
            assert asyncio.get_running_loop().time() - started < 1.9

            # An inbox message posted on A reaches the device on B.
            posted = await a.http.post(
                f"/api/v1/devices/{reader.device_id}/inbox",
                json={"kind": "ping", "body": {"n": 1}},
                headers={"Authorization": f"Bearer {writer.token}"},
            )
            assert posted.status_code == 201, posted.text
            inbox = await receive(ws, "inbox", timeout=4)
            assert inbox["payload"]["message_id"] == posted.json()["message_id"]
            assert inbox["payload"]["body"] == {"n": 1}

            # Presence asked on A lists the device connected to B.
            listed = await a.http.get(
                "/api/v1/realtime/presence", headers={"Authorization": f"Bearer {writer.token}"}
            )
            assert listed.status_code == 200, listed.text
            assert [d["device_id"] for d in listed.json()["devices"]] == ["reader-on-b"]
