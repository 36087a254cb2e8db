"""The whole-file digest an upload builds as its bytes arrive, hashed off the request's path:
it must equal the SHA-256 of exactly the stored bytes, or not be used at all."""

from __future__ import annotations

import asyncio
import hashlib
import os
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

import homeport.uploads.service as upload_service
from homeport.uploads.blocks import BLOCK_BYTES
from homeport.uploads.digests import RunningDigests, read_part, read_part_but_tail
from tests.conftest import Harness
from tests.uploads.conftest import Uploader
from tests.uploads.test_tus_protocol import tus_for

PART = 256 * 1024


def parts_of(data: bytes, size: int = PART) -> list[bytes]:
    return [data[start : start + size] for start in range(0, len(data), size)]


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


async def add_in_order(digests: RunningDigests, upload: str, parts: list[bytes]) -> dict[int, str]:
    """Each part handed over as a verified REST part; the part hashes finishing compares."""
    recorded: dict[int, str] = {}
    offset = 0
    for number, part in enumerate(parts, start=1):
        await digests.add_part(upload, offset, number, [part], sha(part))
        recorded[number] = sha(part)
        offset += len(part)
    return recorded


async def _body(pieces: list[bytes]) -> AsyncIterator[bytes]:
    for piece in pieces:
        yield piece


@pytest.mark.parametrize(
    "sizes",
    [
        [BLOCK_BYTES] * 4,  # ends on a block boundary
        [100_000] * 10 + [1],
        [7],
        [BLOCK_BYTES + 1, BLOCK_BYTES - 1],
    ],
)
async def test_a_part_read_but_its_last_block_hashes_to_the_whole(sizes: list[int]) -> None:
    pieces = [os.urandom(size) for size in sizes]
    whole = b"".join(pieces)
    read = await read_part_but_tail(_body(pieces), len(whole))
    assert b"".join(read.pieces) == whole
    assert read.tail  # the last block waits for the caller's worker thread
    assert read.finish() == hashlib.sha256(whole).hexdigest()
    assert (await read_part(_body(pieces), len(whole)))[1] == hashlib.sha256(whole).hexdigest()


async def test_parts_in_order_give_the_file_digest() -> None:
    digests = RunningDigests()
    data = os.urandom(5 * PART + 17)
    recorded = await add_in_order(digests, "u1", parts_of(data))
    assert digests.covers("u1", len(data))
    assert await digests.take("u1", len(data), recorded) == sha(data)
    # Taken: a second finish hashes from storage.
    assert await digests.take("u1", len(data), recorded) is None


async def test_a_part_out_of_order_leaves_a_gap() -> None:
    digests = RunningDigests()
    parts = parts_of(os.urandom(3 * PART))
    await digests.add_part("u1", 0, 1, [parts[0]], sha(parts[0]))
    await digests.add_part("u1", 2 * PART, 3, [parts[2]], sha(parts[2]))
    await digests.add_part("u1", PART, 2, [parts[1]], sha(parts[1]))
    recorded = {number: sha(part) for number, part in enumerate(parts, start=1)}
    assert not digests.covers("u1", 3 * PART)
    assert await digests.take("u1", 3 * PART, recorded) is None


async def test_a_resent_part_keeps_the_digest_only_when_identical() -> None:
    digests = RunningDigests()
    data = os.urandom(3 * PART)
    parts = parts_of(data)
    recorded = await add_in_order(digests, "same", parts)
    await digests.add_part("same", PART, 2, [parts[1]], sha(parts[1]))
    assert await digests.take("same", len(data), recorded) == sha(data)

    recorded = await add_in_order(digests, "other", parts)
    replacement = os.urandom(PART)
    await digests.add_part("other", PART, 2, [replacement], sha(replacement))
    assert not digests.covers("other", len(data))
    replaced = {**recorded, 2: sha(replacement)}
    assert await digests.take("other", len(data), replaced) is None


async def test_a_stored_part_other_than_the_hashed_one_is_not_trusted() -> None:
    digests = RunningDigests()
    data = os.urandom(2 * PART)
    recorded = await add_in_order(digests, "u1", parts_of(data))
    assert await digests.take("u1", len(data), {**recorded, 1: sha(b"other bytes")}) is None


async def test_appended_bytes_grow_only_along_the_file() -> None:
    digests = RunningDigests()
    data = os.urandom(4 * PART)
    for offset in range(0, len(data), PART):
        await digests.append("t1", offset, [data[offset : offset + PART]])
    assert await digests.take("t1", len(data), {}) == sha(data)

    await digests.append("t2", 0, [data[:PART]])
    await digests.append("t2", 2 * PART, [data[2 * PART : 3 * PART]])  # a hole: dropped
    assert not digests.covers("t2", PART)
    assert await digests.take("t2", 3 * PART, {}) is None
    # Nothing starts a digest but the file's first byte.
    await digests.append("t3", PART, [data[PART : 2 * PART]])
    assert not digests.covers("t3", 2 * PART)


