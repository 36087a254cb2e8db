"""One contract, two backends: every test here runs on a local directory and on a real
S3-compatible server (moto over HTTP); a few S3-only tests cover what only S3 has."""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import socket
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from aiobotocore.session import get_session

from homeport.kit.storage import (
    READ_BLOCK,
    LocalStorage,
    ObjectMissing,
    Part,
    Storage,
    StorageError,
    left_after_write,
    open_storage,
    sha256_of,
)
from homeport.kit.storage_s3 import MIN_PART_SIZE, S3Storage
from tests.s3_server import ACCESS_KEY_ID, REGION, SECRET_ACCESS_KEY

MIB = 1024 * 1024
# Every part but the last is S3's minimum, so the same parts are valid on both backends.
PART = MIN_PART_SIZE


def _s3(endpoint: str, bucket: str, **overrides: Any) -> S3Storage:
    values: dict[str, Any] = {
        "bucket": bucket,
        "endpoint_url": endpoint,
        "region": REGION,
        "access_key_id": ACCESS_KEY_ID,
        "secret_access_key": SECRET_ACCESS_KEY,
        "create_bucket": True,
    }
    values.update(overrides)
    return S3Storage(**values)


def _bucket() -> str:
    return f"homeport-test-{uuid.uuid4().hex[:12]}"


@contextlib.asynccontextmanager
async def _raw_client(endpoint: str) -> AsyncIterator[Any]:
    """A plain S3 client, to look at the bucket behind the storage's back."""
    async with get_session().create_client(
        "s3",
        region_name=REGION,
        endpoint_url=endpoint,
        aws_access_key_id=ACCESS_KEY_ID,
        aws_secret_access_key=SECRET_ACCESS_KEY,
    ) as client:
        yield client


@pytest.fixture(params=["fs", "s3"])
async def storage(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Storage]:
    backend: Storage
    if request.param == "fs":
        backend = LocalStorage(tmp_path / "files")
    else:
        backend = _s3(request.getfixturevalue("s3_server"), _bucket())
    await backend.start()
    try:
        yield backend
    finally:
        await backend.close()


@pytest.fixture
async def s3(s3_server: str) -> AsyncIterator[S3Storage]:
    backend = _s3(s3_server, _bucket())
    await backend.start()
    try:
        yield backend
    finally:
        await backend.close()


def _split(data: bytes, size: int = PART) -> list[tuple[Part, bytes]]:
    pieces = []
    for number, offset in enumerate(range(0, len(data), size), start=1):
        chunk = data[offset : offset + size]
        pieces.append((Part(number=number, offset=offset, size=len(chunk)), chunk))
    return pieces


async def _stage(
    storage: Storage, key: str, data: bytes, order: list[int] | None = None
) -> tuple[str, list[Part]]:
    """Stage ``data`` in parts written in ``order`` (indexes); returns the handle and parts."""
    handle = await storage.create_staged(key)
    pieces = _split(data)
    written: dict[int, Part] = {}
    for index in order if order is not None else range(len(pieces)):
        part, chunk = pieces[index]
        written[part.number] = await storage.write_part(key, handle, part, chunk)
    return handle, [written[number] for number in sorted(written)]


async def _pending_uploads(storage: Storage, s3_server: str | None) -> list[str]:
    """Keys with an open multipart upload (S3) / nothing to list on a directory."""
    if not isinstance(storage, S3Storage) or s3_server is None:
        return []
    async with _raw_client(s3_server) as client:
        listed = await client.list_multipart_uploads(Bucket=storage.bucket)
    return [upload["Key"] for upload in listed.get("Uploads", [])]


def _server(request: pytest.FixtureRequest, storage: Storage) -> str | None:
    return request.getfixturevalue("s3_server") if isinstance(storage, S3Storage) else None


# Staged objects


async def test_parts_out_of_order_assemble_to_the_bytes(storage: Storage) -> None:
    data = os.urandom(2 * PART + 12345)
    handle, parts = await _stage(storage, "staged/out-of-order", data, order=[2, 0, 1])
    await storage.assemble("staged/out-of-order", handle, parts)

    assert await storage.size("staged/out-of-order") == len(data)
    assert await storage.get("staged/out-of-order") == data
    assert await sha256_of(storage, "staged/out-of-order") == hashlib.sha256(data).hexdigest()


