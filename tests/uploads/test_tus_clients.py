"""Interoperability with real tus clients over real sockets: tuspy (Python) and tus-js-client
(run by Node). Each uploads a random file, is interrupted at about half, resumes from the stored
upload URL with a new uploader, and the downloaded bytes must equal the original."""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import shutil
import subprocess
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from homeport.config import Settings
from tests.conftest import Harness, Tenant, make_settings, running_harness, unavailable
from tests.live_server import LiveServer
from tests.uploads.conftest import create_bucket, s3_settings

JS_DIR = Path(__file__).parent / "js"
TUS_PATH = "/api/v1/tus/"
MIB = 1024 * 1024


@dataclass
class Signed:
    harness: Harness
    tenant: Tenant
    headers: dict[str, str]


@contextlib.asynccontextmanager
async def signed_in(settings: Settings) -> AsyncIterator[Signed]:
    """A tenant and a signed-in owner, made through an in-process app on the same database
    and data directory as the live server."""
    async with running_harness(settings) as harness:
        tenant = await harness.create_tenant("acme")
        yield Signed(harness, tenant, await harness.owner_headers(tenant, "tus-client"))


def sqlite_settings(sqlite_template: Path, tmp_path: Path, **overrides: Any) -> Settings:
    target = tmp_path / "homeport.db"
    shutil.copy(sqlite_template, target)
    return make_settings(f"sqlite+aiosqlite:///{target}", tmp_path / "data", **overrides)


async def download(harness: Harness, url: str) -> bytes:
    """Through the in-process app on the same database and storage: a live-server download
    that the client closes right after the last byte can race the server's closing of the
    file (see the report on LocalStorage.read), which pytest turns into an error."""
    response = await harness.client.get(url)
    assert response.status_code == 200, response.text
    return response.content


async def check_stored(signed: Signed, file_id: str, data: bytes) -> None:
    """The file object names the original's SHA-256 and its signed URL gives the same bytes."""
    described = await signed.harness.client.get(f"/api/v1/files/{file_id}", headers=signed.headers)
    assert described.status_code == 200, described.text
    body = described.json()
    assert body["size"] == len(data)
    assert body["checksum"] == hashlib.sha256(data).hexdigest()
    assert await download(signed.harness, body["url"]) == data


# tuspy


class ReusableStream(io.BytesIO):
    """tuspy closes the stream after fingerprinting it (and leaks the file it opens for a
    path), so it gets a stream that stays readable."""

    def close(self) -> None:
        self.seek(0)


