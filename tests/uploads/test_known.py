"""A chunk of an upload this process knows (``uploads.known``) skips the transaction before its
body and answers exactly as the full path does, also when the upload, the caller's session or
the upload's expiry changed in the database since (another process cancelled or finished it).

Each case goes to two uploads of the same shape in one app: one the app knows (it made it)
and one it is made to forget before every request, which therefore takes the full path."""

from __future__ import annotations

import hashlib
import os
from datetime import timedelta
from typing import Any

import httpx
import pytest
from sqlalchemy import update

from homeport.kit.clock import utcnow
from homeport.models.files import UploadSession
from homeport.uploads.known import KNOWN_PART_MAX_BYTES, KnownUploads
from homeport.uploads.repository import UploadRepository
from homeport.uploads.service import storage_key_for
from tests.uploads.conftest import Uploader, code_of, counted_transactions, scrubbed

CHUNK = 64 * 1024  # the chunk size of the uploads test settings


@pytest.fixture
def storage_backend() -> str:
    # Only a local directory's chunks use what the process knows (see _known_target).
    return "fs"


def payload(size: int) -> bytes:
    return os.urandom(size)


class Pair:
    """Two uploads of the same bytes: ``known`` to the app, ``forgotten`` before each request."""

    def __init__(self, uploader: Uploader, known: dict[str, Any], forgotten: dict[str, Any]):
        self.uploader = uploader
        self.known = known
        self.forgotten = forgotten

    @classmethod
    async def make(cls, uploader: Uploader, data: bytes, **fields: Any) -> Pair:
        return cls(
            uploader, await uploader.init(data, **fields), await uploader.init(data, **fields)
        )

    def forget(self) -> None:
        tenant_id = self.uploader.tenant.id
        self.uploader.harness.state.known_uploads.forget(tenant_id, self.forgotten["upload_id"])

    def normal(self, answer: httpx.Response) -> tuple[int, str]:
        ids = [self.known["upload_id"], self.forgotten["upload_id"]]
        return answer.status_code, scrubbed(answer.text, ids)

    async def chunk(
        self, index: int, data: bytes, checksum: str | None = None, *, known: bool = True
    ) -> tuple[int, str]:
        """The same chunk to both uploads; both answers, normalised, must be the same.
        ``known``: the app still knows the first upload (it forgets one it found closed)."""
        state = self.uploader.harness.state
        remembered = state.known_uploads.get(self.uploader.tenant.id, self.known["upload_id"])
        assert (remembered is not None) == known
        answers = []
        for upload in (self.known, self.forgotten):
            if upload is self.forgotten:
                self.forget()
            sent = await self.uploader.chunk(upload["upload_id"], index, data, checksum)
            answers.append(self.normal(sent))
        assert answers[0] == answers[1]
        return answers[0]

    async def uploaded(self) -> list[list[int]]:
        """Each upload's recorded chunks."""
        found = []
        for upload in (self.known, self.forgotten):
            response = await self.uploader.client.get(
                f"/api/v1/uploads/{upload['upload_id']}/status", headers=self.uploader.headers
            )
            assert response.status_code == 200, response.text
            found.append(sorted(response.json()["uploaded_chunks"]))
        return found


async def test_a_known_uploads_chunk_takes_one_transaction(uploader: Uploader) -> None:
    data = payload(2 * CHUNK)
    upload = await uploader.init(data)
    harness = uploader.harness
    with counted_transactions(harness) as known:
        response = await uploader.chunk(upload["upload_id"], 0, data[:CHUNK])
    assert response.status_code == 200, response.text
    harness.state.known_uploads.forget(uploader.tenant.id, upload["upload_id"])
    with counted_transactions(harness) as full:
        response = await uploader.chunk(upload["upload_id"], 1, data[CHUNK:])
    assert response.status_code == 200, response.text
    assert (known[0], full[0]) == (1, 2)
    # The full path remembered it again.
    assert harness.state.known_uploads.get(uploader.tenant.id, upload["upload_id"]) is not None
    finished = await uploader.finalize(upload["upload_id"])
    assert finished.status_code == 200, finished.text
    assert finished.json()["checksum"] == hashlib.sha256(data).hexdigest()
    assert harness.state.known_uploads.get(uploader.tenant.id, upload["upload_id"]) is None


