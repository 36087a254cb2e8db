"""tus 1.0 at /api/v1/tus/: core, creation, creation-with-upload, expiration, checksum and
termination, checked header by header against the in-process app (SQLite and PostgreSQL, local
directory; some on S3), and concurrency against a live server."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import os
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from homeport.app import build_registry
from homeport.config import Settings
from homeport.kit.clock import utcnow
from homeport.kit.disk import boot_id
from homeport.kit.jobs import JobRunner
from homeport.models.files import UploadSession
from homeport.uploads.repository import UploadRepository
from tests.conftest import Harness, make_settings, running_harness
from tests.live_server import LiveServer
from tests.uploads.conftest import create_bucket, make_uploader, s3_settings

TUS = "/api/v1/tus/"
VERSION = {"Tus-Resumable": "1.0.0"}
OFFSET_TYPE = {"Content-Type": "application/offset+octet-stream"}
MIB = 1024 * 1024


def metadata(**values: str) -> str:
    return ",".join(
        f"{key} {base64.b64encode(value.encode()).decode()}" for key, value in values.items()
    )


def digest_header(algorithm: str, data: bytes) -> str:
    return f"{algorithm} {base64.b64encode(hashlib.new(algorithm, data).digest()).decode()}"


class Tus:
    """One signed-in device speaking tus to the harness."""

    def __init__(self, harness: Harness, headers: dict[str, str]) -> None:
        self.harness = harness
        self.headers = {**headers, **VERSION}

    @property
    def client(self) -> httpx.AsyncClient:
        return self.harness.client

    async def create(
        self, length: int, body: bytes | None = None, **headers: str
    ) -> httpx.Response:
        extra = {"Upload-Length": str(length), "Upload-Metadata": metadata(filename="v.bin")}
        if body is not None:
            extra.update(OFFSET_TYPE)
        return await self.client.post(
            TUS, content=body, headers={**self.headers, **extra, **headers}
        )

    async def new(self, length: int) -> str:
        created = await self.create(length)
        assert created.status_code == 201, created.text
        return created.headers["Location"]

    async def head(self, url: str, **headers: str) -> httpx.Response:
        return await self.client.head(url, headers={**self.headers, **headers})

    async def patch(self, url: str, offset: int, body: bytes, **headers: str) -> httpx.Response:
        return await self.client.patch(
            url,
            content=body,
            headers={**self.headers, **OFFSET_TYPE, "Upload-Offset": str(offset), **headers},
        )

    async def delete(self, url: str) -> httpx.Response:
        return await self.client.delete(url, headers=self.headers)

    async def offset(self, url: str) -> int:
        head = await self.head(url)
        assert head.status_code == 200, head.headers
        return int(head.headers["Upload-Offset"])


async def tus_for(harness: Harness, slug: str = "acme", device: str = "phone-1") -> Tus:
    uploader = await make_uploader(harness, slug, device)
    return Tus(harness, uploader.headers)


@pytest.fixture
async def tus(harness: Harness) -> Tus:
    return await tus_for(harness)


def upload_id_of(url: str) -> str:
    return url.rstrip("/").rsplit("/", 1)[1]


async def run_jobs(harness: Harness) -> None:
    runner = JobRunner(
        harness.state.database, build_registry(harness.settings, lambda: harness.state.storage)
    )
    while await runner.run_once():
        pass


def staged_path(harness: Harness, tenant_id: str, upload_id: str) -> Path:
    return harness.settings.resolved_storage_dir / "t" / tenant_id / "u" / upload_id


# OPTIONS and the version header


async def test_options_announces_version_extensions_and_limits(harness: Harness) -> None:
    # Discovery needs neither a token nor Tus-Resumable.
    response = await harness.client.options(TUS)
    assert response.status_code == 204
    assert response.headers["Tus-Resumable"] == "1.0.0"
    assert response.headers["Tus-Version"] == "1.0.0"
    extensions = set(response.headers["Tus-Extension"].split(","))
    assert extensions == {
        "creation",
        "creation-with-upload",
        "expiration",
        "checksum",
        "termination",
    }
    assert set(response.headers["Tus-Checksum-Algorithm"].split(",")) == {"sha1", "sha256"}
    assert int(response.headers["Tus-Max-Size"]) == harness.settings.uploads_max_file_bytes
    assert response.content == b""


@pytest.mark.parametrize("version", [None, "0.2.2", "1.0"])
async def test_a_missing_or_other_tus_version_is_412(tus: Tus, version: str | None) -> None:
    url = await tus.new(10)
    headers = {key: value for key, value in tus.headers.items() if key != "Tus-Resumable"}
    if version is not None:
        headers["Tus-Resumable"] = version
    for response in (
        await tus.client.post(TUS, headers={**headers, "Upload-Length": "10"}),
        await tus.client.head(url, headers=headers),
        await tus.client.patch(
            url, content=b"x", headers={**headers, **OFFSET_TYPE, "Upload-Offset": "0"}
        ),
    ):
        assert response.status_code == 412
        assert response.headers["Tus-Version"] == "1.0.0"
        assert response.headers["Tus-Resumable"] == "1.0.0"
    if version is None:
        # Nothing happened: the upload is still at 0.
        assert await tus.offset(url) == 0


# Creation, HEAD


async def test_creation_and_head(tus: Tus) -> None:
    created = await tus.create(
        1234, **{"Upload-Metadata": metadata(filename="ä photo.jpg", filetype="image/jpeg")}
    )
    assert created.status_code == 201, created.text
    location = created.headers["Location"]
    assert location.startswith("http://homeport.test/api/v1/tus/")
    assert created.headers["Tus-Resumable"] == "1.0.0"
    head = await tus.head(location)
    assert head.status_code == 200
    assert head.content == b""
    assert head.headers["Cache-Control"] == "no-store"
    assert head.headers["Upload-Offset"] == "0"
    assert head.headers["Upload-Length"] == "1234"
    assert "GMT" in head.headers["Upload-Expires"]
    echoed = dict(pair.split(" ") for pair in head.headers["Upload-Metadata"].split(","))
    assert base64.b64decode(echoed["filename"]).decode() == "ä photo.jpg"
    assert base64.b64decode(echoed["filetype"]).decode() == "image/jpeg"


@pytest.mark.parametrize(
    "headers",
    [
        {"Upload-Length": "-1"},
        {"Upload-Length": "ten"},
        {"Upload-Length": "0"},
        {"Upload-Length": "10", "Upload-Metadata": "filename not*base64"},
        {"Upload-Length": "10", "Upload-Metadata": metadata(sha256="abc")},
        {"Upload-Length": "10", "Upload-Metadata": metadata(access="world")},
    ],
)
async def test_bad_creation_headers_are_400(tus: Tus, headers: dict[str, str]) -> None:
    response = await tus.client.post(TUS, headers={**tus.headers, **headers})
    assert response.status_code == 400, response.text
    assert response.json()["code"] == "UPLOAD_001"
    assert response.headers["Tus-Resumable"] == "1.0.0"


async def test_creation_above_the_size_limit_is_413(tus: Tus) -> None:
    too_big = tus.harness.settings.uploads_max_file_bytes + 1
    response = await tus.client.post(TUS, headers={**tus.headers, "Upload-Length": str(too_big)})
    assert response.status_code == 413
    assert response.json()["code"] == "UPLOAD_007"


async def test_creation_with_upload_of_the_whole_file_finishes_it(tus: Tus) -> None:
    data = os.urandom(100_000)
    created = await tus.create(len(data), data)
    assert created.status_code == 201, created.text
    assert created.headers["Upload-Offset"] == str(len(data))
    file_id = created.headers["Homeport-File-Id"]
    downloaded = await tus.client.get(created.headers["Homeport-File-Url"])
    assert downloaded.content == data
    described = await tus.client.get(f"/api/v1/files/{file_id}", headers=tus.headers)
    assert described.json()["checksum"] == hashlib.sha256(data).hexdigest()
    # HEAD of a finished upload names its file too.
    head = await tus.head(created.headers["Location"])
    assert head.headers["Upload-Offset"] == str(len(data))
    assert head.headers["Homeport-File-Id"] == file_id


async def test_creation_with_part_of_the_file_then_patch(tus: Tus) -> None:
    data = os.urandom(50_000)
    created = await tus.create(len(data), data[:20_000])
    assert created.status_code == 201
    assert created.headers["Upload-Offset"] == "20000"
    assert "Homeport-File-Id" not in created.headers
    patched = await tus.patch(created.headers["Location"], 20_000, data[20_000:])
    assert patched.status_code == 204, patched.text
    assert patched.headers["Upload-Offset"] == str(len(data))
    assert (await tus.client.get(patched.headers["Homeport-File-Url"])).content == data


# PATCH


async def test_patch_in_pieces_and_a_wrong_offset_is_409(tus: Tus) -> None:
    data = os.urandom(30_000)
    url = await tus.new(len(data))
    first = await tus.patch(url, 0, data[:10_000])
    assert first.status_code == 204
    assert first.headers["Upload-Offset"] == "10000"
    assert first.headers["Tus-Resumable"] == "1.0.0"
    for wrong in (0, 5_000, 20_000):
        response = await tus.patch(url, wrong, data[wrong : wrong + 10_000])
        assert response.status_code == 409
        assert response.json()["code"] == "UPLOAD_005"
        assert response.headers["Tus-Resumable"] == "1.0.0"
    assert await tus.offset(url) == 10_000
    rest = await tus.patch(url, 10_000, data[10_000:])
    assert rest.status_code == 204
    assert (await tus.client.get(rest.headers["Homeport-File-Url"])).content == data


async def test_patch_needs_the_offset_content_type(tus: Tus) -> None:
    url = await tus.new(10)
    for content_type in ("application/octet-stream", None):
        headers = {**tus.headers, "Upload-Offset": "0"}
        if content_type:
            headers["Content-Type"] = content_type
        response = await tus.client.patch(url, content=b"0123456789", headers=headers)
        assert response.status_code == 415
        assert response.headers["Tus-Resumable"] == "1.0.0"
    missing_offset = await tus.client.patch(
        url, content=b"0123456789", headers={**tus.headers, **OFFSET_TYPE}
    )
    assert missing_offset.status_code == 400
    assert await tus.offset(url) == 0


@pytest.mark.parametrize("algorithm", ["sha1", "sha256"])
async def test_checksums_accepted_and_a_mismatch_is_460(tus: Tus, algorithm: str) -> None:
    data = os.urandom(40_000)
    url = await tus.new(len(data))
    ok = await tus.patch(
        url, 0, data[:20_000], **{"Upload-Checksum": digest_header(algorithm, data[:20_000])}
    )
    assert ok.status_code == 204, ok.text
    wrong = await tus.patch(
        url, 20_000, data[20_000:], **{"Upload-Checksum": digest_header(algorithm, b"other")}
    )
    assert wrong.status_code == 460
    assert wrong.json()["code"] == "UPLOAD_002"
    assert wrong.headers["Tus-Resumable"] == "1.0.0"
    assert await tus.offset(url) == 20_000  # nothing of the bad body was kept
    done = await tus.patch(
        url, 20_000, data[20_000:], **{"Upload-Checksum": digest_header(algorithm, data[20_000:])}
    )
    assert done.status_code == 204
    assert (await tus.client.get(done.headers["Homeport-File-Url"])).content == data


async def test_an_unsupported_checksum_algorithm_is_400(tus: Tus) -> None:
    url = await tus.new(10)
    response = await tus.patch(url, 0, b"0123456789", **{"Upload-Checksum": "md5 AAAA"})
    assert response.status_code == 400
    assert await tus.offset(url) == 0


async def test_a_body_past_upload_length_is_413_and_nothing_is_kept(tus: Tus) -> None:
    url = await tus.new(1000)
    assert (await tus.patch(url, 0, os.urandom(400))).status_code == 204
    response = await tus.patch(url, 400, os.urandom(601))
    assert response.status_code == 413
    assert response.json()["code"] == "UPLOAD_007"
    assert await tus.offset(url) == 400


async def test_a_declared_type_the_bytes_contradict_is_refused(tus: Tus) -> None:
    created = await tus.create(
        1000, **{"Upload-Metadata": metadata(filename="a.png", filetype="image/png")}
    )
    url = created.headers["Location"]
    response = await tus.patch(url, 0, b"%PDF-1.7\n" + os.urandom(991))
    assert response.status_code == 400
    assert response.json()["code"] == "UPLOAD_001"
    assert await tus.offset(url) == 0


# Termination, expiry


async def test_termination_frees_the_staged_file(tus: Tus) -> None:
    url = await tus.new(10_000)
    assert (await tus.patch(url, 0, os.urandom(4_000))).status_code == 204
    upload_id = upload_id_of(url)
    tenant_id = tus.harness.tenants["acme"].id
    path = staged_path(tus.harness, tenant_id, upload_id)
    assert path.stat().st_size == 4_000
    deleted = await tus.delete(url)
    assert deleted.status_code == 204
    assert deleted.headers["Tus-Resumable"] == "1.0.0"
    await run_jobs(tus.harness)
    assert not path.exists()
    head = await tus.head(url)
    assert head.status_code in (404, 410)
    assert head.headers["Tus-Resumable"] == "1.0.0"
    patch = await tus.patch(url, 4_000, b"more")
    assert patch.status_code in (404, 410)


async def test_an_expired_upload_is_410(tus: Tus) -> None:
    url = await tus.new(10_000)
    assert (await tus.patch(url, 0, os.urandom(1_000))).status_code == 204
    async with tus.harness.state.database.transaction() as session:
        await UploadRepository(session).update(
            tus.harness.tenants["acme"].id,
            upload_id_of(url),
            expires_at=utcnow() - timedelta(seconds=1),
        )
    for response in (await tus.head(url), await tus.patch(url, 1_000, b"late")):
        assert response.status_code == 410
        assert response.headers["Tus-Resumable"] == "1.0.0"
    patched = await tus.patch(url, 1_000, b"late")
    assert patched.json()["code"] == "UPLOAD_003"


# Who may touch an upload


async def test_other_tenants_and_other_users_see_no_upload(harness: Harness) -> None:
    owner = await tus_for(harness, "acme")
    url = await owner.new(100)
    stranger = await tus_for(harness, "globex")
    member_email = "member@acme.example.com"
    await harness.add_member(harness.tenants["acme"], member_email, "member")
    colleague = Tus(harness, await harness.login_headers(member_email, "member-password-1"))
    for other in (stranger, colleague):
        assert (await other.head(url)).status_code == 404
        assert (await other.patch(url, 0, b"x" * 100)).status_code == 404
        assert (await other.delete(url)).status_code == 404
    assert await owner.offset(url) == 0


async def test_tus_needs_a_token(harness: Harness) -> None:
    response = await harness.client.post(TUS, headers={**VERSION, "Upload-Length": "10"})
    assert response.status_code == 401


# Proxies


@pytest.mark.parametrize("trusted", [True, False])
async def test_forwarded_headers_only_behind_a_trusted_proxy(
    database_url: str, tmp_path: Path, trusted: bool
) -> None:
    settings = make_settings(
        database_url, tmp_path / "data", trusted_proxies=["127.0.0.1"] if trusted else []
    )
    async with running_harness(settings) as harness:
        tus = await tus_for(harness)
        forwarded = {
            "X-Forwarded-Proto": "https",
            "X-Forwarded-Host": "files.example.com",
            "X-Forwarded-Prefix": "/homeport",
        }
        data = os.urandom(1000)
        created = await tus.create(len(data), data, **forwarded)
        assert created.status_code == 201
        upload_id = upload_id_of(created.headers["Location"])
        if trusted:
            expected = f"https://files.example.com/homeport/api/v1/tus/{upload_id}"
            assert created.headers["Homeport-File-Url"].startswith(
                "https://files.example.com/homeport/api/v1/files/"
            )
        else:
            expected = f"http://homeport.test/api/v1/tus/{upload_id}"
            assert created.headers["Homeport-File-Url"].startswith("http://homeport.test/")
        assert created.headers["Location"] == expected


# One file model for both protocols


async def test_tus_and_rest_uploads_of_the_same_bytes_share_one_blob(harness: Harness) -> None:
    data = os.urandom(200_000)
    rest = await make_uploader(harness)
    session = await rest.init(data, chunk_size=64 * 1024)
    await rest.send_all(session, data)
    finalized = await rest.finalize(session["upload_id"])
    assert finalized.status_code == 200, finalized.text
    tus = Tus(harness, rest.headers)
    created = await tus.create(len(data), data)
    assert created.status_code == 201, created.text
    rest_id, tus_id = finalized.json()["file_id"], created.headers["Homeport-File-Id"]
    assert rest_id != tus_id
    for file_id in (rest_id, tus_id):
        described = await harness.client.get(f"/api/v1/files/{file_id}", headers=rest.headers)
        assert described.status_code == 200
        assert described.json()["checksum"] == hashlib.sha256(data).hexdigest()
        assert described.json()["size"] == len(data)
    await run_jobs(harness)
    copies = [
        path
        for path in harness.settings.resolved_storage_dir.rglob("*")
        if path.is_file() and path.stat().st_size == len(data) and path.read_bytes() == data
    ]
    assert len(copies) == 1, copies


# S3


@pytest.fixture
async def s3_harness(database_url: str, tmp_path: Path, s3_server: str) -> AsyncIterator[Harness]:
    settings = make_settings(database_url, tmp_path / "data", **s3_settings(s3_server))
    await create_bucket(settings)
    async with running_harness(settings) as harness:
        yield harness


def open_multipart_uploads(settings: Settings) -> list[str]:
    import boto3

    client = boto3.client(
        "s3",
        endpoint_url=settings.s3_endpoint_url,
        region_name=settings.s3_region,
        aws_access_key_id=settings.s3_access_key_id,
        aws_secret_access_key=settings.s3_secret_access_key,
    )
    try:
        listed = client.list_multipart_uploads(Bucket=settings.s3_bucket)
        return [upload["Key"] for upload in listed.get("Uploads", [])]
    finally:
        client.close()


async def test_s3_patches_smaller_than_a_part_then_termination_aborts(
    s3_harness: Harness,
) -> None:
    tus = await tus_for(s3_harness)
    data = os.urandom(7 * MIB)
    url = await tus.new(len(data))
    # 3 MiB, then 3 MiB (a 5 MiB part is cut, 1 MiB stays buffered), then a bad checksum.
    assert (await tus.patch(url, 0, data[: 3 * MIB])).status_code == 204
    assert (await tus.patch(url, 3 * MIB, data[3 * MIB : 6 * MIB])).status_code == 204
    bad = await tus.patch(
        url, 6 * MIB, data[6 * MIB :], **{"Upload-Checksum": digest_header("sha256", b"x")}
    )
    assert bad.status_code == 460
    assert await tus.offset(url) == 6 * MIB
    assert any(
        key.endswith(upload_id_of(url)) for key in open_multipart_uploads(s3_harness.settings)
    )
    assert (await tus.delete(url)).status_code == 204
    await run_jobs(s3_harness)
    assert not any(
        key.endswith(upload_id_of(url)) for key in open_multipart_uploads(s3_harness.settings)
    )
    assert (await tus.head(url)).status_code in (404, 410)


async def test_s3_upload_in_odd_pieces_gives_the_same_bytes(s3_harness: Harness) -> None:
    tus = await tus_for(s3_harness)
    data = os.urandom(11 * MIB + 17)
    url = await tus.new(len(data))
    offset = 0
    for size in (MIB, 4 * MIB + 1, len(data)):
        piece = data[offset : offset + size]
        patched = await tus.patch(
            url, offset, piece, **{"Upload-Checksum": digest_header("sha1", piece)}
        )
        assert patched.status_code == 204, patched.text
        offset += len(piece)
    assert offset == len(data)
    downloaded = await tus.client.get(patched.headers["Homeport-File-Url"])
    assert downloaded.content == data


# Concurrency, against a real server (the first body really streams while the second arrives)


@contextlib.asynccontextmanager
async def live_tus(
    settings: Settings,
) -> AsyncIterator[tuple[LiveServer, Harness, dict[str, str]]]:
    """A live server and an in-process app on the same database and storage. Downloads go
    through the latter: a live download closed right after its last byte can race the
    server's closing of the file, which pytest reports as an unclosed file."""
    async with running_harness(settings) as harness:
        uploader = await make_uploader(harness)
        with LiveServer(settings) as server:
            yield server, harness, {**uploader.headers, **VERSION}


