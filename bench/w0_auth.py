"""W0 (foundation): authenticated request throughput and the login cost.

- `me`: C concurrent clients, each with its own device session, call GET /api/v1/auth/me
  (JWT verify + session/role lookup) for D seconds: requests/s, p50, p99.
- `login`: sequential logins with production argon2id settings: ms per login.

Run: .venv/bin/python -m bench.w0_auth [--postgres ADMIN_URL] [--clients 32] [--seconds 10]
(--postgres: a server to create a throwaway database on, e.g. postgresql://postgres@127.0.0.1/postgres;
without it the embedded SQLite default is measured.)
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import statistics
import time

import httpx

from bench.server import fresh_postgres, init_tenant, running_server

PASSWORD = "bench-password-123"


def _percentile(samples: list[float], fraction: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(len(ordered) * fraction))]


async def _login(client: httpx.AsyncClient, device: str) -> tuple[str, float]:
    started = time.perf_counter()
    response = await client.post(
        "/api/v1/auth/login",
        json={"email": "bench@example.com", "password": PASSWORD, "device_id": device},
    )
    response.raise_for_status()
    return response.json()["access_token"], (time.perf_counter() - started) * 1000


async def _workload(base_url: str, clients: int, seconds: float) -> dict[str, float]:
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(base_url=base_url, limits=limits, timeout=30) as client:
        login_ms = [(await _login(client, f"login-{i}"))[1] for i in range(10)]
        tokens = [(await _login(client, f"device-{i}"))[0] for i in range(clients)]
        latencies: list[float] = []
        stop_at = time.perf_counter() + seconds

        async def worker(token: str) -> None:
            headers = {"Authorization": f"Bearer {token}"}
            while time.perf_counter() < stop_at:
                started = time.perf_counter()
                response = await client.get("/api/v1/auth/me", headers=headers)
                assert response.status_code == 200, response.text
                latencies.append((time.perf_counter() - started) * 1000)

        started = time.perf_counter()
        await asyncio.gather(*(worker(token) for token in tokens))
        elapsed = time.perf_counter() - started
    return {
        "me_requests_per_s": round(len(latencies) / elapsed, 1),
        "me_p50_ms": round(_percentile(latencies, 0.50), 2),
        "me_p99_ms": round(_percentile(latencies, 0.99), 2),
        "me_requests": len(latencies),
        "login_median_ms": round(statistics.median(login_ms), 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--postgres", default=None, help="admin URL of a PostgreSQL server")
    parser.add_argument("--clients", type=int, default=32)
    parser.add_argument("--seconds", type=float, default=10.0)
    args = parser.parse_args()
    with contextlib.ExitStack() as stack:
        database_url = stack.enter_context(fresh_postgres(args.postgres)) if args.postgres else None
        result = _run(database_url, args.clients, args.seconds)
    print(json.dumps(result))


def _run(database_url: str | None, clients: int, seconds: float) -> dict[str, object]:
    with running_server(database_url) as server:
        init_tenant(server, "bench@example.com", PASSWORD, "bench")
        measured = asyncio.run(_workload(server.base_url, clients, seconds))
    return {
        "workload": "W0 auth",
        "database": "postgresql" if database_url else "sqlite",
        "clients": clients,
        **measured,
    }


if __name__ == "__main__":
    main()
