"""uvicorn's httptools protocol, answering requests it cannot parse with problem+json.

A request httptools refuses (a control byte in a header value, an invalid header name, a
garbage request line) never reaches the app: uvicorn answers it itself, in text/plain. Every
error a client sees is a problem document with a stable code (DESIGN.md section 7), so this
protocol writes that 400 as one. Everything else (parsing, keep-alive, pipelining, WebSocket
and other upgrades) is uvicorn's own.
"""

from __future__ import annotations

import json

from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol

from homeport.kit.errors import PROBLEM_CONTENT_TYPE, ErrorCode, problem_body
from homeport.kit.ids import new_id
from homeport.kit.logging import get_logger

log = get_logger("homeport.http")

UNPARSEABLE_DETAIL = "The HTTP request could not be parsed"


def unparseable_request_answer(
    trace_id: str, default_headers: list[tuple[bytes, bytes]] | None = None
) -> bytes:
    """The whole HTTP/1.1 answer (status line, headers, body) to a request that could not be
    parsed: 400 ``VALIDATION_001``, with no ``instance`` (the path is not known)."""
    body = json.dumps(
        problem_body(ErrorCode.VALIDATION_001, UNPARSEABLE_DETAIL, trace_id, status=400)
    ).encode()
    content = [STATUS_LINE[400]]
    for name, value in default_headers or []:
        content += [name, b": ", value, b"\r\n"]
    content += [
        b"content-type: " + PROBLEM_CONTENT_TYPE.encode() + b"\r\n",
        b"content-length: " + str(len(body)).encode() + b"\r\n",
        b"x-trace-id: " + trace_id.encode() + b"\r\n",
        b"x-content-type-options: nosniff\r\n",
        # The parser cannot resume after an error: the connection ends with this answer.
        b"connection: close\r\n",
        b"\r\n",
        body,
    ]
    return b"".join(content)


class ProblemHttpToolsProtocol(HttpToolsProtocol):
    """``HttpToolsProtocol`` whose 400 for an unparseable request is problem+json.

    uvicorn calls :meth:`send_400_response` only where ``httptools.HttpParserError`` is caught
    (after logging its own warning); the override keeps its contract: write, then close."""

    def send_400_response(self, msg: str) -> None:
        trace_id = new_id()
        # No app middleware saw this request: this line is its access log, with the trace id
        # the answer carries.
        log.info("request", status=400, error="unparseable_http_request", trace_id=trace_id)
        self.transport.write(
            unparseable_request_answer(trace_id, self.server_state.default_headers)
        )
        self.transport.close()
