"""Upload tests run on both storage backends: a local directory and a real S3 API (moto)."""

from __future__ import annotations

import hashlib
import re
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import event

from homeport.config import Settings
from homeport.kit.storage_s3 import S3Storage
from tests.conftest import (
    Harness,
    Tenant,
    client_without_direct_routes,
    make_settings,
    running_harness,
)
from tests.s3_server import ACCESS_KEY_ID, REGION, SECRET_ACCESS_KEY


def s3_settings(endpoint: str) -> dict[str, Any]:
    return {
        "storage_backend": "s3",
        "s3_endpoint_url": endpoint,
        "s3_bucket": f"homeport-{uuid.uuid4().hex[:12]}",
        "s3_region": REGION,
        "s3_access_key_id": ACCESS_KEY_ID,
        "s3_secret_access_key": SECRET_ACCESS_KEY,
    }


async def create_bucket(settings: Settings) -> None:
    storage = S3Storage(
        bucket=settings.s3_bucket or "",
        endpoint_url=settings.s3_endpoint_url,
        region=settings.s3_region,
        access_key_id=settings.s3_access_key_id,
        secret_access_key=settings.s3_secret_access_key,
        create_bucket=True,
    )
    await storage.start()
    await storage.close()


@pytest.fixture(params=["fs", "s3"])
def storage_backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
async def upload_settings(
    storage_backend: str, database_url: str, tmp_path: Path, request: pytest.FixtureRequest
) -> Settings:
    overrides: dict[str, Any] = {"uploads_chunk_size_bytes": 64 * 1024}
    if storage_backend == "s3":
        overrides.update(s3_settings(request.getfixturevalue("s3_server")))
    settings = make_settings(database_url, tmp_path / "data", **overrides)
    if storage_backend == "s3":
        await create_bucket(settings)
    return settings


@dataclass
class Uploader:
    """A signed-in device of one tenant and helpers for the REST chunk protocol."""

    harness: Harness
    tenant: Tenant
    headers: dict[str, str]

    @property
    def unit(self) -> int:
        """The chunk size of this backend (S3 parts are at least 5 MiB)."""
        return 5 * 1024 * 1024 if self.harness.settings.storage_backend == "s3" else 64 * 1024

    @property
    def client(self) -> Any:
        return self.harness.client

    async def init(self, data: bytes, **fields: Any) -> dict[str, Any]:
        body = {
            "filename": "photo.bin",
            "total_size": len(data),
            "mime_type": "application/octet-stream",
            "file_hash": hashlib.sha256(data).hexdigest(),
            **fields,
        }
        response = await self.client.post("/api/v1/uploads/init", json=body, headers=self.headers)
        assert response.status_code == 201, response.text
        result: dict[str, Any] = response.json()
        return result

    async def chunk(
        self, upload_id: str, index: int, data: bytes, checksum: str | None = None
    ) -> Any:
        return await self.client.post(
            f"/api/v1/uploads/{upload_id}/chunk/{index}",
            content=data,
            headers={
                **self.headers,
                "Content-Type": "application/octet-stream",
                "X-Chunk-Checksum": checksum or hashlib.sha256(data).hexdigest(),
            },
        )

    async def send_all(
        self, upload: dict[str, Any], data: bytes, order: list[int] | None = None
    ) -> None:
        size = upload["chunk_size"]
        for index in order if order is not None else range(upload["total_chunks"]):
            response = await self.chunk(
                upload["upload_id"], index, data[index * size : (index + 1) * size]
            )
            assert response.status_code == 200, response.text

    async def finalize(self, upload_id: str) -> Any:
        return await self.client.post(f"/api/v1/uploads/{upload_id}/finalize", headers=self.headers)

    async def download(self, url: str, **headers: str) -> Any:
        return await self.client.get(url, headers=headers)


async def make_uploader(harness: Harness, slug: str = "acme", device: str = "phone-1") -> Uploader:
    tenant = harness.tenants.get(slug) or await harness.create_tenant(slug)
    return Uploader(harness, tenant, await harness.owner_headers(tenant, device))


@pytest.fixture
async def upload_harness(upload_settings: Settings) -> AsyncIterator[Harness]:
    async with running_harness(upload_settings) as running:
        yield running


@pytest.fixture
async def uploader(upload_harness: Harness) -> Uploader:
    return await make_uploader(upload_harness)


@pytest.fixture
async def elsewhere(upload_harness: Harness) -> AsyncIterator[httpx.AsyncClient]:
    """Another app on the same database and storage: another process, which the harness's
    app hears nothing from."""
    async with client_without_direct_routes(upload_harness.settings) as client:
        yield client


@contextmanager
def counted_transactions(harness: Harness) -> Iterator[list[int]]:
    """The number of transactions the app's database begins, in ``[0]``."""
    count = [0]
    engine = harness.state.database.engine.sync_engine

    def began(_connection: Any) -> None:
        count[0] += 1

    event.listen(engine, "begin", began)
    try:
        yield count
    finally:
        event.remove(engine, "begin", began)


_TRACE = re.compile(r'"trace_id":"[^"]*"')


def scrubbed(text: str, upload_ids: list[str]) -> str:
    """An answer's body with what differs between two uploads of one case (their ids, the
    trace id) replaced, so that the answers of two paths can be compared."""
    for upload_id in upload_ids:
        text = text.replace(upload_id, "<upload>")
    return _TRACE.sub("<trace>", text)


def code_of(answer: tuple[Any, ...]) -> tuple[int, str | None]:
    """(status, problem code) of a normalised answer: its status first, its body last."""
    match = re.search(r'"code":"([A-Z_0-9]+)"', answer[-1])
    return answer[0], match.group(1) if match else None