def tuspy_upload(
    base_url: str, headers: dict[str, str], data: bytes, chunk_size: int, store: Path
) -> tuple[int, dict[str, str]]:
    """Upload half with one uploader, then the rest with a new one that finds the URL in the
    URL store and the offset by HEAD. Returns that offset and the last answer's headers."""
    from tusclient.client import TusClient
    from tusclient.storage.filestorage import FileStorage

    def uploader(storage: FileStorage) -> Any:
        return TusClient(base_url + TUS_PATH, headers=headers).uploader(
            file_stream=ReusableStream(data),
            chunk_size=chunk_size,
            metadata={"filename": "inspection.bin", "filetype": "application/octet-stream"},
            store_url=True,
            url_storage=storage,
            upload_checksum=True,  # sha1 Upload-Checksum on every PATCH
        )

    storage = FileStorage(str(store))
    try:
        first = uploader(storage)
        first.upload(stop_at=len(data) // 2)
        assert first.offset < len(data)
        url = first.url
    finally:
        storage.close()

    head = httpx.head(url, headers={**headers, "Tus-Resumable": "1.0.0"}, timeout=30)
    assert head.status_code == 200, head.headers
    assert int(head.headers["Upload-Offset"]) == first.offset

    storage = FileStorage(str(store))
    try:
        second = uploader(storage)
        assert second.url == url  # found in the store, not created anew
        resumed_from = int(second.offset)
        second.upload()
        assert second.offset == len(data)
        return resumed_from, dict(second.request.response_headers)
    finally:
        storage.close()


async def run_tuspy(settings: Settings, tmp_path: Path, size: int, chunk_size: int) -> None:
    data = os.urandom(size)
    async with signed_in(settings) as signed:
        with LiveServer(settings) as server:
            resumed_from, last = tuspy_upload(
                server.base_url, signed.headers, data, chunk_size, tmp_path / "tus-urls.json"
            )
            assert 0 < resumed_from < size
            assert resumed_from >= size // 2 - chunk_size
            file_id = last["homeport-file-id"]
            assert await download(signed.harness, last["homeport-file-url"]) == data
            await check_stored(signed, file_id, data)


async def test_tuspy_interrupted_and_resumed_on_sqlite_and_local_directory(
    sqlite_template: Path, tmp_path: Path
) -> None:
    settings = sqlite_settings(sqlite_template, tmp_path)
    await run_tuspy(settings, tmp_path, size=3 * MIB + 12345, chunk_size=256 * 1024)


async def test_tuspy_resumes_after_a_server_restart(sqlite_template: Path, tmp_path: Path) -> None:
    """The half-done upload lives in the database and storage, not in the process."""
    from tusclient.client import TusClient

    settings = sqlite_settings(sqlite_template, tmp_path)
    data = os.urandom(2 * MIB + 7)
    async with signed_in(settings) as signed:
        with LiveServer(settings) as server:
            first = TusClient(server.base_url + TUS_PATH, headers=signed.headers).uploader(
                file_stream=io.BytesIO(data), chunk_size=512 * 1024
            )
            first.upload(stop_at=MIB)
            url, offset = first.url, first.offset
        assert offset == MIB
        with LiveServer(settings) as restarted:
            # The URL names the old port; the upload id is what survives.
            moved = restarted.base_url + TUS_PATH + url.rsplit("/", 1)[1]
            second = TusClient(restarted.base_url + TUS_PATH, headers=signed.headers).uploader(
                file_stream=io.BytesIO(data), url=moved, chunk_size=512 * 1024
            )
            assert second.offset == MIB
            second.upload()
            last = second.request.response_headers
            await check_stored(signed, last["homeport-file-id"], data)


async def test_tuspy_interrupted_and_resumed_on_postgresql_and_s3(
    postgres_url: str, s3_server: str, tmp_path: Path
) -> None:
    from tests.conftest import empty_all_tables

    await empty_all_tables(postgres_url)
    settings = make_settings(postgres_url, tmp_path / "data", **s3_settings(s3_server))
    await create_bucket(settings)
    # 3 MiB client chunks against 5 MiB S3 parts: the server buffers the remainder between
    # PATCHes, and the interruption falls inside a part.
    await run_tuspy(settings, tmp_path, size=11 * MIB + 321, chunk_size=3 * MIB)


# tus-js-client (Node)


def node_or_skip() -> str:
    node = shutil.which("node")
    if node is None:
        unavailable("node", "not on PATH")
    if not (JS_DIR / "node_modules" / "tus-js-client").is_dir():
        unavailable("tus-js-client", f"run `npm ci` in {JS_DIR.relative_to(Path.cwd())}")
    assert node is not None
    return node


async def test_tus_js_client_aborted_at_half_and_resumed(
    sqlite_template: Path, tmp_path: Path
) -> None:
    node = node_or_skip()
    settings = sqlite_settings(sqlite_template, tmp_path)
    data = os.urandom(4 * MIB + 999)
    source = tmp_path / "delivery.bin"
    source.write_bytes(data)
    async with signed_in(settings) as signed:
        with LiveServer(settings) as server:
            completed = subprocess.run(
                [
                    node,
                    str(JS_DIR / "upload.mjs"),
                    "--endpoint",
                    server.base_url + TUS_PATH,
                    "--file",
                    str(source),
                    "--chunk-size",
                    str(MIB),
                    "--header",
                    f"Authorization: {signed.headers['Authorization']}",
                ],
                capture_output=True,
                text=True,
                timeout=90,
                check=False,
            )
            assert completed.returncode == 0, completed.stderr
            result = json.loads(completed.stdout.strip().splitlines()[-1])
            assert result["size"] == len(data)
            assert result["url"].startswith(server.base_url + TUS_PATH)
            # The abort happened mid-request past half; the server kept what had arrived.
            assert 0 < result["resumed_from"] < len(data)
            assert await download(signed.harness, result["file_url"]) == data
            await check_stored(signed, result["file_id"], data)