async def test_a_small_backlog_bound_still_hashes_every_byte_in_order() -> None:
    digests = RunningDigests(max_backlog_bytes=PART)
    data = os.urandom(40 * 4096 + 5)
    for offset in range(0, len(data), 4096):
        await digests.append("t1", offset, [data[offset : offset + 4096]])
    assert await digests.take("t1", len(data), {}) == sha(data)


async def test_handing_over_waits_once_all_uploads_hold_too_much_unhashed() -> None:
    digests = RunningDigests(max_total_backlog_bytes=3 * PART)
    first, second = os.urandom(2 * PART), os.urandom(2 * PART)
    await digests.append("a", 0, [first])
    assert digests.backlog_bytes == 2 * PART  # under the bound: handed over, not waited for
    await digests.append("b", 0, [second])  # 4 parts in all: waits for its own hashing
    assert digests.backlog_bytes <= 2 * PART
    assert await digests.take("a", len(first), {}) == sha(first)
    assert await digests.take("b", len(second), {}) == sha(second)
    assert digests.backlog_bytes == 0


async def test_a_finish_that_gives_up_waiting_leaves_the_digest_to_the_next() -> None:
    digests = RunningDigests()
    data = os.urandom(60 * PART)  # enough that hashing is still running when take starts
    await digests.append("t1", 0, parts_of(data))
    waiting = asyncio.ensure_future(digests.take("t1", len(data), {}))
    await asyncio.sleep(0)
    waiting.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiting
    assert await digests.take("t1", len(data), {}) == sha(data)


async def test_dropped_while_hashing_is_not_handed_out() -> None:
    digests = RunningDigests()
    data = os.urandom(60 * PART)
    await digests.append("t1", 0, parts_of(data))
    waiting = asyncio.ensure_future(digests.take("t1", len(data), {}))
    await asyncio.sleep(0)
    digests.drop("t1")
    assert await waiting is None


# Through the API: a file sent in order is never read back to be hashed.


@pytest.fixture
def hashes_from_storage(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The storage keys finishing hashed by reading them back."""
    keys: list[str] = []
    original: Callable[..., Any] = upload_service.sha256_of

    async def counted(storage: Any, key: str) -> str:
        keys.append(key)
        return str(await original(storage, key))

    monkeypatch.setattr(upload_service, "sha256_of", counted)
    return keys


async def test_rest_chunks_in_order_are_not_read_back(
    uploader: Uploader, hashes_from_storage: list[str]
) -> None:
    data = os.urandom(uploader.unit * 3 + 999)
    upload = await uploader.init(data)
    await uploader.send_all(upload, data)
    finished = await uploader.finalize(upload["upload_id"])
    assert finished.status_code == 200, finished.text
    assert finished.json()["checksum"] == sha(data)
    assert hashes_from_storage == []


async def test_rest_chunks_out_of_order_are_hashed_from_storage(
    uploader: Uploader, hashes_from_storage: list[str]
) -> None:
    data = os.urandom(uploader.unit * 3 + 999)
    upload = await uploader.init(data)
    await uploader.send_all(upload, data, order=[1, 0, 2, 3])
    finished = await uploader.finalize(upload["upload_id"])
    assert finished.status_code == 200, finished.text
    assert finished.json()["checksum"] == sha(data)
    assert len(hashes_from_storage) == 1


async def test_a_wrong_chunk_is_not_hashed_into_the_file(
    uploader: Uploader, hashes_from_storage: list[str]
) -> None:
    data = os.urandom(uploader.unit * 2)
    upload = await uploader.init(data)
    first = data[: uploader.unit]
    refused = await uploader.chunk(upload["upload_id"], 0, os.urandom(uploader.unit), sha(first))
    assert refused.status_code == 422
    await uploader.send_all(upload, data)
    finished = await uploader.finalize(upload["upload_id"])
    assert finished.status_code == 200, finished.text
    assert finished.json()["checksum"] == sha(data)
    assert hashes_from_storage == []  # the refused bytes never reached the digest


async def test_tus_patches_in_order_are_not_read_back(
    harness: Harness, hashes_from_storage: list[str]
) -> None:
    tus = await tus_for(harness)
    data = os.urandom(3 * PART + 5)
    url = await tus.new(len(data))
    offset = 0
    for piece in parts_of(data, PART + 1):
        response = await tus.patch(url, offset, piece)
        assert response.status_code == 204, response.text
        offset += len(piece)
    file_id = response.headers["Homeport-File-Id"]
    described = await tus.client.get(f"/api/v1/files/{file_id}", headers=tus.headers)
    assert described.json()["checksum"] == sha(data)
    assert hashes_from_storage == []