async def test_known_and_full_paths_answer_alike(uploader: Uploader) -> None:
    data = payload(2 * CHUNK + 100)
    pair = await Pair.make(uploader, data)
    first, second, last = data[:CHUNK], data[CHUNK : 2 * CHUNK], data[2 * CHUNK :]
    assert code_of(await pair.chunk(0, first)) == (200, None)
    assert code_of(await pair.chunk(0, first)) == (200, None)  # re-sent
    wrong = bytes(CHUNK)
    assert code_of(await pair.chunk(1, wrong, hashlib.sha256(second).hexdigest())) == (
        422,
        "UPLOAD_002",
    )
    assert code_of(await pair.chunk(1, second[:-1])) == (400, "UPLOAD_001")  # short
    assert code_of(await pair.chunk(1, second + b"x")) == (400, "UPLOAD_001")  # long
    assert code_of(await pair.chunk(2, last + b"x")) == (400, "UPLOAD_001")
    assert code_of(await pair.chunk(3, last)) == (400, "UPLOAD_001")  # past the end
    assert code_of(await pair.chunk(1, second, "ab" * 16)) == (422, "VALIDATION_001")
    # A bad re-send of a recorded chunk keeps the good bytes.
    bad = await pair.chunk(0, wrong, hashlib.sha256(first).hexdigest())
    assert code_of(bad) == (422, "UPLOAD_002")
    assert await pair.uploaded() == [[0], [0]]
    assert code_of(await pair.chunk(2, last)) == (200, None)
    assert code_of(await pair.chunk(1, second)) == (200, None)
    for upload in (pair.known, pair.forgotten):
        finished = await uploader.finalize(upload["upload_id"])
        assert finished.status_code == 200, finished.text
        assert finished.json()["checksum"] == hashlib.sha256(data).hexdigest()


async def test_a_declared_type_the_first_chunk_contradicts(uploader: Uploader) -> None:
    data = payload(CHUNK)
    pair = await Pair.make(uploader, data, mime_type="image/png", filename="a.png")
    assert code_of(await pair.chunk(0, data)) == (400, "UPLOAD_001")
    # The checksum is answered before the type, as on the full path.
    assert code_of(await pair.chunk(0, data, "ab" * 32)) == (422, "UPLOAD_002")
    assert await pair.uploaded() == [[], []]


async def test_a_re_sent_first_chunk_the_declared_type_contradicts(uploader: Uploader) -> None:
    png = b"\x89PNG\r\n\x1a\n" + bytes(8) + b"IHDR" + os.urandom(CHUNK - 20)
    data = png + os.urandom(10)
    pair = await Pair.make(uploader, data, mime_type="image/png", filename="a.png")
    assert code_of(await pair.chunk(0, png)) == (200, None)
    other = payload(CHUNK)  # matches its checksum, but is no PNG
    assert code_of(await pair.chunk(0, other)) == (400, "UPLOAD_001")
    harness = uploader.harness
    for upload in (pair.known, pair.forgotten):  # the stored first chunk did not change
        key = storage_key_for(uploader.tenant.id, upload["upload_id"])
        assert (await harness.state.storage.get(key))[:CHUNK] == png


@pytest.mark.parametrize("body", ["good", "bad"])
async def test_an_upload_cancelled_elsewhere(
    uploader: Uploader, elsewhere: httpx.AsyncClient, body: str
) -> None:
    data = payload(2 * CHUNK)
    pair = await Pair.make(uploader, data)
    assert code_of(await pair.chunk(0, data[:CHUNK])) == (200, None)
    for upload in (pair.known, pair.forgotten):
        cancelled = await elsewhere.delete(
            f"/api/v1/uploads/{upload['upload_id']}", headers=uploader.headers
        )
        assert cancelled.status_code == 200, cancelled.text
    # A bad body too: the upload's state is answered first, as before a body.
    sent = data[CHUNK:] if body == "good" else bytes(CHUNK)
    answer = await pair.chunk(1, sent, hashlib.sha256(data[CHUNK:]).hexdigest())
    assert code_of(answer) == (400, "UPLOAD_001")
    assert "cancelled" in answer[1]
    # Found closed: forgotten, and the next chunk takes the full path.
    assert code_of(await pair.chunk(1, data[CHUNK:], known=False)) == (400, "UPLOAD_001")


