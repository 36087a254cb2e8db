"""Pure ASGI middleware: trace ids and access logs, body size limit, rate limiting."""

from __future__ import annotations

import json
import time
from collections.abc import Awaitable, Callable
from ipaddress import ip_address, ip_network
from typing import Any
from urllib.parse import parse_qsl

from starlette.datastructures import Headers
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from homeport.kit.context import accept_trace_id, set_trace_id
from homeport.kit.errors import PROBLEM_CONTENT_TYPE, ErrorCode, problem_body
from homeport.kit.logging import get_logger
from homeport.kit.ratelimit import RateLimitDecision, RateLimiter
from homeport.kit.text import whole_number

log = get_logger("homeport.http")


def add_response_headers(
    message: Message,
    replace: tuple[tuple[bytes, bytes], ...] = (),
    default: tuple[tuple[bytes, bytes], ...] = (),
) -> None:
    """Adds headers (lower-case names) to a response start: those of ``replace`` in place of
    any of that name, those of ``default`` unless one of that name is there. What
    ``MutableHeaders`` item assignment and ``setdefault`` do, in one pass over the headers
    instead of one per header (each middleware adding its headers was a few per cent of a
    small request's CPU, py-spy W3)."""
    raw = message["headers"] = list(message.get("headers", ()))
    present = {name.lower() for name, _value in raw}
    if replace:
        replaced = {name for name, _value in replace}
        if not present.isdisjoint(replaced):
            raw[:] = [(name, value) for name, value in raw if name.lower() not in replaced]
        raw.extend(replace)
    for name, value in default:
        if name not in present:
            raw.append((name, value))


def raw_headers(headers: dict[str, str]) -> tuple[tuple[bytes, bytes], ...]:
    """``headers`` as a response start carries them (lower-case names, bytes)."""
    return tuple(
        (name.lower().encode("latin-1"), value.encode("latin-1")) for name, value in headers.items()
    )


async def send_problem(
    send: Send,
    code: ErrorCode,
    detail: str,
    trace_id: str,
    path: str,
    headers: dict[str, str] | None = None,
    status: int | None = None,
    extra: dict[str, Any] | None = None,
) -> None:
    status = status or code.status
    body = json.dumps(
        problem_body(code, detail, trace_id, instance=path, status=status, extra=extra)
    ).encode()
    problem_headers = [
        (b"content-type", PROBLEM_CONTENT_TYPE.encode()),
        (b"content-length", str(len(body)).encode()),
        (b"x-trace-id", trace_id.encode()),
        *raw_headers(headers or {}),
    ]
    await send({"type": "http.response.start", "status": status, "headers": problem_headers})
    await send({"type": "http.response.body", "body": body})


_NOSNIFF = ((b"x-content-type-options", b"nosniff"),)


