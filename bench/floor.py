"""The request floor: what the stack costs before any feature work, with the lean load
generator of W3 (HTTP/1.1 over asyncio streams, 32 keep-alive connections).

- ``live``: ``GET /health/live``: the whole middleware chain, no token, no database;
- ``me``: ``GET /api/v1/auth/me``: token check and one transaction (session check, two reads).

Run: .venv/bin/python -m bench.floor [--requests 6000] [--clients 32]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time

from bench.lean_http import Connection
from bench.server import EMAIL, PASSWORD, init_tenant, running_server
from bench.w3_records import _token


async def _rate(
    base_url: str, path: str, headers: dict[str, str], requests: int, clients: int
) -> float:
    connections = [await Connection.open(base_url) for _ in range(clients)]
    per_client = requests // clients

    async def run(connection: Connection) -> None:
        for _ in range(per_client):
            status, _headers, content = await connection.request("GET", path, headers)
            assert status == 200, (status, content[:200])

    started = time.perf_counter()
    await asyncio.gather(*(run(connection) for connection in connections))
    elapsed = time.perf_counter() - started
    for connection in connections:
        await connection.close()
    return per_client * clients / elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--requests", type=int, default=6000)
    parser.add_argument("--clients", type=int, default=32)
    arguments = parser.parse_args()
    with running_server(rate_limit_health="1000000/minute") as server:
        init_tenant(server, EMAIL, PASSWORD, "bench")
        token = asyncio.run(_token(server.base_url, "bench-floor"))
        bearer = {"Authorization": f"Bearer {token}"}
        result: dict[str, object] = {"workload": "request floor", "clients": arguments.clients}
        for name, path, headers in (
            ("live", "/health/live", {}),
            ("me", "/api/v1/auth/me", bearer),
        ):
            asyncio.run(_rate(server.base_url, path, headers, 500, arguments.clients))  # warm
            rate = asyncio.run(
                _rate(server.base_url, path, headers, arguments.requests, arguments.clients)
            )
            result[f"{name}_requests_per_s"] = round(rate)
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