async def slow_body(
    blocks: list[bytes], started: asyncio.Event, pause: float
) -> AsyncIterator[bytes]:
    """A body that arrives block by block, ``pause`` seconds apart; ``started`` is set once
    the first block is sent."""
    for index, block in enumerate(blocks):
        yield block
        if index == 0:
            started.set()
        await asyncio.sleep(pause)


async def test_a_second_patch_while_one_streams_is_423_and_bytes_never_interleave(
    settings: Settings,
) -> None:
    first_body = [os.urandom(64 * 1024) for _ in range(4)]
    intruder = os.urandom(256 * 1024)
    rest = os.urandom(100_000)
    total = sum(map(len, first_body)) + len(rest)
    first_started = asyncio.Event()
    async with (
        live_tus(settings) as (server, harness, headers),
        httpx.AsyncClient(base_url=server.base_url, timeout=30) as client,
    ):
        created = await client.post(TUS, headers={**headers, "Upload-Length": str(total)})
        url = created.headers["Location"]
        patch_headers = {**headers, **OFFSET_TYPE, "Upload-Offset": "0"}
        body = slow_body(first_body, first_started, 0.4)
        first = asyncio.create_task(client.patch(url, content=body, headers=patch_headers))
        await first_started.wait()
        await asyncio.sleep(0.2)  # the server has the first block and holds the lease
        second = await client.patch(url, content=intruder, headers=patch_headers)
        assert second.status_code == 423, second.text
        assert second.json()["code"] == "UPLOAD_004"
        assert second.headers["Tus-Resumable"] == "1.0.0"
        finished_first = await first
        assert finished_first.status_code == 204, finished_first.text
        assert finished_first.headers["Upload-Offset"] == str(sum(map(len, first_body)))
        done = await client.patch(
            url,
            content=rest,
            headers={**patch_headers, "Upload-Offset": finished_first.headers["Upload-Offset"]},
        )
        assert done.status_code == 204, done.text
        downloaded = await harness.client.get(done.headers["Homeport-File-Url"])
        assert downloaded.content == b"".join(first_body) + rest