class TraceMiddleware:
    """Gives each request a trace id (header ``X-Trace-Id``) and writes one access log line.

    The query string is never logged: it may carry a token.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in {"http", "websocket"}:
            await self.app(scope, receive, send)
            return
        headers = Headers(scope=scope)
        trace_id = accept_trace_id(headers.get("x-request-id"))
        set_trace_id(trace_id)
        scope.setdefault("state", {})["trace_id"] = trace_id
        started = time.perf_counter()
        status_holder: dict[str, int] = {}

        trace_header = ((b"x-trace-id", trace_id.encode("latin-1")),)

        async def send_with_trace(message: Message) -> None:
            if message["type"] == "http.response.start":
                status_holder["status"] = message["status"]
                add_response_headers(message, trace_header, _NOSNIFF)
            await send(message)

        try:
            await self.app(scope, receive, send_with_trace)
        finally:
            if scope["type"] == "http":
                log.info(
                    "request",
                    method=scope.get("method"),
                    path=scope.get("path"),
                    status=status_holder.get("status", 500),
                    duration_ms=round((time.perf_counter() - started) * 1000, 2),
                    trace_id=trace_id,
                )


class BodyLimitMiddleware:
    """Refuses request bodies over the limit with 413, declared or streamed.

    ``path_limits`` gives single paths their own limit and error code (a sync push may be
    larger than other requests, and says so with a sync code)."""

    def __init__(
        self,
        app: ASGIApp,
        max_bytes: int,
        path_limits: dict[str, tuple[int, ErrorCode]] | None = None,
        prefix_limits: dict[str, tuple[int, ErrorCode]] | None = None,
    ) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.path_limits = path_limits or {}
        # Whole subtrees (upload chunks, tus PATCH bodies) with limits of their own.
        self.prefix_limits = sorted((prefix_limits or {}).items(), key=lambda item: -len(item[0]))

    def _limit(self, path: str) -> tuple[int, ErrorCode]:
        if path in self.path_limits:
            return self.path_limits[path]
        for prefix, limit in self.prefix_limits:
            if path.startswith(prefix):
                return limit
        return self.max_bytes, ErrorCode.PAYLOAD_TOO_LARGE

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        trace_id = scope.get("state", {}).get("trace_id", "")
        max_bytes, code = self._limit(scope["path"])
        detail = f"Request body is larger than {max_bytes} bytes"
        declared = Headers(scope=scope).get("content-length")
        length = None if declared is None else whole_number(declared, 19)
        if declared is not None and (length is None or length > max_bytes):
            await send_problem(send, code, detail, trace_id, scope["path"], status=413)
            return
        received = 0
        too_large = started = False

        async def limited_receive() -> Message:
            nonlocal received, too_large
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > max_bytes:
                    too_large = True
                    raise _TooLarge
            return message

        async def answer_too_large() -> None:
            nonlocal started
            if not started:
                started = True
                await send_problem(send, code, detail, trace_id, scope["path"], status=413)

        async def guarded_send(message: Message) -> None:
            # A body parser that reads the limited body answers its own error (FastAPI: 400,
            # "error parsing the body"): the answer is the 413 instead.
            nonlocal started
            if too_large:
                await answer_too_large()
                return
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            # With a declared length the server delivers no more than it: only a body of
            # unknown length (chunked) can pass the limit on the way.
            await self.app(scope, limited_receive, send if declared is not None else guarded_send)
        except _TooLarge:
            await answer_too_large()


class _TooLarge(Exception):
    pass


class NulGuardMiddleware:
    """Refuses a NUL character in the path or in a query parameter with 400 naming it: no
    identifier or parameter holds one, and PostgreSQL refuses text with one (a 500 otherwise,
    where SQLite would have answered a 404)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            parameter = nul_parameter(scope)
            if parameter is not None:
                trace_id = scope.get("state", {}).get("trace_id", "")
                detail = f"{parameter} holds a NUL character"
                await send_problem(
                    send,
                    ErrorCode.VALIDATION_004,
                    detail,
                    trace_id,
                    scope["path"].replace("\x00", ""),
                    extra={"parameter": parameter},
                )
                return
        await self.app(scope, receive, send)


def nul_parameter(scope: Scope) -> str | None:
    """``path``, or the name of the first query parameter holding a NUL; None when none does."""
    if "\x00" in scope["path"]:
        return "path"
    query: bytes = scope.get("query_string", b"")
    if b"%00" not in query and b"\x00" not in query:  # the common case costs two scans
        return None
    for name, value in parse_qsl(query.decode("latin-1"), keep_blank_values=True):
        if "\x00" in name or "\x00" in value:
            return name.replace("\x00", "") or "query"
    return None


Identify = Callable[[Scope], Awaitable[tuple[str, str]]]
"""Returns (policy name, caller identity) for a request."""


