"""W3 search: full-text search over 20,000 records (``/api/v1/search`` and the list's ``q=``).

- Loads N work orders (about 250 bytes, three searchable fields, two facet fields) with sync
  pushes of 1,000; records/s of the load (every write also updates the full-text index), and
  for comparison the same load into a collection without searchable fields.
- Then, one client after the other (latency, not throughput), a fixed mix of queries: a common
  word, a rare word, two words, a word being typed (prefix), a word in no record:
  - ``GET /api/v1/search?q=`` (hits, per-collection totals and facets, suggestions);
  - ``GET /api/v1/collections/{c}/records?q=&limit=50`` (the ranked list).
  p50 and p99 of each, in milliseconds.

Run: .venv/bin/python -m bench.w3_search [--postgres ADMIN_URL] [--records 20000]
     [--queries 400]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import random
import statistics
import time
import uuid

import httpx

from bench.server import (
    EMAIL,
    PASSWORD,
    WORK_ORDER_SCHEMA,
    fresh_postgres,
    init_tenant,
    running_server,
)

COLLECTION = "work_orders"
PLAIN_COLLECTION = "work_orders_plain"
SCHEMA = WORK_ORDER_SCHEMA
VERBS = ["Replace", "Inspect", "Clean", "Repair", "Install", "Calibrate", "Tighten", "Lubricate"]
PARTS = [
    "filter",
    "pump",
    "valve",
    "compressor",
    "belt",
    "fan",
    "motor",
    "sensor",
    "thermostat",
    "gasket",
    "bearing",
    "hose",
    "coil",
    "drain",
    "panel",
    "relay",
]
NOTE_WORDS = [
    "bring",
    "ladder",
    "customer",
    "site",
    "morning",
    "afternoon",
    "access",
    "code",
    "gate",
    "badge",
    "parking",
    "loading",
    "dock",
    "spare",
    "parts",
    "order",
    "warranty",
    "invoice",
    "photo",
    "before",
    "after",
    "noise",
    "vibration",
    "leak",
    "smell",
    "smoke",
    "rust",
    "corrosion",
    "pressure",
    "temperature",
    "reading",
    "manual",
    "checklist",
    "safety",
    "gloves",
    "goggles",
    "permit",
    "supervisor",
    "call",
    "ahead",
    "keys",
    "reception",
    "elevator",
    "roof",
    "basement",
    "boiler",
    "chiller",
    "duct",
    "vent",
]
RARE_WORD = "zeppelin"  # in about one record in a thousand
QUERIES = ["pump", RARE_WORD, "valve leak", "compre", "thermostat calibrate", "unicorn"]
STATUSES = ["open", "assigned", "done"]


def _record(number: int, rng: random.Random) -> dict[str, object]:
    notes = rng.sample(NOTE_WORDS, 12)
    if number % 1000 == 7:
        notes.append(RARE_WORD)
    return {
        "title": f"{VERBS[number % len(VERBS)]} {PARTS[number % len(PARTS)]} on unit {number}",
        "status": STATUSES[number % 3],
        "site": f"Warehouse {number % 97}, Dock {number % 13}",
        "priority": number % 5,
        "notes": " ".join(notes),
    }


async def _push_all(
    client: httpx.AsyncClient, headers: dict[str, str], collection: str, records: int
) -> float:
    rng = random.Random(3)
    started = time.perf_counter()
    for start in range(0, records, 1000):
        changes = [
            {"collection": collection, "id": f"wo-{n:06d}", "op": "upsert", "data": _record(n, rng)}
            for n in range(start, min(start + 1000, records))
        ]
        answer = await client.post(
            "/api/v1/sync/push",
            json={"idempotency_key": uuid.uuid4().hex, "changes": changes},
            headers=headers,
        )
        answer.raise_for_status()
        assert answer.json()["failed_items"] == 0, answer.text
    return records / (time.perf_counter() - started)


async def _load(
    client: httpx.AsyncClient, headers: dict[str, str], records: int
) -> tuple[float, float]:
    """Records/s of the load into a searchable collection and, for comparison, into the same
    collection without searchable fields (no index to maintain)."""
    for name, searchable in ((PLAIN_COLLECTION, []), (COLLECTION, ["title", "site", "notes"])):
        created = await client.post(
            "/api/v1/collections",
            json={
                "name": name,
                "schema": SCHEMA,
                "read": "tenant",
                "write": "tenant",
                "searchable": searchable,
                "facets": ["status", "priority"] if searchable else [],
            },
            headers=headers,
        )
        created.raise_for_status()
    plain = await _push_all(client, headers, PLAIN_COLLECTION, records)
    indexed = await _push_all(client, headers, COLLECTION, records)
    return indexed, plain


def _percentiles(samples: list[float]) -> dict[str, float]:
    cuts = statistics.quantiles(samples, n=100, method="inclusive")
    return {"p50_ms": round(cuts[49], 1), "p99_ms": round(cuts[98], 1)}


async def _latencies(
    client: httpx.AsyncClient, headers: dict[str, str], path: str, params: dict[str, str], n: int
) -> dict[str, dict[str, float]]:
    by_query: dict[str, list[float]] = {query: [] for query in QUERIES}
    for round_number in range(n):
        query = QUERIES[round_number % len(QUERIES)]
        started = time.perf_counter()
        answer = await client.get(path, params={"q": query, **params}, headers=headers)
        by_query[query].append((time.perf_counter() - started) * 1000)
        answer.raise_for_status()
    every = [sample for samples in by_query.values() for sample in samples]
    result = {"all": _percentiles(every)}
    result.update({query: _percentiles(samples) for query, samples in by_query.items()})
    return result


async def _analyze(database_url: str) -> None:
    """PostgreSQL: fresh statistics, as autovacuum gathers them within a minute of a bulk load
    (never-analyzed tables make the planner expect one row and loop)."""
    import asyncpg

    connection = await asyncpg.connect(database_url.replace("+asyncpg", ""))
    try:
        await connection.execute("ANALYZE sync_records; ANALYZE search_documents")
    finally:
        await connection.close()


async def _bench(
    base_url: str, database_url: str | None, records: int, queries: int
) -> dict[str, object]:
    async with httpx.AsyncClient(base_url=base_url, timeout=60) as client:
        login = await client.post(
            "/api/v1/auth/login",
            json={"email": EMAIL, "password": PASSWORD, "device_id": "bench-search"},
        )
        login.raise_for_status()
        headers = {"Authorization": f"Bearer {login.json()['access_token']}"}
        load_rate, plain_rate = await _load(client, headers, records)
        if database_url:
            await _analyze(database_url)
        sample = await client.get("/api/v1/search", params={"q": "pump"}, headers=headers)
        sample.raise_for_status()
        body = sample.json()
        assert body["collections"][COLLECTION]["total"] == records // len(PARTS), body
        # Warm up (connection, caches), then measure.
        await _latencies(client, headers, "/api/v1/search", {}, 2 * len(QUERIES))
        search = await _latencies(client, headers, "/api/v1/search", {}, queries)
        listing = await _latencies(
            client, headers, f"/api/v1/collections/{COLLECTION}/records", {"limit": "50"}, queries
        )
    return {
        "load_records_per_s": round(load_rate),
        "load_without_index_records_per_s": round(plain_rate),
        "search": search,
        "list_q": listing,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--postgres", default=None, help="admin URL of a PostgreSQL server")
    parser.add_argument("--records", type=int, default=20_000)
    parser.add_argument("--queries", type=int, default=400)
    args = parser.parse_args()
    with contextlib.ExitStack() as stack:
        database_url = stack.enter_context(fresh_postgres(args.postgres)) if args.postgres else None
        server = stack.enter_context(running_server(database_url))
        init_tenant(server, EMAIL, PASSWORD, "bench")
        result = asyncio.run(_bench(server.base_url, database_url, args.records, args.queries))
    print(
        json.dumps(
            {
                "workload": "W3 search",
                "database": "postgresql" if database_url else "sqlite",
                "records": args.records,
                "queries_per_endpoint": args.queries,
                **result,
            }
        )
    )


if __name__ == "__main__":
    main()