async def test_a_rewritten_part_replaces_the_first_write(storage: Storage) -> None:
    data = os.urandom(PART + 1000)
    handle = await storage.create_staged("staged/rewrite")
    (first, first_bytes), (last, last_bytes) = _split(data)
    await storage.write_part("staged/rewrite", handle, first, os.urandom(PART))
    rewritten = await storage.write_part("staged/rewrite", handle, first, first_bytes)
    written_last = await storage.write_part("staged/rewrite", handle, last, last_bytes)
    await storage.assemble("staged/rewrite", handle, [rewritten, written_last])

    assert await storage.get("staged/rewrite") == data


async def test_assemble_without_tokens_finds_the_parts(storage: Storage) -> None:
    # A caller that lost the part tokens (ETags) can still assemble what was uploaded.
    data = os.urandom(PART + 77)
    handle, parts = await _stage(storage, "staged/no-tokens", data)
    bare = [Part(part.number, part.offset, part.size) for part in parts]
    await storage.assemble("staged/no-tokens", handle, bare)

    assert await storage.get("staged/no-tokens") == data


async def test_an_empty_staged_object_assembles_to_an_empty_object(storage: Storage) -> None:
    handle = await storage.create_staged("staged/empty")
    await storage.assemble("staged/empty", handle, [])

    assert await storage.size("staged/empty") == 0
    assert await storage.get("staged/empty") == b""


async def test_reopen_lets_a_part_be_resent_after_a_failed_check(storage: Storage) -> None:
    good = os.urandom(2 * PART + 4096)
    corrupt = good[:PART] + os.urandom(PART) + good[2 * PART :]
    handle, written = await _stage(storage, "staged/reopen", corrupt)
    await storage.assemble("staged/reopen", handle, written)
    assert await sha256_of(storage, "staged/reopen") != hashlib.sha256(good).hexdigest()

    parts = [part for part, _ in _split(corrupt)]
    new_handle, reopened = await storage.reopen("staged/reopen", parts)
    assert [(p.number, p.offset, p.size) for p in reopened] == [
        (p.number, p.offset, p.size) for p in parts
    ]
    second, second_bytes = _split(good)[1]
    resent = await storage.write_part("staged/reopen", new_handle, second, second_bytes)
    await storage.assemble("staged/reopen", new_handle, [reopened[0], resent, reopened[2]])

    assert await storage.get("staged/reopen") == good


async def test_reopen_of_a_missing_object_is_object_missing(storage: Storage) -> None:
    with pytest.raises(ObjectMissing):
        await storage.reopen("staged/never", [Part(1, 0, 10)])


async def test_abort_frees_the_staged_object(
    storage: Storage, request: pytest.FixtureRequest
) -> None:
    server = _server(request, storage)
    handle, parts = await _stage(storage, "staged/aborted", os.urandom(PART + 10))
    assert await _pending_uploads(storage, server) == (
        ["staged/aborted"] if isinstance(storage, S3Storage) else []
    )

    await storage.abort("staged/aborted", handle)

    assert await _pending_uploads(storage, server) == []
    assert await storage.size("staged/aborted") is None
    bare = [Part(part.number, part.offset, part.size) for part in parts]
    with pytest.raises(ObjectMissing):
        await storage.assemble("staged/aborted", handle, bare)
    await storage.abort("staged/aborted", handle)  # already gone: no error


async def test_an_unknown_staged_object_is_object_missing(storage: Storage) -> None:
    handle = "no-such-upload" if isinstance(storage, S3Storage) else ""
    with pytest.raises(ObjectMissing):
        await storage.assemble("staged/unknown", handle, [Part(1, 0, 3)])
    if isinstance(storage, LocalStorage):
        # (moto answers UploadPart on an unknown upload with a 500 where S3 says NoSuchUpload,
        # so that mapping is exercised through ListParts above.)
        with pytest.raises(ObjectMissing):
            await storage.write_part("staged/unknown", handle, Part(1, 0, 3), b"abc")