class RateLimitMiddleware:
    """Applies one named policy per request and adds the RateLimit headers to every answer."""

    def __init__(self, app: ASGIApp, limiter: Callable[[], RateLimiter | None], identify: Identify):
        self.app = app
        self.limiter = limiter
        self.identify = identify

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        limiter = self.limiter()
        if scope["type"] != "http" or limiter is None:
            await self.app(scope, receive, send)
            return
        policy, identity = await self.identify(scope)
        try:
            decision: RateLimitDecision | None = await limiter.hit(policy, identity)
        except Exception:  # a limiter outage must not take the API down; readiness reports it
            log.warning("rate_limit_storage_error", policy=policy)
            decision = None
        if decision is None:
            await self.app(scope, receive, send)
            return
        headers = decision.headers()
        if not decision.allowed:
            await send_problem(
                send,
                ErrorCode.RATE_001,
                "Too many requests; slow down",
                scope.get("state", {}).get("trace_id", ""),
                scope["path"],
                headers={**headers, "Retry-After": str(decision.reset_seconds)},
            )
            return

        decision_headers = raw_headers(headers)

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                add_response_headers(message, replace=decision_headers)
            await send(message)

        await self.app(scope, receive, send_with_headers)


class PrefixHeadersMiddleware:
    """Adds fixed headers to every answer under a path prefix, errors included (tus wants
    ``Tus-Resumable`` on all of its answers)."""

    def __init__(self, app: ASGIApp, prefix: str, headers: dict[str, str]) -> None:
        self.app = app
        self.prefix = prefix
        self.headers = raw_headers(headers)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not scope["path"].startswith(self.prefix):
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                add_response_headers(message, default=self.headers)
            await send(message)

        await self.app(scope, receive, send_with_headers)


def client_ip(scope: Scope) -> str:
    client: Any = scope.get("client")
    return str(client[0]) if client else "unknown"


# Set in the request's state when the TCP peer is a trusted proxy.
_VIA_TRUSTED_PROXY = "homeport.via_trusted_proxy"


class ForwardedHeadersMiddleware:
    """Believes ``X-Forwarded-For``/``-Proto`` only from the proxies in ``trusted`` (addresses,
    networks or ``*``): the client address and scheme become the forwarded ones, and links in
    answers may follow ``X-Forwarded-Host``/``-Prefix`` (see :func:`public_base_url`). Any other
    peer's forwarded headers are ignored."""

    def __init__(self, app: ASGIApp, trusted: list[str]) -> None:
        self.app = app
        self.trust_all = "*" in trusted
        self.networks = [ip_network(entry, strict=False) for entry in trusted if entry != "*"]

    def _trusted(self, address: str) -> bool:
        if self.trust_all:
            return True
        try:
            parsed = ip_address(address)
        except ValueError:
            return False
        return any(parsed in network for network in self.networks)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        client = scope.get("client")
        if scope["type"] in {"http", "websocket"} and client and self._trusted(str(client[0])):
            headers = Headers(scope=scope)
            proto = _first(headers.get("x-forwarded-proto"))
            if proto in {"http", "https"}:
                secure = proto == "https"
                if scope["type"] == "websocket":
                    scope["scheme"] = "wss" if secure else "ws"
                else:
                    scope["scheme"] = proto
            chain = [hop.strip() for hop in headers.get("x-forwarded-for", "").split(",")]
            # The client is the last hop that is not one of our proxies.
            for hop in reversed([hop for hop in chain if hop]):
                if not self._trusted(hop):
                    scope["client"] = (hop, 0)
                    break
            scope.setdefault("state", {})[_VIA_TRUSTED_PROXY] = True
        await self.app(scope, receive, send)


def public_base_url(scope: Scope, public_url: str | None) -> str:
    """The address clients reach this server at, for links in answers (tus ``Location``,
    signed download URLs): ``public_url`` when configured; else, when a trusted proxy sent the
    request, the ``X-Forwarded-Proto/Host/Prefix`` it sets; else the request's own."""
    if public_url:
        return public_url.rstrip("/")
    headers = Headers(scope=scope)
    scheme = str(scope.get("scheme", "http"))
    host = headers.get("host") or "{}:{}".format(*scope.get("server", ("localhost", 80)))
    prefix = str(scope.get("root_path", ""))
    if scope.get("state", {}).get(_VIA_TRUSTED_PROXY):
        host = _first(headers.get("x-forwarded-host")) or host
        prefix = (_first(headers.get("x-forwarded-prefix")) or prefix).rstrip("/")
    return f"{scheme}://{host}{prefix}"


def _first(value: str | None) -> str | None:
    if not value:
        return None
    first = value.split(",")[0].strip()
    return first or None