async def test_an_interrupted_patch_keeps_what_arrived(settings: Settings) -> None:
    """A client that dies mid-body (no checksum): the bytes that arrived are kept, so the
    upload resumes from there; the dropped connection frees the lease."""
    data = os.urandom(512 * 1024)

    async def dying_body() -> AsyncIterator[bytes]:
        yield data[: 128 * 1024]
        await asyncio.sleep(0.3)
        raise ConnectionResetError("the app was killed")

    async with live_tus(settings) as (server, harness, headers):
        async with httpx.AsyncClient(base_url=server.base_url, timeout=30) as client:
            created = await client.post(TUS, headers={**headers, "Upload-Length": str(len(data))})
            url = created.headers["Location"]
            with pytest.raises((ConnectionResetError, httpx.HTTPError)):
                await client.patch(
                    url,
                    content=dying_body(),
                    headers={**headers, **OFFSET_TYPE, "Upload-Offset": "0"},
                )
        async with httpx.AsyncClient(base_url=server.base_url, timeout=30) as client:
            offset: Any = None
            for _ in range(50):  # the server notices the disconnect shortly after
                head = await client.head(url, headers=headers)
                offset = int(head.headers["Upload-Offset"])
                patched = await client.patch(
                    url,
                    content=data[offset:],
                    headers={**headers, **OFFSET_TYPE, "Upload-Offset": str(offset)},
                )
                if patched.status_code != 423:
                    break
                await asyncio.sleep(0.1)
            assert patched.status_code == 204, patched.text
            assert 0 <= offset <= 128 * 1024
            downloaded = await harness.client.get(patched.headers["Homeport-File-Url"])
            assert downloaded.content == data


