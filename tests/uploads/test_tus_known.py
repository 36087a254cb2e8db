"""A tus PATCH of an upload this process knows (``uploads.known``) skips the transaction before
its body and answers exactly as the full path does, also when the upload, the caller's session
or the upload's expiry changed in the database since (another process terminated it).

Each case goes to two uploads of the same shape in one app: one the app knows (it created it)
and one it is made to forget before every request, which therefore takes the full path."""

from __future__ import annotations

import asyncio
import os
from datetime import timedelta
from typing import Any

import httpx
import pytest
from sqlalchemy import update

from homeport.config import Settings
from homeport.kit.clock import utcnow
from homeport.models.files import UploadSession
from homeport.uploads.known import KNOWN_PART_MAX_BYTES
from homeport.uploads.repository import UploadRepository
from homeport.uploads.service import storage_key_for
from tests.conftest import running_harness
from tests.live_server import LiveServer
from tests.uploads.conftest import (
    Uploader,
    code_of,
    counted_transactions,
    make_uploader,
    scrubbed,
)
from tests.uploads.test_tus_protocol import (
    OFFSET_TYPE,
    TUS,
    VERSION,
    Tus,
    digest_header,
    live_tus,
    metadata,
    slow_body,
    upload_id_of,
)

PIECE = 64 * 1024
# The headers whose values the two paths must agree on.
_COMPARED = ("upload-offset", "upload-length", "tus-resumable", "content-type")


@pytest.fixture
def storage_backend() -> str:
    # Only a local directory's PATCHes use what the process knows (see _known_target).
    return "fs"


@pytest.fixture
def tus(uploader: Uploader) -> Tus:
    return Tus(uploader.harness, uploader.headers)


class Pair:
    """Two tus uploads of the same length: ``known`` to the app, ``forgotten`` before each
    request."""

    def __init__(self, tus: Tus, tenant_id: str, known: str, forgotten: str) -> None:
        self.tus = tus
        self.tenant_id = tenant_id
        self.known = known
        self.forgotten = forgotten

    @classmethod
    async def make(cls, tus: Tus, tenant_id: str, length: int, **headers: str) -> Pair:
        urls = []
        for _ in range(2):
            created = await tus.create(length, **headers)
            assert created.status_code == 201, created.text
            urls.append(created.headers["Location"])
        return cls(tus, tenant_id, *urls)

    @property
    def known_uploads(self) -> Any:
        return self.tus.harness.state.known_uploads

    def forget(self) -> None:
        self.known_uploads.forget(self.tenant_id, upload_id_of(self.forgotten))

    def normal(self, answer: httpx.Response) -> tuple[Any, ...]:
        text = scrubbed(answer.text, [upload_id_of(self.known), upload_id_of(self.forgotten)])
        headers = tuple(answer.headers.get(name) for name in _COMPARED)
        finished = "homeport-file-id" in answer.headers
        return answer.status_code, headers, finished, text

    async def patch(
        self, offset: int, body: bytes, *, known: bool = True, **headers: str
    ) -> tuple[Any, ...]:
        """The same PATCH to both uploads; both answers, normalised, must be the same.
        ``known``: the app still knows the first upload (it forgets one it found closed)."""
        remembered = self.known_uploads.get(self.tenant_id, upload_id_of(self.known))
        assert (remembered is not None) == known
        answers = []
        for url in (self.known, self.forgotten):
            if url == self.forgotten:
                self.forget()
            answers.append(self.normal(await self.tus.patch(url, offset, body, **headers)))
        assert answers[0] == answers[1]
        return answers[0]

    async def offsets(self) -> list[int]:
        return [await self.tus.offset(url) for url in (self.known, self.forgotten)]

    async def stored(self) -> list[bytes]:
        storage = self.tus.harness.state.storage
        return [
            await storage.get(storage_key_for(self.tenant_id, upload_id_of(url)))
            for url in (self.known, self.forgotten)
        ]


async def test_a_known_uploads_patch_takes_one_transaction(tus: Tus, uploader: Uploader) -> None:
    harness = uploader.harness
    url = await tus.new(2 * PIECE)
    data = os.urandom(2 * PIECE)
    with counted_transactions(harness) as known:
        patched = await tus.patch(url, 0, data[:PIECE])
    assert patched.status_code == 204, patched.text
    harness.state.known_uploads.forget(uploader.tenant.id, upload_id_of(url))
    with counted_transactions(harness) as full:
        patched = await tus.patch(url, PIECE, data[PIECE : PIECE + 100])
    assert patched.status_code == 204, patched.text
    assert (known[0], full[0]) == (1, 2)
    # The full path remembered it again.
    assert harness.state.known_uploads.get(uploader.tenant.id, upload_id_of(url)) is not None


