"""W3 (records REST API): 32 concurrent clients create 4,000 records, one request per record.

- create: records/s over the whole run, p50 and p99 of the request latency;
- list: one page of 1,000 records with ``fields=`` (median of several requests, ms);
- 304: ``GET /records/{id}`` with ``If-None-Match`` of the current ETag (median, ms).

The load generator speaks HTTP/1.1 over asyncio streams (bench.lean_http: keep-alive, one
connection per client): a full HTTP client library costs more CPU per request than the server
on this 2-core machine, and the clients share those cores with the server.

Run: .venv/bin/python -m bench.w3_records [--postgres ADMIN_URL] [--records 4000]
     [--clients 32] [--profile-seconds N --profile-out FILE]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import time
from pathlib import Path

import httpx

from bench.lean_http import Connection
from bench.server import (
    EMAIL,
    PASSWORD,
    WORK_ORDER_SCHEMA,
    fresh_postgres,
    init_tenant,
    profiling,
    running_server,
)

COLLECTION = "orders"
PATH = f"/api/v1/collections/{COLLECTION}/records"
SCHEMA = WORK_ORDER_SCHEMA


def _record(client: int, number: int) -> dict[str, object]:
    """About 200 bytes of JSON."""
    return {
        "id": f"c{client:02d}-{number:05d}",
        "title": f"Replace filter on unit {number}",
        "status": "open",
        "site": f"Warehouse {number % 97}, Dock {number % 13}",
        "priority": number % 5,
        "notes": "Bring the 40x40 filters and the ladder; the customer is on site from 8 to 12.",
    }


def _percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(fraction * (len(ordered) - 1)))]


async def _token(base_url: str, device: str) -> str:
    async with httpx.AsyncClient(base_url=base_url) as client:
        login = await client.post(
            "/api/v1/auth/login",
            json={"email": EMAIL, "password": PASSWORD, "device_id": device},
        )
        login.raise_for_status()
        return str(login.json()["access_token"])


async def _setup(base_url: str) -> None:
    token = await _token(base_url, "bench-admin")
    async with httpx.AsyncClient(base_url=base_url) as client:
        created = await client.post(
            "/api/v1/collections",
            json={
                "name": COLLECTION,
                "schema": SCHEMA,
                "read": "tenant",
                "write": "tenant",
                "sortable": ["priority"],
                "indexes": ["status"],
            },
            headers={"Authorization": f"Bearer {token}"},
        )
        created.raise_for_status()


async def _create_all(base_url: str, records: int, clients: int) -> dict[str, float]:
    tokens = [await _token(base_url, f"bench-client-{n}") for n in range(clients)]
    connections = [await Connection.open(base_url) for _ in range(clients)]
    per_client = records // clients
    latencies: list[float] = []

    async def run(number: int) -> None:
        headers = {
            "Authorization": f"Bearer {tokens[number]}",
            "Content-Type": "application/json",
            "Accept-Encoding": "gzip, br",
        }
        bodies = [json.dumps(_record(number, i)).encode() for i in range(per_client)]
        for body in bodies:
            started = time.perf_counter()
            status, _headers, content = await connections[number].request(
                "POST", PATH, headers, body
            )
            latencies.append(time.perf_counter() - started)
            assert status == 201, (status, content[:300])

    started = time.perf_counter()
    await asyncio.gather(*(run(number) for number in range(clients)))
    elapsed = time.perf_counter() - started
    for connection in connections:
        await connection.close()
    return {
        "records": per_client * clients,
        "records_per_s": per_client * clients / elapsed,
        "p50_ms": _percentile(latencies, 0.50) * 1000,
        "p99_ms": _percentile(latencies, 0.99) * 1000,
        "max_ms": max(latencies) * 1000,
    }


async def _reads(base_url: str, repeats: int) -> dict[str, float]:
    token = await _token(base_url, "bench-reader")
    connection = await Connection.open(base_url)
    headers = {"Authorization": f"Bearer {token}", "Accept-Encoding": "gzip, br"}
    page_ms: list[float] = []
    size = 0
    for _ in range(repeats):
        started = time.perf_counter()
        status, answer, content = await connection.request(
            "GET", f"{PATH}?limit=1000&fields=id,title,status", headers
        )
        page_ms.append((time.perf_counter() - started) * 1000)
        assert status == 200, content[:300]
        size = len(content)
        encoding = answer.get("content-encoding", "identity")
    status, _answer, plain = await connection.request(
        "GET",
        f"{PATH}?limit=1000&fields=id,title,status",
        {**headers, "Accept-Encoding": "identity"},
    )
    assert status == 200
    status, answer, content = await connection.request("GET", f"{PATH}/c00-00000", headers)
    assert status == 200
    etag = answer["etag"]
    not_modified_ms: list[float] = []
    for _ in range(repeats * 10):
        started = time.perf_counter()
        status, _answer, content = await connection.request(
            "GET", f"{PATH}/c00-00000", {**headers, "If-None-Match": etag}
        )
        not_modified_ms.append((time.perf_counter() - started) * 1000)
        assert status == 304
        assert content == b""
    await connection.close()
    return {
        "list_1000_fields_ms": statistics.median(page_ms),
        "list_1000_bytes_on_wire": size,
        "list_1000_bytes_uncompressed": len(plain),
        "list_encoding": encoding,  # type: ignore[dict-item]
        "not_modified_ms": statistics.median(not_modified_ms),
    }


def _run(
    database_url: str | None, records: int, clients: int, profile_seconds: int, profile_out: Path
) -> dict[str, object]:
    with running_server(database_url) as server:
        init_tenant(server, EMAIL, PASSWORD, "bench")
        asyncio.run(_setup(server.base_url))
        with profiling(server.pid, profile_seconds, profile_out):
            created = asyncio.run(_create_all(server.base_url, records, clients))
        reads = asyncio.run(_reads(server.base_url, 20))
    return {
        "workload": "W3 records REST",
        "database": "postgresql" if database_url else "sqlite",
        "clients": clients,
        "created": created["records"],
        "create_records_per_s": round(created["records_per_s"]),
        "create_p50_ms": round(created["p50_ms"], 2),
        "create_p99_ms": round(created["p99_ms"], 2),
        "create_max_ms": round(created["max_ms"], 2),
        "list_1000_fields_ms": round(float(reads["list_1000_fields_ms"]), 2),
        "list_1000_bytes_on_wire": reads["list_1000_bytes_on_wire"],
        "list_1000_bytes_uncompressed": reads["list_1000_bytes_uncompressed"],
        "list_encoding": reads["list_encoding"],
        "not_modified_ms": round(float(reads["not_modified_ms"]), 3),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--postgres", default=None, help="admin URL of a PostgreSQL server")
    parser.add_argument("--records", type=int, default=4000)
    parser.add_argument("--clients", type=int, default=32)
    parser.add_argument("--profile-seconds", type=int, default=0, help="py-spy the creates")
    parser.add_argument("--profile-out", type=Path, default=Path("w3-profile.txt"))
    arguments = parser.parse_args()
    profile = (arguments.profile_seconds, arguments.profile_out)
    if arguments.postgres:
        with fresh_postgres(arguments.postgres) as url:
            result = _run(url, arguments.records, arguments.clients, *profile)
    else:
        result = _run(None, arguments.records, arguments.clients, *profile)
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