async def test_lengths_and_offsets_in_other_digits_are_refused(tus: Tus) -> None:
    # "³" (a Latin-1 header byte) passes str.isdigit, which int() refuses: these were 500s.
    superscript = "³".encode("latin-1")
    created = await tus.client.post(
        TUS,
        headers={**tus.headers, "Upload-Length": superscript},  # type: ignore[dict-item]
    )
    assert created.status_code == 400, created.text
    assert created.json()["code"] == "UPLOAD_001"
    url = await tus.new(10)
    patched = await tus.client.patch(
        url,
        content=b"x",
        headers={**tus.headers, **OFFSET_TYPE, "Upload-Offset": superscript},  # type: ignore[dict-item]
    )
    assert patched.status_code == 400, patched.text
    assert patched.json()["code"] == "UPLOAD_001"
    assert await tus.offset(url) == 0


async def test_metadata_with_control_characters_is_refused(tus: Tus) -> None:
    """The metadata is stored as text: a NUL in any value was a 500 on PostgreSQL; a file name
    with a newline or another control character is refused on both databases."""
    for values in (
        {"filename": "a.bin", "note": "x\x00y"},
        {"filename": "a\x00.bin"},
        {"filename": "a\n.bin"},
    ):
        created = await tus.create(10, **{"Upload-Metadata": metadata(**values)})
        assert created.status_code == 400, created.text
        assert created.json()["code"] == "UPLOAD_001"
        assert "Location" not in created.headers
    accepted = await tus.create(10, **{"Upload-Metadata": metadata(filename="käse ü.bin")})
    assert accepted.status_code == 201, accepted.text