async def test_known_and_full_paths_answer_alike(tus: Tus, uploader: Uploader) -> None:
    data = os.urandom(3 * PIECE + 1000)
    pair = await Pair.make(tus, uploader.tenant.id, len(data))
    first = await pair.patch(0, data[:PIECE])
    assert first[:2] == (204, (str(PIECE), str(len(data)), "1.0.0", None))
    assert code_of(await pair.patch(0, data[:PIECE])) == (409, "UPLOAD_005")
    # A body that does not match its checksum: 460, nothing kept.
    bad = digest_header("sha256", data[:PIECE])
    answer = await pair.patch(PIECE, data[PIECE : 2 * PIECE], **{"Upload-Checksum": bad})
    assert code_of(answer) == (460, "UPLOAD_002")
    assert await pair.offsets() == [PIECE, PIECE]
    good = digest_header("sha1", data[PIECE : 2 * PIECE])
    answer = await pair.patch(PIECE, data[PIECE : 2 * PIECE], **{"Upload-Checksum": good})
    assert answer[:2] == (204, (str(2 * PIECE), str(len(data)), "1.0.0", None))
    # Past Upload-Length (the full path answers it for both).
    assert code_of(await pair.patch(2 * PIECE, data[2 * PIECE :] + b"x"))[0] == 413
    last = await pair.patch(2 * PIECE, data[2 * PIECE :])
    assert last[:3] == (204, (str(len(data)), str(len(data)), "1.0.0", None), True)
    assert await pair.stored() == [data, data]
    # Finished: forgotten, and a PATCH at the end is answered alike.
    assert code_of(await pair.patch(len(data) - 1, b"x", known=False))[0] == 409


async def test_checksums_of_both_kinds_are_checked(tus: Tus, uploader: Uploader) -> None:
    data = os.urandom(2 * PIECE)
    pair = await Pair.make(tus, uploader.tenant.id, len(data))
    for algorithm in ("sha1", "sha256"):
        wrong = digest_header(algorithm, data[PIECE:])
        answer = await pair.patch(0, data[:PIECE], **{"Upload-Checksum": wrong})
        assert code_of(answer) == (460, "UPLOAD_002")
    assert await pair.offsets() == [0, 0]
    # The full path writes a body as it arrives (past the offset, where nothing counts); the
    # known path writes only a body that passed.
    assert (await pair.stored())[0] == b""
    good = digest_header("sha256", data[:PIECE])
    assert (await pair.patch(0, data[:PIECE], **{"Upload-Checksum": good}))[0] == 204


async def test_a_declared_type_the_first_bytes_contradict(tus: Tus, uploader: Uploader) -> None:
    data = os.urandom(PIECE)
    headers = {"Upload-Metadata": metadata(filename="p.png", filetype="image/png")}
    pair = await Pair.make(tus, uploader.tenant.id, len(data), **headers)
    # The checksum is answered before the type, as on the full path.
    wrong = digest_header("sha256", b"other")
    assert code_of(await pair.patch(0, data, **{"Upload-Checksum": wrong}))[0] == 460
    answer = await pair.patch(0, data)
    assert code_of(answer) == (400, "UPLOAD_001")
    assert "does not match the content" in answer[-1]
    assert await pair.offsets() == [0, 0]
    assert (await pair.stored())[0] == b""


async def test_a_patch_while_another_writer_holds_the_upload(tus: Tus, uploader: Uploader) -> None:
    data = os.urandom(2 * PIECE)
    pair = await Pair.make(tus, uploader.tenant.id, len(data))
    assert (await pair.patch(0, data[:PIECE]))[0] == 204
    harness = uploader.harness
    ids = [upload_id_of(pair.known), upload_id_of(pair.forgotten)]
    now = utcnow()
    async with harness.state.database.transaction() as session:
        for upload_id in ids:  # as a PATCH in another process holds it
            taken = await UploadRepository(session).take_lease(
                uploader.tenant.id, upload_id, "other", now, now + timedelta(minutes=1)
            )
            assert taken
    assert code_of(await pair.patch(PIECE, data[PIECE:])) == (423, "UPLOAD_004")
    # The offset is answered before the lease, a checksum after it (as on the full path).
    assert code_of(await pair.patch(0, data[:PIECE])) == (409, "UPLOAD_005")
    wrong = digest_header("sha256", b"other")
    answer = await pair.patch(PIECE, data[PIECE:], **{"Upload-Checksum": wrong})
    assert code_of(answer) == (423, "UPLOAD_004")
    assert await pair.stored() == [data[:PIECE], data[:PIECE]]
    async with harness.state.database.transaction() as session:
        for upload_id in ids:
            await UploadRepository(session).release_lease(uploader.tenant.id, upload_id, "other")
    assert (await pair.patch(PIECE, data[PIECE:]))[:3] == (
        204,
        (str(len(data)), str(len(data)), "1.0.0", None),
        True,
    )
    assert await pair.stored() == [data, data]


