"""The REST chunk protocol on SQLite and PostgreSQL, with a local directory and with S3."""

from __future__ import annotations

import asyncio
import hashlib
import os
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import select, update

from homeport.app import build_registry
from homeport.config import Settings
from homeport.kit.clock import utcnow
from homeport.kit.jobs import JobRunner, enqueue
from homeport.models.files import FileBlob, StoredFile, UploadPart, UploadSession
from homeport.uploads.tasks import EXPIRE_JOB
from tests.conftest import Harness, running_harness
from tests.uploads.conftest import Uploader, make_uploader


def payload(size: int) -> bytes:
    return os.urandom(size)


async def stored_files(harness: Harness) -> list[Path]:
    root = harness.settings.resolved_storage_dir
    return [path for path in root.rglob("*") if path.is_file()] if root.exists() else []


async def run_jobs(harness: Harness) -> None:
    registry = build_registry(harness.settings, lambda: harness.state.storage)
    runner = JobRunner(harness.state.database, registry)
    while await runner.run_once():
        pass


async def test_chunks_out_of_order_and_resent_make_the_file(uploader: Uploader) -> None:
    data = payload(uploader.unit * 3 + 1000)
    upload = await uploader.init(data)
    assert upload["total_chunks"] == 4
    # S3 raises the chunk size to its 5 MiB part minimum.
    assert upload["chunk_size"] == uploader.unit
    size = upload["chunk_size"]
    chunks = [data[i * size : (i + 1) * size] for i in range(upload["total_chunks"])]
    order = list(range(len(chunks)))[::-1]
    for index in order:
        response = await uploader.chunk(upload["upload_id"], index, chunks[index])
        assert response.status_code == 200, response.text
    # A re-sent identical chunk is fine and changes nothing.
    again = await uploader.chunk(upload["upload_id"], order[0], chunks[order[0]])
    assert again.status_code == 200
    body = again.json()
    assert body["uploaded"] is True
    assert body["remaining_chunks"] == 0
    assert body["progress_pct"] == 100.0

    response = await uploader.finalize(upload["upload_id"])
    assert response.status_code == 200, response.text
    result = response.json()
    assert result["finalized"] is True
    assert result["file_size"] == len(data)
    assert result["checksum"] == hashlib.sha256(data).hexdigest()
    downloaded = await uploader.download(result["file_url"])
    assert downloaded.status_code == 200
    assert downloaded.content == data


async def test_progress_and_status_name_missing_chunks(upload_harness: Harness) -> None:
    uploader = await make_uploader(upload_harness)
    unit = uploader.unit
    data = payload(unit * 4)
    upload = await uploader.init(data, chunk_size=unit)
    first = await uploader.chunk(upload["upload_id"], 2, data[2 * unit : 3 * unit])
    assert first.json() == {
        "uploaded": True,
        "chunk_index": 2,
        "remaining_chunks": 3,
        "progress_pct": 25.0,
    }
    status = await uploader.client.get(
        f"/api/v1/uploads/{upload['upload_id']}/status", headers=uploader.headers
    )
    assert status.status_code == 200
    body = status.json()
    assert body["status"] == "open"
    assert body["uploaded_chunks"] == [2]
    assert body["missing_chunks"] == [0, 1, 3]
    assert body["progress_pct"] == 25.0
    early = await uploader.finalize(upload["upload_id"])
    assert early.status_code == 400
    assert early.json()["code"] == "UPLOAD_001"
    assert early.json()["missing_chunks"] == [0, 1, 3]


async def test_checksum_mismatch_keeps_nothing(uploader: Uploader) -> None:
    data = payload(uploader.unit * 2)
    upload = await uploader.init(data)
    size = upload["chunk_size"]
    bad = await uploader.chunk(
        upload["upload_id"], 0, data[:size], checksum=hashlib.sha256(b"other").hexdigest()
    )
    assert bad.status_code == 422
    assert bad.json()["code"] == "UPLOAD_002"
    async with uploader.harness.state.database.transaction() as session:
        parts = (
            (
                await session.execute(
                    select(UploadPart).where(UploadPart.upload_id == upload["upload_id"])
                )
            )
            .scalars()
            .all()
        )
    assert parts == []
    missing_header = await uploader.client.post(
        f"/api/v1/uploads/{upload['upload_id']}/chunk/0",
        content=data[:size],
        headers={**uploader.headers, "Content-Type": "application/octet-stream"},
    )
    assert missing_header.status_code == 422
    assert missing_header.json()["code"] == "VALIDATION_001"


