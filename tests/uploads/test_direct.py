"""The direct routes of the upload hot paths (a REST chunk, a tus PATCH) answer exactly as
FastAPI does.

The same requests go to two apps on one database and storage: the app as it runs (direct
routes on) and an app without them. Each app gets its own REST and tus upload of the same
shape, and every answer must be the same, status, headers and body, once what differs by
nature is set aside (upload and file ids, trace ids, times, signatures)."""

from __future__ import annotations

import base64
import hashlib
import os
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from starlette.routing import Router

from tests.conftest import Harness, client_without_direct_routes
from tests.uploads.conftest import Uploader, make_uploader

CHUNK = 64 * 1024  # the chunk size of the uploads test settings
REST_SIZE = 2 * CHUNK + 100
TUS_SIZE = 3 * CHUNK + 7
_TIME = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?(Z|[+-]\d\d:\d\d)?")
_HTTP_DATE = re.compile(r"[A-Z][a-z]{2}, \d\d [A-Z][a-z]{2} \d{4} \d\d:\d\d:\d\d GMT")
_SIGNED = re.compile(r"expires=\d+&signature=[0-9a-f]+")
_REMAINING = re.compile(r"r=\d+;t=\d+")
_VOLATILE_HEADERS = {"x-trace-id", "date"}
TUS = {"Tus-Resumable": "1.0.0"}
OFFSET_TYPE = {"Content-Type": "application/offset+octet-stream"}


@pytest.fixture
def storage_backend() -> str:
    return "fs"


@pytest.fixture
async def plain_client(upload_harness: Harness) -> AsyncIterator[httpx.AsyncClient]:
    """A second app on the harness's database, storage and secrets, without direct routes."""
    async with client_without_direct_routes(upload_harness.settings) as client:
        yield client


@dataclass
class Uploads:
    """One app's REST and tus upload, and the ids its answers may name."""

    client: httpx.AsyncClient
    rest_id: str
    tus_id: str
    file_ids: list[str]

    async def send(
        self, method: str, path: str, headers: dict[str, str], body: bytes | None
    ) -> httpx.Response:
        path = path.replace("{rest}", self.rest_id).replace("{tus}", self.tus_id)
        answer = await self.client.request(method, path, headers=headers, content=body)
        if file_id := answer.headers.get("homeport-file-id"):
            self.file_ids.append(file_id)
        return answer

    def normal(self, answer: httpx.Response) -> tuple[int, list[tuple[str, str]], str]:
        def plain(text: str) -> str:
            text = text.replace(self.rest_id, "<rest>").replace(self.tus_id, "<tus>")
            for file_id in self.file_ids:
                text = text.replace(file_id, "<file>")
            text = _SIGNED.sub("<signed>", _HTTP_DATE.sub("<date>", _TIME.sub("<time>", text)))
            return _REMAINING.sub("<left>", text)

        trace_id = answer.headers.get("x-trace-id") or "<no trace>"
        headers = sorted(
            (name, plain(value))
            for name, value in answer.headers.items()
            if name not in _VOLATILE_HEADERS
        )
        return answer.status_code, headers, plain(answer.text.replace(trace_id, "<trace>"))


async def _uploads(client: httpx.AsyncClient, owner: dict[str, str], data: bytes) -> Uploads:
    init = await client.post(
        "/api/v1/uploads/init",
        headers=owner,
        json={
            "filename": "a.bin",
            "total_size": REST_SIZE,
            "mime_type": "application/octet-stream",
            "file_hash": hashlib.sha256(data[:REST_SIZE]).hexdigest(),
        },
    )
    assert init.status_code == 201, init.text
    created = await client.post(
        "/api/v1/tus/", headers={**owner, **TUS, "Upload-Length": str(TUS_SIZE)}
    )
    assert created.status_code == 201, created.text
    tus_id = created.headers["Location"].rsplit("/", 1)[1]
    return Uploads(client, init.json()["upload_id"], tus_id, [])