async def test_an_upload_finished_elsewhere_is_never_written(
    uploader: Uploader, elsewhere: httpx.AsyncClient
) -> None:
    data = payload(2 * CHUNK)
    pair = await Pair.make(uploader, data)
    files = []
    for upload in (pair.known, pair.forgotten):
        for index in (0, 1):
            sent = await elsewhere.post(
                f"/api/v1/uploads/{upload['upload_id']}/chunk/{index}",
                content=data[index * CHUNK : (index + 1) * CHUNK],
                headers={
                    **uploader.headers,
                    "X-Chunk-Checksum": hashlib.sha256(
                        data[index * CHUNK : (index + 1) * CHUNK]
                    ).hexdigest(),
                },
            )
            assert sent.status_code == 200, sent.text
        finished = await elsewhere.post(
            f"/api/v1/uploads/{upload['upload_id']}/finalize", headers=uploader.headers
        )
        assert finished.status_code == 200, finished.text
        files.append(finished.json())
    other = payload(CHUNK)  # a well-formed chunk of other bytes
    assert code_of(await pair.chunk(0, other)) == (409, "VALIDATION_003")
    for file in files:
        downloaded = await uploader.download(file["file_url"])
        assert downloaded.status_code == 200
        assert downloaded.content == data


async def test_a_chunk_while_a_finalize_holds_the_upload(uploader: Uploader) -> None:
    data = payload(2 * CHUNK)
    pair = await Pair.make(uploader, data)
    assert code_of(await pair.chunk(0, data[:CHUNK])) == (200, None)
    harness = uploader.harness
    ids = [pair.known["upload_id"], pair.forgotten["upload_id"]]
    now = utcnow()
    async with harness.state.database.transaction() as session:
        for upload_id in ids:  # as a finalize (or cancel) in another process holds it
            taken = await UploadRepository(session).take_lease(
                uploader.tenant.id, upload_id, "finalize", now, now + timedelta(minutes=1)
            )
            assert taken
    other = payload(CHUNK)  # a well-formed re-send of other bytes
    refused = await pair.chunk(0, other)
    assert code_of(refused) == (423, "UPLOAD_004")
    assert code_of(await pair.chunk(1, data[CHUNK:])) == (423, "UPLOAD_004")
    # The body is answered before the lease, as on the full path.
    wrong = await pair.chunk(1, bytes(CHUNK), hashlib.sha256(data[CHUNK:]).hexdigest())
    assert code_of(wrong) == (422, "UPLOAD_002")
    assert await pair.uploaded() == [[0], [0]]
    for upload_id in ids:  # the bytes a finalize is checking did not change
        stored = await harness.state.storage.get(storage_key_for(uploader.tenant.id, upload_id))
        assert stored[:CHUNK] == data[:CHUNK]
    async with harness.state.database.transaction() as session:
        for upload_id in ids:
            await UploadRepository(session).release_lease(uploader.tenant.id, upload_id, "finalize")
    assert code_of(await pair.chunk(1, data[CHUNK:])) == (200, None)
    for upload in (pair.known, pair.forgotten):
        finished = await uploader.finalize(upload["upload_id"])
        assert finished.status_code == 200, finished.text
        assert finished.json()["checksum"] == hashlib.sha256(data).hexdigest()