async def test_wrong_chunk_size_and_index_are_upload_001(uploader: Uploader) -> None:
    data = payload(uploader.unit * 2 + 10)
    upload = await uploader.init(data)
    size = upload["chunk_size"]
    short = await uploader.chunk(upload["upload_id"], 0, data[: size - 1])
    assert short.status_code == 400
    assert short.json()["code"] == "UPLOAD_001"
    outside = await uploader.chunk(upload["upload_id"], upload["total_chunks"], b"x")
    assert outside.status_code == 400
    assert outside.json()["code"] == "UPLOAD_001"


async def test_finalize_with_a_wrong_file_hash_stays_open_and_recovers(uploader: Uploader) -> None:
    data = payload(uploader.unit * 2 + 5)
    corrupted = bytearray(data)
    corrupted[0] ^= 0xFF
    upload = await uploader.init(data)
    # The device sends chunk 0 of a changed file (its own checksum matches, the file's does not).
    size = upload["chunk_size"]
    await uploader.send_all(upload, bytes(corrupted))
    response = await uploader.finalize(upload["upload_id"])
    assert response.status_code == 422, response.text
    assert response.json()["code"] == "UPLOAD_002"
    # Every chunk holds what was sent: no chunk is named, none counts as missing.
    assert response.json()["chunks_to_resend"] == []
    assert "every chunk holds what was sent" in response.json()["detail"]
    status = await uploader.client.get(
        f"/api/v1/uploads/{upload['upload_id']}/status", headers=uploader.headers
    )
    assert status.json()["status"] == "open"
    # Re-sending the right chunk 0 repairs it: on S3 the parts were made writable again.
    fixed = await uploader.chunk(upload["upload_id"], 0, data[:size])
    assert fixed.status_code == 200, fixed.text
    final = await uploader.finalize(upload["upload_id"])
    assert final.status_code == 200, final.text
    downloaded = await uploader.download(final.json()["file_url"])
    assert downloaded.content == data


async def test_finalize_is_idempotent(uploader: Uploader) -> None:
    data = payload(uploader.unit + 1)
    upload = await uploader.init(data)
    await uploader.send_all(upload, data)
    first = await uploader.finalize(upload["upload_id"])
    second = await uploader.finalize(upload["upload_id"])
    assert first.status_code == second.status_code == 200
    assert first.json()["file_id"] == second.json()["file_id"]
    async with uploader.harness.state.database.transaction() as session:
        count = len((await session.execute(select(StoredFile))).scalars().all())
    assert count == 1


async def test_cancel_frees_the_storage(upload_settings: Settings) -> None:
    settings = upload_settings.model_copy(
        update={"jobs_enabled": True, "jobs_poll_interval_seconds": 0.05}
    )
    async with running_harness(settings) as harness:
        uploader = await make_uploader(harness)
        data = payload(uploader.unit * 2)
        upload = await uploader.init(data)
        await uploader.chunk(upload["upload_id"], 0, data[: upload["chunk_size"]])
        key = f"t/{uploader.tenant.id}/u/{upload['upload_id']}"
        storage = harness.state.storage
        cancelled = await uploader.client.delete(
            f"/api/v1/uploads/{upload['upload_id']}", headers=uploader.headers
        )
        assert cancelled.status_code == 200
        assert cancelled.json()["cancelled"] is True
        for _ in range(100):
            if await storage.size(key) is None and await _no_multipart(harness, key):
                break
            await asyncio.sleep(0.05)
        assert await storage.size(key) is None
        assert await _no_multipart(harness, key)
        after = await uploader.chunk(upload["upload_id"], 1, data[upload["chunk_size"] :])
        assert after.status_code == 400
        assert after.json()["code"] == "UPLOAD_001"


async def _no_multipart(harness: Harness, key: str) -> bool:
    storage = harness.state.storage
    if storage.name != "s3":
        return True
    listing = await storage._client.list_multipart_uploads(Bucket=storage.bucket)
    return not [u for u in listing.get("Uploads", []) if u["Key"].endswith(key)]


async def test_resume_after_a_server_restart(upload_settings: Settings) -> None:
    async with running_harness(upload_settings) as harness:
        uploader = await make_uploader(harness)
        data = payload(uploader.unit * 3)
        upload = await uploader.init(data, chunk_size=uploader.unit)
        size = upload["chunk_size"]
        first = await uploader.chunk(upload["upload_id"], 0, data[:size])
        assert first.status_code == 200
    async with running_harness(upload_settings) as harness:
        tenant = await harness.login_headers(
            "owner@acme.example.com", "correct-horse-battery", "phone-1"
        )
        again = Uploader(harness, None, tenant)  # type: ignore[arg-type]
        status = await again.client.get(
            f"/api/v1/uploads/{upload['upload_id']}/status", headers=tenant
        )
        assert status.status_code == 200
        missing = status.json()["missing_chunks"]
        assert 0 not in missing
        for index in missing:
            response = await again.chunk(
                upload["upload_id"], index, data[index * size : (index + 1) * size]
            )
            assert response.status_code == 200
        final = await again.finalize(upload["upload_id"])
        assert final.status_code == 200, final.text
        assert (await again.download(final.json()["file_url"])).content == data