# Whole objects


async def test_ranged_reads(storage: Storage) -> None:
    data = os.urandom(3 * MIB + 17)
    size = len(data)
    await storage.put("objects/ranged", data, "application/octet-stream")

    async def read(start: int = 0, end: int | None = None) -> bytes:
        blocks = [block async for block in storage.read("objects/ranged", start, end)]
        assert all(0 < len(block) <= READ_BLOCK for block in blocks)
        return b"".join(blocks)

    assert await read() == data
    assert await read(0, 1) == data[:1]
    assert await read(5, 10) == data[5:10]
    assert await read(MIB - 3, 2 * MIB + 5) == data[MIB - 3 : 2 * MIB + 5]
    assert await read(size - 1) == data[-1:]
    assert await read(size - 5, size + 100) == data[-5:]
    assert await read(0, size) == data
    assert await read(10, 10) == b""
    assert await read(10, 3) == b""
    assert await read(size) == b""
    assert await read(size + 100) == b""
    assert await read(size + 100, size + 200) == b""


async def test_reads_of_an_empty_object(storage: Storage) -> None:
    await storage.put("objects/empty", b"", "application/octet-stream")

    assert [block async for block in storage.read("objects/empty")] == []
    assert [block async for block in storage.read("objects/empty", 0, 10)] == []
    assert await storage.size("objects/empty") == 0


async def test_a_missing_object(storage: Storage) -> None:
    assert await storage.size("objects/missing") is None
    with pytest.raises(ObjectMissing):
        await storage.get("objects/missing")
    with pytest.raises(ObjectMissing):
        [block async for block in storage.read("objects/missing")]
    with pytest.raises(ObjectMissing):
        [block async for block in storage.read("objects/missing", 5, 5)]


async def test_put_get_and_overwrite(storage: Storage) -> None:
    await storage.put("objects/doc.txt", b"first", "text/plain")
    await storage.put("objects/doc.txt", b"second version", "text/plain")

    assert await storage.get("objects/doc.txt") == b"second version"
    assert await storage.size("objects/doc.txt") == len(b"second version")


async def test_delete_is_idempotent(storage: Storage) -> None:
    await storage.put("objects/gone", b"bytes", "application/octet-stream")
    await storage.delete("objects/gone")
    await storage.delete("objects/gone")
    await storage.delete("objects/never-existed")

    assert await storage.size("objects/gone") is None


async def test_move(storage: Storage) -> None:
    data = os.urandom(100_000)
    await storage.put("staging/abc", data, "image/png")
    await storage.move("staging/abc", "files/sha/abc")

    assert await storage.get("files/sha/abc") == data
    assert await storage.size("staging/abc") is None
    with pytest.raises(ObjectMissing):
        await storage.move("staging/abc", "files/sha/other")


@pytest.mark.parametrize(
    "key", ["", "../escape", "a/../b", "/absolute", "a//b", "./a", "a/.", "back\\slash"]
)
async def test_invalid_keys_are_refused(storage: Storage, key: str) -> None:
    with pytest.raises(ValueError, match="invalid storage key"):
        await storage.put(key, b"x", "text/plain")
    with pytest.raises(ValueError, match="invalid storage key"):
        await storage.get(key)
    with pytest.raises(ValueError, match="invalid storage key"):
        await storage.size(key)
    with pytest.raises(ValueError, match="invalid storage key"):
        await storage.create_staged(key)
    with pytest.raises(ValueError, match="invalid storage key"):
        await storage.move("objects/fine", key)


async def test_ping(storage: Storage) -> None:
    await storage.ping()


# S3 only


async def test_s3_a_small_part_that_is_not_last_is_refused_at_assemble(s3: S3Storage) -> None:
    handle = await s3.create_staged("staged/small")
    first = await s3.write_part("staged/small", handle, Part(1, 0, 1024), os.urandom(1024))
    last = await s3.write_part("staged/small", handle, Part(2, 1024, 1024), os.urandom(1024))

    with pytest.raises(StorageError, match="EntityTooSmall") as raised:
        await s3.assemble("staged/small", handle, [first, last])
    assert not isinstance(raised.value, ObjectMissing)
    assert await s3.size("staged/small") is None


