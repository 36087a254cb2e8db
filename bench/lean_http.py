"""A lean HTTP/1.1 load generator: keep-alive connections over asyncio streams.

A full client library (httpx) costs about as much CPU per request as the server on this 2-core
machine, and the clients share those cores with the server: the workloads that measure the
server's own rate use this instead.
"""

from __future__ import annotations

import asyncio
import contextlib
import json as jsonlib
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import httpx

# Answers that carry no body whatever their Content-Length says.
_NO_BODY_STATUSES = (204, 304)


class Connection:
    """One keep-alive HTTP/1.1 connection (bodies with Content-Length or chunked)."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer

    @classmethod
    async def open(cls, base_url: str) -> Connection:
        parts = urlsplit(base_url)
        reader, writer = await asyncio.open_connection(parts.hostname, parts.port)
        return cls(reader, writer)

    async def request(
        self, method: str, path: str, headers: dict[str, str], body: bytes = b""
    ) -> tuple[int, dict[str, str], bytes]:
        lines = [f"{method} {path} HTTP/1.1", "Host: bench", f"Content-Length: {len(body)}"]
        lines.extend(f"{name}: {value}" for name, value in headers.items())
        self.writer.write(("\r\n".join(lines) + "\r\n\r\n").encode())
        if body:
            self.writer.write(body)
        await self.writer.drain()
        status_line = await self.reader.readline()
        status = int(status_line.split()[1])
        answer: dict[str, str] = {}
        while (line := await self.reader.readline()) not in (b"\r\n", b""):
            name, _, value = line.decode().partition(":")
            answer[name.strip().lower()] = value.strip()
        if method == "HEAD" or status in _NO_BODY_STATUSES:
            content = b""
        elif answer.get("transfer-encoding") == "chunked":
            content = b""
            while size := int((await self.reader.readline()).strip(), 16):
                content += await self.reader.readexactly(size + 2)
            await self.reader.readline()
        else:
            content = await self.reader.readexactly(int(answer.get("content-length", "0")))
        return status, answer, content

    async def close(self) -> None:
        self.writer.close()
        with contextlib.suppress(OSError):
            await self.writer.wait_closed()


@dataclass(frozen=True)
class _Url:
    path: str


@dataclass(frozen=True)
class _Request:
    method: str
    url: _Url


@dataclass
class Response:
    """The parts of an httpx response the workloads read."""

    status_code: int
    headers: httpx.Headers  # case-insensitive, as the workloads read them
    content: bytes
    request: _Request

    @property
    def text(self) -> str:
        return self.content.decode(errors="replace")

    def json(self) -> Any:
        return jsonlib.loads(self.content)


class Client:
    """The subset of ``httpx.AsyncClient`` the W5 workload uses, over one connection."""

    def __init__(self, base_url: str, headers: dict[str, str]) -> None:
        self.base_url = base_url
        self.headers = {name.lower(): value for name, value in headers.items()}
        self._connection: Connection | None = None

    async def __aenter__(self) -> Client:
        self._connection = await Connection.open(self.base_url)
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._connection is not None:
            await self._connection.close()
            self._connection = None

    async def request(
        self,
        method: str,
        url: str,
        *,
        content: bytes = b"",
        json: Any = None,
        headers: dict[str, str] | None = None,
    ) -> Response:
        assert self._connection is not None, "use the client in `async with`"
        path = urlsplit(url).path if "://" in url else url
        sent = dict(self.headers)
        sent.update({name.lower(): value for name, value in (headers or {}).items()})
        if json is not None:
            content = jsonlib.dumps(json).encode()
            sent["content-type"] = "application/json"
        status, answer, body = await self._connection.request(method, path, sent, content)
        return Response(status, httpx.Headers(answer), body, _Request(method, _Url(path)))

    async def post(self, url: str, **options: Any) -> Response:
        return await self.request("POST", url, **options)

    async def patch(self, url: str, **options: Any) -> Response:
        return await self.request("PATCH", url, **options)

    async def get(self, url: str, **options: Any) -> Response:
        return await self.request("GET", url, **options)

    async def head(self, url: str, **options: Any) -> Response:
        return await self.request("HEAD", url, **options)

    async def delete(self, url: str, **options: Any) -> Response:
        return await self.request("DELETE", url, **options)
