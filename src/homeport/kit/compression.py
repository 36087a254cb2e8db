"""Response compression: brotli when the client asks for it, else gzip; never twice.

Compressed: text-like content types only (``application/json``, ``application/problem+json``,
any ``+json``, ``text/*``), when the client accepts an encoding and the body is at least
``minimum_size`` bytes (a streamed body is always compressed). Left alone: an answer that
already has a ``Content-Encoding``; a ``206 Partial Content``, anything with a
``Content-Range`` or offering byte ranges (``Accept-Ranges: bytes``), since ranges address the
stored bytes, not a re-encoding of them; and ``HEAD``/``304``/``204`` answers, which have no
body. Every compressible answer says
``Vary: Accept-Encoding``, compressed or not, so caches keep the variants apart.
"""

from __future__ import annotations

import zlib
from collections.abc import Callable
from typing import Protocol

import brotli
from starlette.datastructures import Headers, MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from homeport.kit.http import add_response_headers

_COMPRESSIBLE = ("application/json", "application/problem+json", "application/javascript")
_NO_BODY = {204, 304}


class _Encoder(Protocol):
    def compress(self, data: bytes) -> bytes: ...

    def finish(self) -> bytes: ...


class _Gzip:
    def __init__(self, level: int) -> None:
        self._compressor = zlib.compressobj(level, zlib.DEFLATED, 16 + zlib.MAX_WBITS)

    def compress(self, data: bytes) -> bytes:
        return self._compressor.compress(data)

    def finish(self) -> bytes:
        return self._compressor.flush()


class _Brotli:
    def __init__(self, quality: int) -> None:
        self._compressor = brotli.Compressor(quality=quality)

    def compress(self, data: bytes) -> bytes:
        return self._compressor.process(data)

    def finish(self) -> bytes:
        return self._compressor.finish()


def compressible(content_type: str) -> bool:
    media = content_type.split(";", 1)[0].strip().lower()
    return media.startswith("text/") or media in _COMPRESSIBLE or media.endswith("+json")


def choose_encoding(accept_encoding: str) -> str | None:
    """``br`` or ``gzip`` from an Accept-Encoding header (q=0 refuses); None: identity."""
    weights: dict[str, float] = {}
    for part in accept_encoding.split(","):
        name, _, params = part.strip().partition(";")
        weight = 1.0
        params = params.strip().replace(" ", "")
        if params.startswith("q="):
            try:
                weight = float(params[2:])
            except ValueError:
                weight = 0.0
        if name:
            weights[name.strip().lower()] = weight
    wildcard = weights.get("*", 0.0)
    for encoding in ("br", "gzip"):
        if weights.get(encoding, wildcard) > 0:
            return encoding
    return None


def _vary_with(vary: str | None, value: str) -> str | None:
    """The Vary header naming ``value`` too (None: it does already, or varies on ``*``)."""
    present = [v.strip().lower() for v in (vary or "").split(",") if v.strip()]
    if value.lower() in present or "*" in present:
        return None
    return ", ".join([*filter(None, [vary]), value])


# The response headers the decision reads (the first of each name, as Headers.get gives).
_READ = frozenset(
    {b"content-type", b"content-encoding", b"content-range", b"accept-ranges", b"vary"}
)


def _first_values(raw: list[tuple[bytes, bytes]]) -> dict[bytes, str]:
    found: dict[bytes, str] = {}
    for name, value in raw:
        lowered = name.lower()
        if lowered in _READ and lowered not in found:
            found[lowered] = value.decode("latin-1")
    return found


class CompressionMiddleware:
    def __init__(
        self,
        app: ASGIApp,
        *,
        minimum_size: int = 1024,
        gzip_level: int = 5,
        brotli_quality: int = 4,
    ) -> None:
        self.app = app
        self.minimum_size = minimum_size
        self.gzip_level = gzip_level
        self.brotli_quality = brotli_quality

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        encoding = choose_encoding(Headers(scope=scope).get("accept-encoding", ""))
        is_head = scope.get("method") == "HEAD"
        responder = _Responder(send, encoding, is_head, self.minimum_size, self._encoder)
        await self.app(scope, receive, responder.send)

    def _encoder(self, encoding: str) -> _Encoder:
        if encoding == "br":
            return _Brotli(self.brotli_quality)
        return _Gzip(self.gzip_level)


class _Responder:
    """Holds the response start until the first body part shows whether to compress."""

    def __init__(
        self,
        send: Send,
        encoding: str | None,
        is_head: bool,
        minimum_size: int,
        encoder: Callable[[str], _Encoder],
    ) -> None:
        self._send = send
        self._encoding = encoding
        self._is_head = is_head
        self._minimum_size = minimum_size
        self._make_encoder = encoder
        self._start: Message | None = None
        self._encoder: _Encoder | None = None
        self._passthrough = False

    async def send(self, message: Message) -> None:
        if message["type"] == "http.response.start":
            # One pass over the headers (through Headers, each lookup was one: a few per cent
            # of a small request's CPU, py-spy W3).
            message = {**message, "headers": list(message.get("headers", ()))}
            first = _first_values(message["headers"])
            status = int(message["status"])
            eligible = (
                compressible(first.get(b"content-type", ""))
                and b"content-encoding" not in first
                and b"content-range" not in first
                and first.get(b"accept-ranges", "none").lower() == "none"
                and status != 206
            )
            vary = _vary_with(first.get(b"vary"), "Accept-Encoding") if eligible else None
            if vary is not None:
                add_response_headers(message, replace=((b"vary", vary.encode("latin-1")),))
            if not eligible or self._encoding is None or self._is_head or status in _NO_BODY:
                self._passthrough = True
                await self._send(message)
                return
            self._start = message
            return
        if message["type"] != "http.response.body" or self._passthrough:
            await self._send(message)
            return
        body: bytes = message.get("body", b"")
        more = bool(message.get("more_body", False))
        if self._start is not None:
            start, self._start = self._start, None
            headers = MutableHeaders(raw=start["headers"])
            if not more and len(body) < self._minimum_size:
                self._passthrough = True
                await self._send(start)
                await self._send(message)
                return
            assert self._encoding is not None
            self._encoder = self._make_encoder(self._encoding)
            headers["Content-Encoding"] = self._encoding
            del headers["content-length"]
            if not more:
                compressed = self._encoder.compress(body) + self._encoder.finish()
                headers["Content-Length"] = str(len(compressed))
                await self._send(start)
                await self._send({"type": "http.response.body", "body": compressed})
                return
            await self._send(start)
        assert self._encoder is not None
        chunk = self._encoder.compress(body)
        if not more:
            chunk += self._encoder.finish()
        await self._send({"type": "http.response.body", "body": chunk, "more_body": more})
