"""A request the HTTP parser refuses is a 400 problem+json with a stable code, and the
connection is closed; before, uvicorn answered it itself in text/plain.

The server is real (uvicorn with the protocol ``homeport serve`` uses, on 127.0.0.1, the real
app on SQLite): the bytes below never reach the app, only the parser."""

from __future__ import annotations

import json
import shutil
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

from tests.conftest import make_settings
from tests.live_server import LiveServer

UNPARSEABLE = {
    "control byte in a header value": b"GET / HTTP/1.1\r\nHost: x\r\nX-A: a\x01b\r\n\r\n",
    "NUL in a header value": b"GET / HTTP/1.1\r\nHost: x\r\nX-A: a\x00b\r\n\r\n",
    "garbage request line": b"\x16\x03\x01 not http at all\r\n\r\n",
    "invalid header name": b"GET / HTTP/1.1\r\nHost: x\r\nX(A): b\r\n\r\n",
    "invalid method": b"G@T / HTTP/1.1\r\nHost: x\r\n\r\n",
    "invalid Content-Length": b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: x\r\n\r\n",
}


@pytest.fixture(scope="module")
def server(sqlite_template: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    directory = tmp_path_factory.mktemp("http-protocol")
    shutil.copy(sqlite_template, directory / "homeport.db")
    settings = make_settings(f"sqlite+aiosqlite:///{directory / 'homeport.db'}", directory / "data")
    with LiveServer(settings) as live:
        yield live


def _exchange(server: LiveServer, request: bytes) -> tuple[int, dict[str, str], bytes]:
    """Sends raw bytes on a new connection and reads until the server closes it (a server that
    kept the connection open fails the read with a timeout)."""
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        sock.sendall(request)
        received = b""
        while chunk := sock.recv(65536):
            received += chunk
    head, _, body = received.partition(b"\r\n\r\n")
    status_line, *header_lines = head.decode("latin-1").split("\r\n")
    headers = {}
    for line in header_lines:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return int(status_line.split(" ")[1]), headers, body


@pytest.mark.parametrize("request_bytes", UNPARSEABLE.values(), ids=UNPARSEABLE.keys())
def test_an_unparseable_request_is_a_400_problem_and_the_connection_closes(
    server: LiveServer, request_bytes: bytes
) -> None:
    status, headers, body = _exchange(server, request_bytes)
    assert status == 400, body
    assert headers["content-type"] == "application/problem+json"
    assert headers["connection"] == "close"
    assert int(headers["content-length"]) == len(body)
    problem = json.loads(body)
    assert problem == {
        "type": "https://homeport.dev/problems/validation-001",
        "title": "Invalid request",
        "status": 400,
        "detail": "The HTTP request could not be parsed",
        "code": "VALIDATION_001",
        "trace_id": headers["x-trace-id"],
    }


def test_requests_the_parser_accepts_still_reach_the_app(server: LiveServer) -> None:
    _exchange(server, UNPARSEABLE["control byte in a header value"])
    status, headers, _ = _exchange(
        server, b"GET /health/live HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    assert status == 200
    assert headers["content-type"] == "application/json"
    # An upgrade the server does not speak is ignored: the request is answered as usual.
    status, _, _ = _exchange(
        server,
        b"GET /health/live HTTP/1.1\r\nHost: x\r\nConnection: Upgrade, close\r\n"
        b"Upgrade: h2c\r\n\r\n",
    )
    assert status == 200


def test_websocket_upgrades_still_reach_the_app(server: LiveServer) -> None:
    url = server.base_url.replace("http://", "ws://") + "/ws/mobile/sync/"
    with connect(url) as websocket, pytest.raises(ConnectionClosed) as closed:
        websocket.recv(timeout=10)
    # The app accepted the socket, then closed it: no token.
    assert closed.value.rcvd is not None
    assert closed.value.rcvd.code == 4401


_UPGRADE = b"Host: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\n"
_KEY = b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
REFUSED_HANDSHAKES = {
    "no key": (b"GET /ws/mobile/sync/ HTTP/1.1\r\n" + _UPGRADE + b"\r\n", 400, "VALIDATION_001"),
    "bad key": (
        b"GET /ws/mobile/sync/ HTTP/1.1\r\n" + _UPGRADE + b"Sec-WebSocket-Key: short\r\n\r\n",
        400,
        "VALIDATION_001",
    ),
    "old version": (
        b"GET /ws/mobile/sync/ HTTP/1.1\r\n"
        + _UPGRADE.replace(b"Version: 13", b"Version: 8")
        + _KEY
        + b"\r\n",
        400,
        "VALIDATION_001",
    ),
    "POST": (
        b"POST /ws/mobile/sync/ HTTP/1.1\r\nContent-Length: 0\r\n" + _UPGRADE + _KEY + b"\r\n",
        405,
        "METHOD_NOT_ALLOWED",
    ),
}


@pytest.mark.parametrize(
    ("request_bytes", "status", "code"),
    REFUSED_HANDSHAKES.values(),
    ids=REFUSED_HANDSHAKES.keys(),
)
def test_a_refused_websocket_handshake_is_a_problem(
    server: LiveServer, request_bytes: bytes, status: int, code: str
) -> None:
    answer_status, headers, body = _exchange(server, request_bytes)
    assert answer_status == status, body
    assert headers["content-type"] == "application/problem+json"
    assert headers["connection"] == "close"
    assert int(headers["content-length"]) == len(body)
    problem = json.loads(body)
    assert problem["code"] == code
    assert problem["status"] == status
    assert problem["trace_id"] == headers["x-trace-id"]
    # The handshake's fault, named (the library's words, one line).
    assert problem["detail"].startswith("Failed to open a WebSocket connection: ")
    assert "\n" not in problem["detail"]
    if status == 405:
        assert headers["allow"] == "GET"


def test_plain_http_to_the_websocket_endpoint_is_426(server: LiveServer) -> None:
    status, headers, body = _exchange(
        server, b"GET /ws/mobile/sync/ HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    assert status == 426
    assert headers["upgrade"] == "websocket"
    assert headers["content-type"] == "application/problem+json"
    problem = json.loads(body)
    assert problem["code"] == "VALIDATION_001"
    assert "WebSocket" in problem["detail"]