async def test_an_upload_expired_in_the_database(uploader: Uploader) -> None:
    data = payload(2 * CHUNK)
    pair = await Pair.make(uploader, data)
    async with uploader.harness.state.database.transaction() as session:
        await session.execute(
            update(UploadSession)
            .where(UploadSession.id.in_([pair.known["upload_id"], pair.forgotten["upload_id"]]))
            .values(expires_at=utcnow() - timedelta(seconds=1))
        )
    assert code_of(await pair.chunk(0, data[:CHUNK])) == (410, "UPLOAD_003")
    assert (
        uploader.harness.state.known_uploads.get(uploader.tenant.id, pair.known["upload_id"])
        is None
    )


async def test_a_session_ended_since(uploader: Uploader) -> None:
    data = payload(2 * CHUNK)
    pair = await Pair.make(uploader, data)
    harness = uploader.harness
    device = await harness.owner_headers(uploader.tenant, "phone-2")
    device_pair = Pair(Uploader(harness, uploader.tenant, device), pair.known, pair.forgotten)
    assert code_of(await device_pair.chunk(0, data[:CHUNK])) == (200, None)
    logout = await harness.client.post("/api/v1/auth/logout", headers=device)
    assert logout.status_code == 204, logout.text
    assert code_of(await device_pair.chunk(1, data[CHUNK:])) == (401, "AUTH_001")
    # A bad body too: the caller is answered first, as before a body.
    assert code_of(await device_pair.chunk(1, bytes(CHUNK), "ab" * 32)) == (401, "AUTH_001")
    assert await pair.uploaded() == [[0], [0]]


async def test_someone_else_and_an_api_key_take_the_full_path(uploader: Uploader) -> None:
    data = payload(CHUNK)
    harness = uploader.harness
    upload = await uploader.init(data)
    await harness.add_member(uploader.tenant, "member@acme.example.com", "member")
    member = await harness.login_headers("member@acme.example.com", "member-password-1")
    with counted_transactions(harness) as count:
        response = await uploader.client.post(
            f"/api/v1/uploads/{upload['upload_id']}/chunk/0",
            content=data,
            headers={**member, "X-Chunk-Checksum": hashlib.sha256(data).hexdigest()},
        )
    assert response.status_code == 404, response.text
    assert count[0] == 1  # refused in the transaction before the body
    assert harness.state.known_uploads.get(uploader.tenant.id, upload["upload_id"]) is not None


async def test_a_part_past_the_bound_takes_the_full_path(uploader: Uploader) -> None:
    data = payload(KNOWN_PART_MAX_BYTES + 1)
    upload = await uploader.init(data, chunk_size=KNOWN_PART_MAX_BYTES + 1)
    assert upload["chunk_size"] == KNOWN_PART_MAX_BYTES + 1
    with counted_transactions(uploader.harness) as count:
        response = await uploader.chunk(upload["upload_id"], 0, data)
    assert response.status_code == 200, response.text
    assert count[0] == 2


def known_upload(number: int, status: str = "open") -> UploadSession:
    now = utcnow()
    return UploadSession(
        id=f"u{number}",
        tenant_id="t",
        owner_id="o",
        protocol="rest",
        status=status,
        filename="a.bin",
        mime_type=None,
        access="private",
        total_size=10,
        chunk_size=5,
        total_chunks=2,
        storage_key=f"t/t/u/u{number}",
        expires_at=now + timedelta(hours=1),
        created_at=now,
        updated_at=now,
    )


def test_known_uploads_forget_the_least_recently_used() -> None:
    known = KnownUploads(capacity=2)
    known.remember(known_upload(1))
    known.remember(known_upload(2))
    assert known.get("t", "u1") is not None  # now the most recently used
    known.remember(known_upload(3))
    assert [known.get("t", f"u{n}") is not None for n in (1, 2, 3)] == [True, False, True]
    assert len(known) == 2
    known.forget("t", "u1")
    assert known.get("t", "u1") is None
    assert known.get("other-tenant", "u3") is None


def test_only_open_uploads_are_remembered() -> None:
    known = KnownUploads()
    for status in ("finalized", "cancelled", "expired"):
        known.remember(known_upload(1, status))
    assert len(known) == 0