@pytest.mark.parametrize("storage_backend", ["fs"])  # damages the bytes of a local file
async def test_a_chunk_damaged_in_storage_is_named_and_sent_again(
    upload_settings: Settings,
) -> None:
    # A power loss before a chunk's bytes reached the disk, seen after the restart: finalize
    # names the chunk, which counts as missing again, instead of a bare mismatch.
    async with running_harness(upload_settings) as harness:
        uploader = await make_uploader(harness)
        data = payload(uploader.unit * 3 + 10)
        upload = await uploader.init(data)
        await uploader.send_all(upload, data)
        stored = [
            path for path in (harness.settings.data_dir / "files").rglob("*") if path.is_file()
        ]
    assert len(stored) == 1
    size = upload["chunk_size"]
    with stored[0].open("r+b") as damaged:  # chunk 1 came back as zeros
        damaged.seek(size)
        damaged.write(bytes(size))
    async with running_harness(upload_settings) as harness:
        headers = await harness.login_headers(
            "owner@acme.example.com", "correct-horse-battery", "phone-1"
        )
        again = Uploader(harness, None, headers)  # type: ignore[arg-type]
        refused = await again.finalize(upload["upload_id"])
        assert refused.status_code == 422, refused.text
        assert refused.json()["code"] == "UPLOAD_002"
        assert refused.json()["chunks_to_resend"] == [1]
        status = await again.client.get(
            f"/api/v1/uploads/{upload['upload_id']}/status", headers=headers
        )
        assert status.json()["status"] == "open"
        assert status.json()["missing_chunks"] == [1]
        resent = await again.chunk(upload["upload_id"], 1, data[size : 2 * size])
        assert resent.status_code == 200, resent.text
        final = await again.finalize(upload["upload_id"])
        assert final.status_code == 200, final.text
        assert (await again.download(final.json()["file_url"])).content == data


async def test_expired_upload_is_410_and_the_job_frees_it(uploader: Uploader) -> None:
    harness = uploader.harness
    data = payload(uploader.unit * 2)
    upload = await uploader.init(data)
    await uploader.chunk(upload["upload_id"], 0, data[: upload["chunk_size"]])
    async with harness.state.database.transaction() as session:
        await session.execute(
            update(UploadSession)
            .where(UploadSession.id == upload["upload_id"])
            .values(expires_at=utcnow() - timedelta(seconds=1))
        )
    for call in (
        uploader.chunk(upload["upload_id"], 1, data[upload["chunk_size"] :]),
        uploader.client.get(
            f"/api/v1/uploads/{upload['upload_id']}/status", headers=uploader.headers
        ),
        uploader.finalize(upload["upload_id"]),
    ):
        response = await call
        assert response.status_code == 410, response.text
        assert response.json()["code"] == "UPLOAD_003"
    async with harness.state.database.transaction() as session:
        enqueue(session, EXPIRE_JOB)
    await run_jobs(harness)
    async with harness.state.database.transaction() as session:
        row = (
            await session.execute(
                select(UploadSession).where(UploadSession.id == upload["upload_id"])
            )
        ).scalar_one()
    assert row.status == "expired"
    assert await harness.state.storage.size(row.storage_key) is None


async def test_concurrent_uploads_of_the_same_bytes_share_one_blob(uploader: Uploader) -> None:
    data = payload(uploader.unit * 2 + 7)
    second_device = await make_uploader(uploader.harness, device="phone-2")
    uploads = [await uploader.init(data), await second_device.init(data)]
    await asyncio.gather(
        uploader.send_all(uploads[0], data), second_device.send_all(uploads[1], data)
    )
    results = await asyncio.gather(
        uploader.finalize(uploads[0]["upload_id"]), second_device.finalize(uploads[1]["upload_id"])
    )
    assert [r.status_code for r in results] == [200, 200], [r.text for r in results]
    bodies = [r.json() for r in results]
    assert bodies[0]["file_id"] != bodies[1]["file_id"]
    assert sorted(b["deduplicated"] for b in bodies) == [False, True]
    async with uploader.harness.state.database.transaction() as session:
        blobs = (await session.execute(select(FileBlob))).scalars().all()
    assert len(blobs) == 1
    await run_jobs(uploader.harness)  # deletes the duplicate copy
    if uploader.harness.settings.storage_backend == "fs":
        assert len(await stored_files(uploader.harness)) == 1
    for body in bodies:
        assert (await uploader.download(body["file_url"])).content == data


