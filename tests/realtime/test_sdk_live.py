"""The Python SDK's live mode against the real server (real HTTP and WebSocket)."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from homeport_client import HomeportClient

from tests.realtime.conftest import PASSWORD, Live


async def _until(check: Any, timeout: float = 5.0) -> None:
    async def poll() -> None:
        while not check():
            await asyncio.sleep(0.02)

    await asyncio.wait_for(poll(), timeout)


async def test_live_replica_follows_other_devices(live: Live, tmp_path: Path) -> None:
    await live.collection("tasks")
    inbox: list[dict[str, Any]] = []
    async with (
        HomeportClient(live.server.base_url, str(tmp_path / "a.db"), "phone-a") as phone,
        HomeportClient(live.server.base_url, str(tmp_path / "b.db"), "tablet-b") as tablet,
    ):
        await phone.login(live.owner_email, PASSWORD)
        await tablet.login(live.owner_email, PASSWORD)
        phone.on_inbox(inbox.append)
        await phone.connect_live()
        await tablet.connect_live()
        assert phone.is_live

        tablet.put("tasks", "t1", {"title": "from the tablet"})
        await tablet.push()  # REST
        await _until(lambda: phone.get("tasks", "t1") is not None)
        assert phone.get("tasks", "t1") == {"title": "from the tablet"}

        phone.patch("tasks", "t1", {"title": "edited on the phone"})
        report = await phone.live_sync()  # over the WebSocket
        assert report.applied == 1
        await _until(
            lambda: (tablet.get("tasks", "t1") or {}).get("title") == "edited on the phone"
        )
        assert tablet.version("tasks", "t1") == 2

        admin = await live.login(live.owner_email, "console")
        posted = await live.http.post(
            "/api/v1/devices/phone-a/inbox",
            json={"kind": "refresh_config", "body": {"level": 2}},
            headers={"Authorization": f"Bearer {admin.token}"},
        )
        assert posted.status_code == 201, posted.text
        await _until(lambda: len(inbox) == 1)
        assert inbox[0]["kind"] == "refresh_config"
        assert inbox[0]["body"] == {"level": 2}
        await phone.disconnect_live()
        await phone.connect_live()  # acknowledged: not delivered again
        await asyncio.sleep(0.3)
        assert len(inbox) == 1