async def test_an_upload_terminated_elsewhere(
    tus: Tus, uploader: Uploader, elsewhere: httpx.AsyncClient
) -> None:
    data = os.urandom(2 * PIECE)
    pair = await Pair.make(tus, uploader.tenant.id, len(data))
    assert (await pair.patch(0, data[:PIECE]))[0] == 204
    for url in (pair.known, pair.forgotten):
        terminated = await elsewhere.delete(url, headers=tus.headers)
        assert terminated.status_code == 204, terminated.text
    assert code_of(await pair.patch(PIECE, data[PIECE:])) == (404, "NOT_FOUND")
    # Found closed: forgotten.
    assert code_of(await pair.patch(PIECE, data[PIECE:], known=False)) == (404, "NOT_FOUND")


async def test_an_upload_expired_in_the_database(tus: Tus, uploader: Uploader) -> None:
    data = os.urandom(PIECE)
    pair = await Pair.make(tus, uploader.tenant.id, len(data))
    ids = [upload_id_of(pair.known), upload_id_of(pair.forgotten)]
    async with uploader.harness.state.database.transaction() as session:
        await session.execute(
            update(UploadSession)
            .where(UploadSession.id.in_(ids))
            .values(expires_at=utcnow() - timedelta(seconds=1))
        )
    assert code_of(await pair.patch(0, data)) == (410, "UPLOAD_003")
    assert pair.known_uploads.get(uploader.tenant.id, ids[0]) is None


async def test_a_session_ended_since(tus: Tus, uploader: Uploader) -> None:
    data = os.urandom(2 * PIECE)
    harness = uploader.harness
    device = await harness.owner_headers(uploader.tenant, "phone-2")
    device_tus = Tus(harness, device)
    pair = await Pair.make(device_tus, uploader.tenant.id, len(data))
    assert (await pair.patch(0, data[:PIECE]))[0] == 204
    logout = await harness.client.post("/api/v1/auth/logout", headers=device)
    assert logout.status_code == 204, logout.text
    assert code_of(await pair.patch(PIECE, data[PIECE:])) == (401, "AUTH_001")
    # A bad body too: the caller is answered first.
    wrong = digest_header("sha256", b"other")
    answer = await pair.patch(PIECE, data[PIECE:], **{"Upload-Checksum": wrong})
    assert code_of(answer) == (401, "AUTH_001")
    assert await Pair(tus, uploader.tenant.id, pair.known, pair.forgotten).offsets() == [
        PIECE,
        PIECE,
    ]


async def test_someone_else_and_large_bodies_take_the_full_path(
    tus: Tus, uploader: Uploader
) -> None:
    harness = uploader.harness
    url = await tus.new(KNOWN_PART_MAX_BYTES + 1)
    await harness.add_member(uploader.tenant, "member@acme.example.com", "member")
    member = await harness.login_headers("member@acme.example.com", "member-password-1")
    with counted_transactions(harness) as count:
        refused = await Tus(harness, member).patch(url, 0, b"x")
    assert refused.status_code == 404, refused.text
    assert count[0] == 1  # refused in the transaction before the body
    data = os.urandom(KNOWN_PART_MAX_BYTES + 1)
    with counted_transactions(harness) as count:
        patched = await tus.patch(url, 0, data)
    assert patched.status_code == 204, patched.text
    assert count[0] > 1  # two, and the finish's own
    assert "Homeport-File-Id" in patched.headers


# Live: bodies that arrive slowly or not at all


async def test_a_second_patch_while_a_known_one_reads_its_body_is_423(
    settings: Settings,
) -> None:
    first_body = [os.urandom(PIECE) for _ in range(4)]
    size = sum(map(len, first_body))
    started = asyncio.Event()
    async with (
        live_tus(settings) as (server, harness, headers),
        httpx.AsyncClient(base_url=server.base_url, timeout=30) as client,
    ):
        created = await client.post(TUS, headers={**headers, "Upload-Length": str(size)})
        url = created.headers["Location"]
        patch_headers = {**headers, **OFFSET_TYPE, "Upload-Offset": "0"}
        # With a Content-Length: the known path, which reads the body before any transaction.
        first = asyncio.create_task(
            client.patch(
                url,
                content=slow_body(first_body, started, 0.3),
                headers={**patch_headers, "Content-Length": str(size)},
            )
        )
        await started.wait()
        await asyncio.sleep(0.2)
        second = await client.patch(url, content=os.urandom(size), headers=patch_headers)
        assert second.status_code == 423, second.text
        assert second.json()["code"] == "UPLOAD_004"
        finished = await first
        assert finished.status_code == 204, finished.text
        downloaded = await harness.client.get(finished.headers["Homeport-File-Url"])
        assert downloaded.content == b"".join(first_body)


