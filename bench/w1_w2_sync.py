"""W1 and W2 (sync): push 20,000 records through the SDK, then pull them all on a fresh device.

- W1: one device queues N records of about 200 bytes offline, then pushes them in batches of
  the given size; records/s of the push (queueing is local and not counted).
- W2: a second, empty device pulls everything (pages of --pull-limit); records/s including
  storing them in its local replica.

Run: .venv/bin/python -m bench.w1_w2_sync [--postgres ADMIN_URL] [--records 20000]
     [--batch-sizes 250,500,1000] [--pull-limit 5000]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import tempfile
import time
from pathlib import Path

import httpx
from homeport_client import HomeportClient

from bench.server import (
    EMAIL,
    PASSWORD,
    WORK_ORDER_SCHEMA,
    fresh_postgres,
    init_tenant,
    running_server,
)

COLLECTION = "work_orders"
SCHEMA = WORK_ORDER_SCHEMA


def _record(number: int) -> dict[str, object]:
    """About 200 bytes of JSON."""
    return {
        "title": f"Replace filter on unit {number}",
        "status": "open",
        "site": f"Warehouse {number % 97}, Dock {number % 13}",
        "priority": number % 5,
        "notes": "Bring the 40x40 filters and the ladder; the customer is on site from 8 to 12.",
    }


async def _setup(base_url: str) -> None:
    async with httpx.AsyncClient(base_url=base_url) as client:
        login = await client.post(
            "/api/v1/auth/login",
            json={"email": EMAIL, "password": PASSWORD, "device_id": "bench-admin"},
        )
        login.raise_for_status()
        headers = {"Authorization": f"Bearer {login.json()['access_token']}"}
        created = await client.post(
            "/api/v1/collections",
            json={"name": COLLECTION, "schema": SCHEMA, "read": "tenant", "write": "tenant"},
            headers=headers,
        )
        created.raise_for_status()


async def _w1(base_url: str, store: Path, records: int, batch_size: int, device: str) -> float:
    async with HomeportClient(base_url, str(store), device_id=device) as client:
        await client.login(EMAIL, PASSWORD)
        with client.transaction():
            for number in range(records):
                client.put(COLLECTION, f"{device}-{number:06d}", _record(number))
        started = time.perf_counter()
        report = await client.push(mode="best_effort", batch_size=batch_size)
        elapsed = time.perf_counter() - started
        assert report.applied == records, report
    return records / elapsed


async def _w2(base_url: str, store: Path, expected: int, limit: int) -> float:
    async with HomeportClient(base_url, str(store), device_id="fresh-device") as client:
        await client.login(EMAIL, PASSWORD)
        started = time.perf_counter()
        report = await client.pull(limit=limit)
        elapsed = time.perf_counter() - started
        assert report.applied >= expected, report
        return report.applied / elapsed


def _run(
    database_url: str | None, records: int, batch_sizes: list[int], limit: int
) -> dict[str, object]:
    with running_server(database_url) as server, tempfile.TemporaryDirectory() as stores:
        init_tenant(server, EMAIL, PASSWORD, "bench")
        asyncio.run(_setup(server.base_url))
        push_rates = {}
        for batch_size in batch_sizes:
            device = f"pusher-{batch_size}"
            rate = asyncio.run(
                _w1(server.base_url, Path(stores) / f"{device}.db", records, batch_size, device)
            )
            push_rates[batch_size] = round(rate)
        total = records * len(batch_sizes)
        pull_rate = asyncio.run(_w2(server.base_url, Path(stores) / "fresh.db", total, limit))
    best = max(push_rates, key=lambda size: push_rates[size])
    return {
        "workload": "W1/W2 sync",
        "database": "postgresql" if database_url else "sqlite",
        "records_per_push_run": records,
        "w1_push_records_per_s_by_batch": push_rates,
        "w1_best_batch": best,
        "w1_push_records_per_s": push_rates[best],
        "w2_pulled_records": total,
        "w2_pull_limit": limit,
        "w2_pull_records_per_s": round(pull_rate),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--postgres", default=None, help="admin URL of a PostgreSQL server")
    parser.add_argument("--records", type=int, default=20_000)
    parser.add_argument("--batch-sizes", default="250,500,1000")
    parser.add_argument("--pull-limit", type=int, default=5000)
    args = parser.parse_args()
    sizes = [int(size) for size in args.batch_sizes.split(",")]
    with contextlib.ExitStack() as stack:
        database_url = stack.enter_context(fresh_postgres(args.postgres)) if args.postgres else None
        result = _run(database_url, args.records, sizes, args.pull_limit)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
