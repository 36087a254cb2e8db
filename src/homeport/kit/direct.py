"""Direct routes: a few hot endpoints called without FastAPI's per-request machinery.

For a small JSON write, FastAPI's routing, dependency solving and body validation cost more
CPU than the write itself (py-spy, W3: about half of a record create). A direct route names
one of the app's routes (method, path, endpoint) and a handler that does the same steps by
hand for the common, well-formed request: it calls the same endpoint function with the same
dependency callables. Whatever the handler does not take as certainly well-formed (another
content type, a body that is not a JSON object, a path parameter out of its type) it
declines by returning None, and the request goes on to FastAPI, with its body replayed, to
get exactly the answer it always got.

A route that streams its body (an upload) has a handler that decides from the path and the
headers alone, before reading any of the body, and declines untouched requests only.

The layer sits innermost among the middlewares, so everything around requests (trace id,
rate limit, body limit, compression, headers) applies to direct routes unchanged. An
exception a handler raises is answered by the app's handler for its type, as FastAPI's
exception middleware would; the others go on to the server error middleware, as from a route.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from re import Pattern
from typing import Any, TypeVar

from fastapi import FastAPI
from fastapi.routing import APIRoute
from pydantic import TypeAdapter, ValidationError
from starlette._utils import get_route_path  # what Route.matches uses (FastAPI imports it too)
from starlette.convertors import Convertor, PathConvertor
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Match, compile_path
from starlette.types import ASGIApp, Message, Receive, Scope, Send

Handler = Callable[[Request, dict[str, Any], bytes], Awaitable[Response | None]]
# Declines (None) only before it has read any of the body, which it streams itself.
StreamHandler = Callable[[Request, dict[str, Any]], Awaitable[Response | None]]
# As Starlette keeps them: the app's handlers here are coroutines (kit.problems).
ExceptionHandler = Callable[[Request, Exception], Any]

T = TypeVar("T")


def path_param(adapter: TypeAdapter[T], value: Any) -> T | None:
    """A path parameter as FastAPI takes it (``adapter`` of the endpoint's own annotated type),
    or None: FastAPI would answer its 422, so the handler declines."""
    try:
        return adapter.validate_python(value)
    except ValidationError:
        return None


@dataclass(frozen=True)
class DirectRoute:
    """``handler`` answers ``method path`` (a route of the app, served by ``endpoint``), with
    the body read; or ``stream_handler``, which reads the body itself."""

    method: str
    path: str
    endpoint: Callable[..., Any]
    handler: Handler | None = None
    stream_handler: StreamHandler | None = None
    regex: Pattern[str] = field(init=False, compare=False)
    convertors: dict[str, Convertor[Any]] = field(init=False, compare=False)

    def __post_init__(self) -> None:
        if (self.handler is None) == (self.stream_handler is None):
            raise ValueError(f"direct route {self.method} {self.path}: one handler, of one kind")
        regex, _format, convertors = compile_path(self.path)
        object.__setattr__(self, "regex", regex)
        object.__setattr__(self, "convertors", convertors)

    def params(self, path: str) -> dict[str, Any] | None:
        match = self.regex.match(path)
        if match is None:
            return None
        return {
            name: self.convertors[name].convert(value) for name, value in match.groupdict().items()
        }


def check_direct_routes(routes: Sequence[BaseRoute], direct: Sequence[DirectRoute]) -> None:
    """Refuses direct routes that would answer a request FastAPI routes elsewhere.

    Each must name an APIRoute of the app by path, method and endpoint, and no route before
    that one may take the request (tried on a sample path of the direct route's shape)."""
    for route in direct:
        position = next(
            (
                index
                for index, candidate in enumerate(routes)
                if isinstance(candidate, APIRoute)
                and candidate.path == route.path
                and route.method in (candidate.methods or ())
                and candidate.endpoint is route.endpoint
            ),
            None,
        )
        if position is None:
            raise ValueError(f"direct route {route.method} {route.path}: no such route")
        probe = _sample_scope(route)
        for earlier in routes[:position]:
            if earlier.matches(probe)[0] is Match.FULL:
                raise ValueError(f"direct route {route.method} {route.path}: {earlier!r} first")


def _sample_scope(route: DirectRoute) -> Scope:
    path = route.path
    for name, convertor in route.convertors.items():
        sample = "a1/b2" if isinstance(convertor, PathConvertor) else "a1"
        path = path.replace("{" + name + ":path}", sample).replace("{" + name + "}", sample)
    return {"type": "http", "method": route.method, "path": path, "root_path": ""}


class DirectRoutesMiddleware:
    def __init__(self, app: ASGIApp, fastapi_app: FastAPI, routes: Sequence[DirectRoute]) -> None:
        self.app = app
        self.by_method: dict[str, list[DirectRoute]] = {}
        for route in routes:
            self.by_method.setdefault(route.method, []).append(route)
        # The handlers FastAPI's exception middleware holds (500 / Exception belongs to the
        # server error middleware, outside).
        self.exception_handlers: Mapping[Any, ExceptionHandler] = {
            key: handler
            for key, handler in fastapi_app.exception_handlers.items()
            if key not in (500, Exception)
        }

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            candidates = self.by_method.get(scope["method"])
            if candidates:
                path = get_route_path(scope)
                for route in candidates:
                    params = route.params(path)
                    if params is not None:
                        await self._serve(route, params, scope, receive, send)
                        return
        await self.app(scope, receive, send)

    async def _serve(
        self, route: DirectRoute, params: dict[str, Any], scope: Scope, receive: Receive, send: Send
    ) -> None:
        scope["path_params"] = params
        request = Request(scope, receive)
        # What the app behind gets when the route declines: the body read, then the rest.
        declined_receive = receive
        try:
            if route.stream_handler is not None:
                response = await route.stream_handler(request, params)
            else:
                assert route.handler is not None
                try:
                    body = await request.body()
                except ClientDisconnect as exc:  # what FastAPI answers when the body is cut
                    raise HTTPException(400, "There was an error parsing the body") from exc
                declined_receive = _replay(body, receive)
                response = await route.handler(request, params, body)
        except Exception as exc:
            handler = self._handler_for(exc)
            if handler is None:
                raise
            response = await handler(request, exc)
            assert isinstance(response, Response)
        else:
            if response is None:
                await self.app(scope, declined_receive, send)
                return
        await response(scope, receive, send)

    def _handler_for(self, exc: Exception) -> ExceptionHandler | None:
        status = getattr(exc, "status_code", None)
        if isinstance(exc, HTTPException) and status in self.exception_handlers:
            return self.exception_handlers[status]
        for kind in type(exc).__mro__:
            if kind in self.exception_handlers:
                return self.exception_handlers[kind]
        return None


def _replay(body: bytes, receive: Receive) -> Receive:
    """``receive`` for the app behind: the body read already, then the client's own messages."""
    pending = True

    async def replay() -> Message:
        nonlocal pending
        if pending:
            pending = False
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replay
