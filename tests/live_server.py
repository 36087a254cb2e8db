"""A real server (uvicorn on 127.0.0.1, in a thread) for tests that need real sockets:
blocking HTTP clients (schemathesis) and WebSockets."""

from __future__ import annotations

import socket
import threading
import time

import uvicorn

from homeport.app import create_app
from homeport.config import Settings
from homeport.kit.http_protocol import ProblemHttpToolsProtocol, ProblemWebSocketProtocol


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


class LiveServer:
    """uvicorn in a thread, so schemathesis' blocking client can call it from the test."""

    def __init__(self, settings: Settings) -> None:
        self.port = _free_port()
        self.base_url = f"http://127.0.0.1:{self.port}"
        config = uvicorn.Config(
            create_app(settings),
            host="127.0.0.1",
            port=self.port,
            log_level="warning",
            # As `homeport serve`: an unparseable request or a refused WebSocket handshake is
            # answered with problem+json.
            http=ProblemHttpToolsProtocol,
            ws=ProblemWebSocketProtocol,
        )
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self) -> LiveServer:
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("the contract-test server did not start")
            time.sleep(0.05)
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=30)