def _requests(
    owner: dict[str, str], stranger: dict[str, str], data: bytes
) -> list[tuple[str, str, dict[str, str], bytes | None]]:
    chunks = [data[i * CHUNK : (i + 1) * CHUNK] for i in range(3)]
    chunks[2] = data[2 * CHUNK : REST_SIZE]

    def chunk(index: int | str, body: bytes, headers: dict[str, str], checksum: str | None) -> Any:
        extra = {"Content-Type": "application/octet-stream"}
        if checksum is not None:
            extra["X-Chunk-Checksum"] = checksum
        return ("POST", f"/api/v1/uploads/{{rest}}/chunk/{index}", {**headers, **extra}, body)

    def sha(body: bytes) -> str:
        return hashlib.sha256(body).hexdigest()

    def patch(offset: int | str, body: bytes, headers: dict[str, str]) -> Any:
        extra = {**TUS, **OFFSET_TYPE, "Upload-Offset": str(offset)}
        return ("PATCH", "/api/v1/tus/{tus}", {**extra, **headers}, body)

    def digest(algorithm: str, body: bytes) -> str:
        value = base64.b64encode(hashlib.new(algorithm, body).digest()).decode()
        return f"{algorithm} {value}"

    first, second = data[:CHUNK], data[CHUNK : 2 * CHUNK]
    other = os.urandom(CHUNK)
    return [
        chunk(0, chunks[0], owner, sha(chunks[0])),
        chunk(0, chunks[0], owner, sha(chunks[0])),  # re-sent
        chunk(1, other, owner, sha(chunks[1])),  # 422 UPLOAD_002
        chunk(1, chunks[1], owner, None),
        chunk(1, chunks[1], owner, "abc"),
        chunk(1, chunks[1][:-1], owner, sha(chunks[1][:-1])),  # wrong size
        chunk(1, b"", owner, sha(b"")),
        chunk(3, chunks[0], owner, sha(chunks[0])),  # past the last chunk
        chunk("007", chunks[0], owner, sha(chunks[0])),
        chunk("1.0", chunks[1], owner, sha(chunks[1])),
        chunk("abc", chunks[0], owner, sha(chunks[0])),
        chunk("-1", chunks[0], owner, sha(chunks[0])),
        chunk("100001", chunks[0], owner, sha(chunks[0])),
        chunk(2, chunks[2], {}, sha(chunks[2])),  # 401
        chunk(2, chunks[2], {"Authorization": "Bearer not-a-token"}, sha(chunks[2])),
        chunk(2, chunks[2], {"Authorization": "Basic dXNlcjpwdw=="}, sha(chunks[2])),
        chunk(2, chunks[2], {"X-API-Key": "hp_made_up"}, sha(chunks[2])),
        chunk(2, chunks[2], stranger, sha(chunks[2])),  # another tenant: 404
        chunk(2, chunks[2], {**owner, "X-Chunk-Checksum": sha(chunks[2]).upper()}, None),
        ("POST", "/api/v1/uploads/nope/chunk/0", {**owner, "X-Chunk-Checksum": sha(b"")}, b""),
        ("POST", f"/api/v1/uploads/{'u' * 65}/chunk/0", owner, b""),
        ("POST", "/api/v1/uploads/{tus}/chunk/0", {**owner, "X-Chunk-Checksum": sha(first)}, first),
        patch(0, first, owner),
        patch(0, first, owner),  # 409: the offset moved
        patch(CHUNK, second, {"Tus-Resumable": "0.2.2", **owner}),  # 412
        ("PATCH", "/api/v1/tus/{tus}", {**OFFSET_TYPE, "Upload-Offset": "0", **owner}, second),
        patch(CHUNK, second, {**owner, "Content-Type": "application/octet-stream"}),  # 415
        ("PATCH", "/api/v1/tus/{tus}", {**TUS, **OFFSET_TYPE, **owner}, second),
        patch("abc", second, owner),
        patch(CHUNK, second, {**owner, "Upload-Checksum": digest("sha1", first)}),  # 460
        patch(CHUNK, second, {**owner, "Upload-Checksum": "md5 AAAA"}),
        patch(CHUNK, second, {}),  # 401
        patch(CHUNK, second, stranger),
        patch(CHUNK, second, {**owner, "Upload-Checksum": digest("sha256", second)}),
        patch(2 * CHUNK, data[2 * CHUNK : TUS_SIZE] + b"past the end", owner),
        ("PATCH", "/api/v1/tus/{rest}", {**TUS, **OFFSET_TYPE, "Upload-Offset": "0", **owner}, b""),
        ("PATCH", f"/api/v1/tus/{'t' * 65}", {**TUS, **OFFSET_TYPE, "Upload-Offset": "0"}, b""),
        patch(2 * CHUNK, data[2 * CHUNK : TUS_SIZE], owner),  # finishes: names the file
        patch(TUS_SIZE, b"", owner),
    ]


async def test_direct_routes_answer_as_fastapi(
    upload_harness: Harness, plain_client: httpx.AsyncClient
) -> None:
    owner = (await make_uploader(upload_harness)).headers
    stranger = (await make_uploader(upload_harness, "beta")).headers
    data = os.urandom(TUS_SIZE)
    apps = [
        await _uploads(upload_harness.client, owner, data),
        await _uploads(plain_client, owner, data),
    ]
    statuses = set()
    for method, path, headers, body in _requests(owner, stranger, data):
        answers = [app.normal(await app.send(method, path, headers, body)) for app in apps]
        assert answers[0] == answers[1], (method, path, headers)
        statuses.add(answers[0][0])
    assert {200, 204, 400, 401, 404, 409, 412, 415, 422, 460} <= statuses, statuses
    assert len(apps[0].file_ids) == 2  # the finishing PATCH and the one after it


async def test_chunks_and_patches_take_the_direct_routes(
    uploader: Uploader, monkeypatch: pytest.MonkeyPatch
) -> None:
    """What the comparison above relies on: with direct routes, FastAPI's router does not see
    a chunk or a PATCH, and still sees what the direct routes decline."""
    routed: list[tuple[str, str]] = []
    router_call = Router.__call__

    async def counted(router: Router, scope: Any, receive: Any, send: Any) -> None:
        routed.append((scope["method"], scope["path"]))
        await router_call(router, scope, receive, send)

    data = os.urandom(CHUNK)
    upload = await uploader.init(data)
    created = await uploader.client.post(
        "/api/v1/tus/", headers={**uploader.headers, **TUS, "Upload-Length": str(CHUNK)}
    )
    monkeypatch.setattr(Router, "__call__", counted)
    sent = await uploader.chunk(upload["upload_id"], 0, data)
    patched = await uploader.client.patch(
        created.headers["Location"],
        content=data,
        headers={**uploader.headers, **TUS, **OFFSET_TYPE, "Upload-Offset": "0"},
    )
    assert (sent.status_code, patched.status_code) == (200, 204)
    assert routed == []
    declined = await uploader.client.patch(
        created.headers["Location"],
        content=data,
        headers={**uploader.headers, **OFFSET_TYPE, "Upload-Offset": "0"},
    )
    assert declined.status_code == 412
    assert [method for method, _path in routed] == ["PATCH"]