async def test_declared_type_that_disagrees_with_the_bytes_is_refused(uploader: Uploader) -> None:
    png = b"\x89PNG\r\n\x1a\n" + os.urandom(3000)
    upload = await uploader.init(png, mime_type="application/pdf")
    response = await uploader.chunk(upload["upload_id"], 0, png)
    assert response.status_code == 400
    assert response.json()["code"] == "UPLOAD_001"


async def test_someone_elses_upload_does_not_exist(upload_harness: Harness) -> None:
    owner = await make_uploader(upload_harness, "acme")
    other_tenant = await make_uploader(upload_harness, "globex")
    member_id = await upload_harness.add_member(owner.tenant, "member@acme.example.com", "member")
    assert member_id
    member_headers = await upload_harness.login_headers(
        "member@acme.example.com", "member-password-1"
    )
    data = payload(owner.unit)
    upload = await owner.init(data)
    for headers in (other_tenant.headers, member_headers):
        intruder = Uploader(upload_harness, owner.tenant, headers)
        for response in (
            await intruder.chunk(upload["upload_id"], 0, data),
            await intruder.client.get(
                f"/api/v1/uploads/{upload['upload_id']}/status", headers=headers
            ),
            await intruder.finalize(upload["upload_id"]),
            await intruder.client.delete(f"/api/v1/uploads/{upload['upload_id']}", headers=headers),
        ):
            assert response.status_code == 404, response.text
            assert response.json()["code"] == "NOT_FOUND"


async def test_size_limit_and_bad_init_bodies(upload_harness: Harness) -> None:
    uploader = await make_uploader(upload_harness)
    too_big = await uploader.client.post(
        "/api/v1/uploads/init",
        json={
            "filename": "huge.mp4",
            "total_size": upload_harness.settings.uploads_max_file_bytes + 1,
            "mime_type": "video/mp4",
            "file_hash": "0" * 64,
        },
        headers=uploader.headers,
    )
    assert too_big.status_code == 413
    assert too_big.json()["code"] == "UPLOAD_007"
    for body in (
        {"filename": "a", "total_size": 0, "file_hash": "0" * 64},
        {"filename": "a", "total_size": 10, "file_hash": "xyz"},
        {"total_size": 10, "file_hash": "0" * 64},
        {"filename": "a", "total_size": 10, "file_hash": "0" * 64, "mime_type": "not a type"},
        # Control characters: PostgreSQL refused the NUL (a 500), a newline is no file name.
        {"filename": "a\x00b", "total_size": 10, "file_hash": "0" * 64},
        {"filename": "a\nb", "total_size": 10, "file_hash": "0" * 64},
    ):
        response = await uploader.client.post(
            "/api/v1/uploads/init", json=body, headers=uploader.headers
        )
        assert response.status_code == 422, body
        assert response.json()["code"] == "VALIDATION_001"
    anonymous = await uploader.client.post(
        "/api/v1/uploads/init", json={"filename": "a", "total_size": 1, "file_hash": "0" * 64}
    )
    assert anonymous.status_code == 401


async def test_image_variants_on_both_backends(uploader: Uploader) -> None:
    import io

    from PIL import Image

    picture = Image.new("RGB", (900, 600), "orange")
    buffer = io.BytesIO()
    picture.save(buffer, "PNG")
    png = buffer.getvalue()
    upload = await uploader.init(png, filename="site.png", mime_type="image/png")
    await uploader.send_all(upload, png)
    final = await uploader.finalize(upload["upload_id"])
    assert final.status_code == 200, final.text
    await run_jobs(uploader.harness)
    body = (
        await uploader.client.get(
            f"/api/v1/files/{final.json()['file_id']}", headers=uploader.headers
        )
    ).json()
    assert body["image"] == {"width": 900, "height": 600, "variants_status": "ready"}
    large = next(v for v in body["variants"] if (v["name"], v["format"]) == ("large", "webp"))
    assert (large["width"], large["height"]) == (900, 600)
    thumbnail = next(
        v for v in body["variants"] if (v["name"], v["format"]) == ("thumbnail", "jpeg")
    )
    downloaded = await uploader.download(thumbnail["url"])
    assert downloaded.status_code == 200
    assert Image.open(io.BytesIO(downloaded.content)).size == (150, 100)