async def test_a_file_shorter_than_its_recorded_offset_resumes_from_what_it_holds(
    settings: Settings,
) -> None:
    # Acknowledged PATCH bytes are not synced: after a power loss the local file may hold less
    # than the offset the database kept. HEAD then reports what the file holds, a PATCH at
    # the old offset is refused (it would leave a hole), and the upload completes intact.
    data = os.urandom(300_000)
    async with running_harness(settings) as harness:
        tus = await tus_for(harness)
        url = await tus.new(len(data))
        sent = await tus.patch(url, 0, data[:200_000])
        assert sent.status_code == 204, sent.text
        path = staged_path(harness, harness.tenants["acme"].id, upload_id_of(url))
    os.truncate(path, 120_000)  # the last 80,000 acknowledged bytes never reached the disk
    await _resume_in_a_new_process(settings, url, data, recorded=200_000, resume_at=120_000)


async def _resume_in_a_new_process(
    settings: Settings, url: str, data: bytes, *, recorded: int, resume_at: int
) -> None:
    """A new server process: HEAD answers ``resume_at``, a PATCH at the ``recorded`` offset
    (when it differs) is a 409, and the rest sent from ``resume_at`` makes the file."""
    async with running_harness(settings) as harness:
        headers = await harness.login_headers(
            "owner@acme.example.com", "correct-horse-battery", "phone-1"
        )
        tus = Tus(harness, headers)
        assert await tus.offset(url) == resume_at
        if recorded != resume_at:
            stale = await tus.patch(url, recorded, data[recorded:])
            assert stale.status_code == 409, stale.text
        rest = await tus.patch(url, resume_at, data[resume_at:])
        assert rest.status_code == 204, rest.text
        assert rest.headers["Upload-Offset"] == str(len(data))
        downloaded = await harness.client.get(rest.headers["Homeport-File-Url"])
        assert downloaded.content == data