async def test_s3_parts_are_multipart_parts_with_etags(s3: S3Storage, s3_server: str) -> None:
    data = os.urandom(PART + 5)
    handle, parts = await _stage(s3, "staged/etags", data)
    assert all(part.token for part in parts)

    async with _raw_client(s3_server) as client:
        listed = await client.list_parts(Bucket=s3.bucket, Key="staged/etags", UploadId=handle)
    assert [(p["PartNumber"], p["Size"], p["ETag"]) for p in listed["Parts"]] == [
        (part.number, part.size, part.token) for part in parts
    ]


async def test_s3_reopen_deletes_the_stale_object(s3: S3Storage) -> None:
    data = os.urandom(PART + 5)
    handle, parts = await _stage(s3, "staged/stale", data)
    await s3.assemble("staged/stale", handle, parts)

    new_handle, reopened = await s3.reopen("staged/stale", parts)

    assert await s3.size("staged/stale") is None
    await s3.assemble("staged/stale", new_handle, reopened)
    assert await s3.get("staged/stale") == data


async def test_s3_large_move_copies_in_parts(s3: S3Storage) -> None:
    # Lower the single-copy limit so an 11 MiB object takes the >5 GiB path.
    s3.single_copy_limit = 5 * MIB
    s3.copy_part_size = 5 * MIB
    data = os.urandom(11 * MIB)
    await s3.put("staging/large", data, "video/mp4")
    await s3.move("staging/large", "files/large")

    assert await s3.get("files/large") == data
    assert await s3.size("staging/large") is None
    head = await s3._s3.head_object(Bucket=s3.bucket, Key="files/large")
    assert head["ContentType"] == "video/mp4"


async def test_s3_prefix_is_applied_to_every_key(s3_server: str) -> None:
    bucket = _bucket()
    storage = _s3(s3_server, bucket, prefix="/tenant-data/")
    await storage.start()
    try:
        await storage.put("objects/a", b"prefixed", "text/plain")
        handle, parts = await _stage(storage, "staged/b", b"multipart")
        await storage.assemble("staged/b", handle, parts)
        async with _raw_client(s3_server) as client:
            listed = await client.list_objects_v2(Bucket=bucket)
        assert sorted(item["Key"] for item in listed["Contents"]) == [
            "tenant-data/objects/a",
            "tenant-data/staged/b",
        ]
        assert await storage.get("staged/b") == b"multipart"
    finally:
        await storage.close()


async def test_s3_bucket_created_outside_us_east_1(s3_server: str) -> None:
    storage = _s3(s3_server, _bucket(), region="eu-west-1")
    await storage.start()
    try:
        await storage.start()  # a second start keeps the open client
        await storage.put("objects/a", b"in eu-west-1", "text/plain")
        assert await storage.get("objects/a") == b"in eu-west-1"
        async with _raw_client(s3_server) as client:
            location = await client.get_bucket_location(Bucket=storage.bucket)
        assert location["LocationConstraint"] == "eu-west-1"
    finally:
        await storage.close()
        await storage.close()  # closing twice is harmless


async def test_s3_missing_bucket_is_a_storage_error(s3_server: str) -> None:
    storage = _s3(s3_server, _bucket(), create_bucket=False)
    await storage.start()
    try:
        with pytest.raises(StorageError) as raised:
            await storage.ping()
        assert not isinstance(raised.value, ObjectMissing)
        with pytest.raises(StorageError, match="NoSuchBucket"):
            await storage.put("objects/a", b"x", "text/plain")
    finally:
        await storage.close()


async def test_s3_errors_carry_no_credentials() -> None:
    # Nothing listens on this port: every call fails at the network.
    with socket_bound() as port:
        storage = _s3(
            f"http://127.0.0.1:{port}",
            _bucket(),
            access_key_id="AKIAEXAMPLEKEYID1234",
            secret_access_key="very-secret-access-key-value",
            create_bucket=False,
        )
        await storage.start()
        try:
            with pytest.raises(StorageError) as raised:
                await storage.ping()
        finally:
            await storage.close()
    message = str(raised.value)
    assert "HeadBucket" in message
    assert "very-secret-access-key-value" not in message
    assert "AKIAEXAMPLEKEYID1234" not in message
    assert raised.value.__cause__ is None


