"""uvicorn's protocols, answering what never reaches the app with problem+json.

A request httptools refuses (a control byte in a header value, an invalid header name, a
garbage request line) and a WebSocket handshake the websockets library refuses (no or a bad
``Sec-WebSocket-Key``, an unsupported version, a ``POST``) are answered by the server itself,
in text/plain. Every error a client sees is a problem document with a stable code (DESIGN.md
section 7), so these protocols write those answers as one. Everything else (parsing,
keep-alive, pipelining, the WebSocket protocol itself) is uvicorn's and websockets' own.
"""

from __future__ import annotations

import email.utils
import http
import json
from typing import Any

from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol
from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol
from websockets.datastructures import Headers
from websockets.http11 import Response
from websockets.server import ServerProtocol

from homeport.kit.errors import PROBLEM_CONTENT_TYPE, ErrorCode, problem_body
from homeport.kit.ids import new_id
from homeport.kit.logging import get_logger

log = get_logger("homeport.http")

UNPARSEABLE_DETAIL = "The HTTP request could not be parsed"


def _refusal(
    code: ErrorCode, detail: str, status: int, error: str
) -> tuple[bytes, list[tuple[str, str]]]:
    """The body and headers of a problem answer the server writes itself, and its access log
    line (no app middleware saw the request), with the trace id the answer carries. The
    connection ends with it: the parser cannot resume after an error, nor a refused handshake
    turn into a request."""
    trace_id = new_id()
    log.info("request", status=status, error=error, trace_id=trace_id)
    body = json.dumps(
        problem_body(code, detail, trace_id, status=status), separators=(",", ":")
    ).encode()
    headers = [
        ("content-type", PROBLEM_CONTENT_TYPE),
        ("content-length", str(len(body))),
        ("x-trace-id", trace_id),
        ("x-content-type-options", "nosniff"),
        ("connection", "close"),
    ]
    return body, headers


class ProblemHttpToolsProtocol(HttpToolsProtocol):
    """``HttpToolsProtocol`` whose 400 for an unparseable request is problem+json
    (``VALIDATION_001``, with no ``instance``: the path is not known).

    uvicorn calls :meth:`send_400_response` only where ``httptools.HttpParserError`` is caught
    (after logging its own warning); the override keeps its contract: write, then close."""

    def send_400_response(self, msg: str) -> None:
        body, headers = _refusal(
            ErrorCode.VALIDATION_001, UNPARSEABLE_DETAIL, 400, "unparseable_http_request"
        )
        content = [STATUS_LINE[400]]
        for name, value in self.server_state.default_headers:
            content += [name, b": ", value, b"\r\n"]
        content += [f"{name}: {value}\r\n".encode() for name, value in headers]
        self.transport.write(b"".join([*content, b"\r\n", body]))
        self.transport.close()


# What a refused handshake's status means, as a code; any other is a request we cannot serve.
_HANDSHAKE_CODES = {
    405: ErrorCode.METHOD_NOT_ALLOWED,
    500: ErrorCode.INTERNAL,
    403: ErrorCode.AUTH_006,
}


class _ProblemServerProtocol(ServerProtocol):
    """websockets' handshake, with its refusals (``reject``, which websockets documents as the
    place rejection answers are made) written as problem+json."""

    def reject(self, status: http.HTTPStatus | int, text: str) -> Response:
        status = http.HTTPStatus(status)
        code = _HANDSHAKE_CODES.get(status.value, ErrorCode.VALIDATION_001)
        # The library's own words name what was wrong with the handshake; never a secret.
        detail = text.strip().splitlines()[0] if text.strip() else status.phrase
        body, headers = _refusal(code, detail, status.value, "websocket_handshake")
        all_headers = Headers([("Date", email.utils.formatdate(usegmt=True)), *headers])
        return Response(status.value, status.phrase, all_headers, body)


class ProblemWebSocketProtocol(WebSocketsSansIOProtocol):
    """uvicorn's websockets (sans-I/O) protocol whose refused handshakes are problem+json."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # The connection uvicorn built, with its settings, answering refusals our way: the
        # subclass adds no state, only the one method.
        self.conn.__class__ = _ProblemServerProtocol