async def test_each_patch_syncs_the_bytes_of_the_patches_before_it(
    harness: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    synced: list[str] = []
    real_fdatasync = os.fdatasync

    def fdatasync(descriptor: int) -> None:
        synced.append(os.readlink(f"/proc/self/fd/{descriptor}"))
        real_fdatasync(descriptor)

    monkeypatch.setattr(os, "fdatasync", fdatasync)
    data = os.urandom(300_000)
    tus = await tus_for(harness)
    url = await tus.new(len(data))
    path = staged_path(harness, harness.tenants["acme"].id, upload_id_of(url))
    first = await tus.patch(url, 0, data[:100_000])
    assert first.status_code == 204, first.text
    assert synced == []  # nothing was written before it
    second = await tus.patch(url, 100_000, data[100_000:200_000])
    assert second.status_code == 204, second.text
    assert synced == [str(path)]


async def _two_patches_then_restart_state(
    settings: Settings, data: bytes, *, rebooted: bool
) -> tuple[str, Path]:
    """Send data[:200_000] in two PATCHes; ``rebooted``: record that the machine has booted
    since they were written (and zero the bytes past the synced offset, as a power loss can,
    the file keeping its size)."""
    async with running_harness(settings) as harness:
        tus = await tus_for(harness)
        url = await tus.new(len(data))
        for start, end in ((0, 100_000), (100_000, 200_000)):
            sent = await tus.patch(url, start, data[start:end])
            assert sent.status_code == 204, sent.text
        upload_id = upload_id_of(url)
        path = staged_path(harness, harness.tenants["acme"].id, upload_id)
        async with harness.state.database.transaction() as session:
            upload = await session.get(UploadSession, upload_id)
            assert upload is not None
            # The first PATCH's bytes were synced while the second arrived.
            assert (upload.offset, upload.synced_offset) == (200_000, 100_000)
            assert upload.written_boot == boot_id() is not None
            if rebooted:
                upload.written_boot = "an-earlier-boot"
    if rebooted:
        with path.open("r+b") as file:
            file.seek(100_000)
            file.write(bytes(100_000))
    return url, path


async def test_after_a_reboot_an_upload_resumes_from_the_bytes_known_to_be_on_disk(
    settings: Settings,
) -> None:
    data = os.urandom(300_000)
    url, path = await _two_patches_then_restart_state(settings, data, rebooted=True)
    assert path.stat().st_size == 200_000  # the size alone does not tell
    await _resume_in_a_new_process(settings, url, data, recorded=200_000, resume_at=100_000)


async def test_a_restart_without_a_reboot_keeps_every_acknowledged_byte(
    settings: Settings,
) -> None:
    # A process that stops (or crashes) loses nothing the kernel holds: no re-send.
    data = os.urandom(300_000)
    url, _ = await _two_patches_then_restart_state(settings, data, rebooted=False)
    await _resume_in_a_new_process(settings, url, data, recorded=200_000, resume_at=200_000)