@contextlib.contextmanager
def socket_bound() -> Iterator[int]:
    """A port that is bound but never listens, so connections are refused."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        yield int(sock.getsockname()[1])


async def test_s3_unstarted_storage_is_a_storage_error() -> None:
    storage = _s3("http://127.0.0.1:1", _bucket())
    with pytest.raises(StorageError, match="not started"):
        await storage.size("objects/a")


# The factory


def test_open_storage_picks_the_backend(tmp_path: Path) -> None:
    local = open_storage("fs", root=tmp_path)
    assert isinstance(local, LocalStorage)
    assert local.root == tmp_path

    remote = open_storage(
        "s3",
        root=tmp_path,
        bucket="homeport",
        endpoint_url="http://127.0.0.1:9000",
        region="eu-west-1",
        access_key_id="key",
        secret_access_key="secret",
        prefix="prod",
    )
    assert isinstance(remote, S3Storage)
    assert (remote.bucket, remote.endpoint_url, remote.region, remote.prefix) == (
        "homeport",
        "http://127.0.0.1:9000",
        "eu-west-1",
        "prod",
    )
    assert remote.min_part_size == 5 * MIB

    with pytest.raises(ValueError, match="unknown storage backend"):
        open_storage("ftp", root=tmp_path)
    with pytest.raises(ValueError, match="bucket"):
        open_storage("s3", root=tmp_path)


async def test_local_write_at_takes_pieces_in_one_write(tmp_path: Path) -> None:
    local = LocalStorage(tmp_path / "files")
    await local.create_staged("staged/pieces")
    pieces = [b"ab", b"", b"cdef", os.urandom(70_000), b"g"]
    local.write_at("staged/pieces", 3, pieces)
    local.write_at("staged/pieces", 0, b"xyz")
    # More pieces than one pwritev takes: written in several calls, still in order.
    many = [bytes([n % 251]) for n in range(1_500)]
    local.write_at("staged/pieces", 3 + sum(map(len, pieces)), many)
    written = (tmp_path / "files" / "staged" / "pieces").read_bytes()
    assert written == b"xyz" + b"".join(pieces) + b"".join(many)
    with pytest.raises(ObjectMissing):
        local.write_at("staged/never-created", 0, [b"a"])


def test_what_is_left_after_a_short_write() -> None:
    pieces = [b"abc", b"de", b"fgh"]
    assert left_after_write(pieces, 0) == pieces
    assert left_after_write(pieces, 2) == [b"c", b"de", b"fgh"]
    assert left_after_write(pieces, 3) == [b"de", b"fgh"]
    assert left_after_write(pieces, 6) == [b"gh"]
    assert left_after_write(pieces, 8) == []


async def test_local_failures_of_the_system_are_storage_errors(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A full disk or an I/O error is the storage's failure (callers answer 503), not a bug (500);
    # a missing object keeps its own meaning.
    storage = LocalStorage(tmp_path)
    await storage.start()
    handle = await storage.create_staged("t/a/u/1")

    def fails(*_args: Any, **_kwargs: Any) -> Any:
        raise OSError(errno.EIO, os.strerror(errno.EIO))

    with monkeypatch.context() as patched:
        patched.setattr(os, "pwritev", fails)
        with pytest.raises(StorageError) as written:
            await storage.write_part("t/a/u/1", handle, Part(1, 0, 3), b"abc")
        assert not isinstance(written.value, ObjectMissing)
    with monkeypatch.context() as patched:
        patched.setattr(os, "replace", fails)
        with pytest.raises(StorageError):
            await storage.put("t/a/blob", b"abc", "application/octet-stream")
    with monkeypatch.context() as patched:
        patched.setattr(os, "fdatasync", fails)
        with pytest.raises(StorageError):
            await storage.sync_staged("t/a/u/1")
    with pytest.raises(ObjectMissing):
        await storage.get("t/a/missing")
    assert await storage.size("t/a/missing") is None
