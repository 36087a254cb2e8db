from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from homeport_client import HomeportClient
from homeport_fake import FakeServer


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def server() -> FakeServer:
    return FakeServer()


@pytest.fixture
def store_path(tmp_path: Path) -> str:
    return str(tmp_path / "device.sqlite")


@pytest.fixture
async def client(server: FakeServer, store_path: str) -> AsyncIterator[HomeportClient]:
    async with HomeportClient(
        "http://homeport.test", store_path, "dev-a", transport=server.transport
    ) as c:
        await c.login("a@example.com", "pw")
        yield c