async def test_an_interrupted_known_patch_keeps_what_arrived(settings: Settings) -> None:
    async with live_tus(settings) as (server, harness, headers):
        data = os.urandom(8 * PIECE)
        async with httpx.AsyncClient(base_url=server.base_url, timeout=30) as client:
            created = await client.post(TUS, headers={**headers, "Upload-Length": str(len(data))})
            url = created.headers["Location"]
        # A client that dies after a quarter of a body it announced whole.
        _reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        head = [
            f"PATCH {url.split(server.base_url, 1)[-1]} HTTP/1.1",
            "Host: homeport.test",
            f"Content-Length: {len(data)}",
            "Upload-Offset: 0",
            *(f"{name}: {value}" for name, value in {**headers, **OFFSET_TYPE}.items()),
        ]
        writer.write(("\r\n".join(head) + "\r\n\r\n").encode() + data[: 2 * PIECE])
        await writer.drain()
        await asyncio.sleep(0.3)
        writer.close()
        await writer.wait_closed()
        async with httpx.AsyncClient(base_url=server.base_url, timeout=30) as client:
            offset = -1
            for _ in range(50):  # the server notices the disconnect shortly after
                head_answer = await client.head(url, headers=headers)
                offset = int(head_answer.headers["Upload-Offset"])
                if offset:
                    break
                await asyncio.sleep(0.1)
            assert offset == 2 * PIECE
            patched = await client.patch(
                url,
                content=data[offset:],
                headers={**headers, **OFFSET_TYPE, "Upload-Offset": str(offset)},
            )
            assert patched.status_code == 204, patched.text
            downloaded = await harness.client.get(patched.headers["Homeport-File-Url"])
            assert downloaded.content == data


async def test_a_rest_chunk_for_a_known_tus_upload_takes_the_full_path(
    tus: Tus, uploader: Uploader
) -> None:
    url = await tus.new(PIECE)
    upload_id = upload_id_of(url)
    assert uploader.harness.state.known_uploads.get(uploader.tenant.id, upload_id) is not None
    with counted_transactions(uploader.harness) as count:
        answer = await uploader.chunk(upload_id, 0, os.urandom(PIECE))
    assert answer.status_code == 400, answer.text
    assert "uses the tus protocol" in answer.json()["detail"]
    assert count[0] == 1  # refused before the body
    assert await tus.offset(url) == 0


async def test_two_instances_that_know_an_upload_never_both_write_one_offset(
    settings: Settings,
) -> None:
    """Each instance reads its body without a lease: the one that records first wins, and the
    other finds the offset moved (409), its bytes not written."""
    async with running_harness(settings) as harness:
        headers = {**(await make_uploader(harness)).headers, **VERSION}
        with LiveServer(settings) as first_server, LiveServer(settings) as second_server:
            async with (
                httpx.AsyncClient(base_url=first_server.base_url, timeout=30) as first,
                httpx.AsyncClient(base_url=second_server.base_url, timeout=30) as second,
            ):
                lead, slow, fast, rest = (os.urandom(size) for size in (100, PIECE, PIECE, 500))
                total = len(lead) + PIECE + len(rest)
                created = await first.post(TUS, headers={**headers, "Upload-Length": str(total)})
                path = created.headers["Location"].split(first_server.base_url, 1)[-1]
                at = {**headers, **OFFSET_TYPE}
                # The second instance takes a PATCH too, and so knows the upload as well.
                patched = await second.patch(
                    path, content=lead, headers={**at, "Upload-Offset": "0"}
                )
                assert patched.status_code == 204, patched.text
                offset = {"Upload-Offset": str(len(lead))}
                started = asyncio.Event()
                late = asyncio.create_task(
                    first.patch(
                        path,
                        content=slow_body([slow[:100], slow[100:]], started, 0.5),
                        headers={**at, **offset, "Content-Length": str(PIECE)},
                    )
                )
                await started.wait()
                early = await second.patch(path, content=fast, headers={**at, **offset})
                assert early.status_code == 204, early.text
                refused = await late
                assert refused.status_code == 409, refused.text
                assert refused.json()["code"] == "UPLOAD_005"
                done = await first.patch(
                    path,
                    content=rest,
                    headers={**at, "Upload-Offset": str(len(lead) + PIECE)},
                )
                assert done.status_code == 204, done.text
        downloaded = await harness.client.get(done.headers["Homeport-File-Url"])
        assert downloaded.content == lead + fast + rest
