"""What field indexes cost every write: rows inserted into ``sync_records`` (batches of 500,
one tenant that declared nothing) while N partial field indexes of other tenants exist, as
collections' ``indexes`` create them; on PostgreSQL also the planning time of a primary-key
query. The figure behind HOMEPORT_RECORDS_MAX_FIELD_INDEXES (docs/rest.md).

The statements are the ones Homeport creates (``homeport.records.indexes.create_statement``)
on the migrated schema; the rows are written with the driver directly, so the figure is the
database's own cost per row.

Run: .venv/bin/python -m bench.field_indexes [--postgres ADMIN_URL] [--counts 0,16,32,64,128]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sqlite3
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.server import fresh_postgres
from homeport.migrate import upgrade
from homeport.records.indexes import create_statement

ROWS_PER_BATCH = 500
BATCHES = 4
INSERT_SQLITE = (
    "INSERT INTO sync_records (tenant_id, collection, record_id, data, version, field_hlc, hlc, "
    "content_hash, deleted, xid, position, created_at, updated_at) VALUES ('probe', 'orders', "
    "?, ?, 1, '{}', 'h', 'h', 0, 0, ?, '2026-01-01', '2026-01-01')"
)
INSERT_POSTGRES = (
    "INSERT INTO sync_records (tenant_id, collection, record_id, data, version, field_hlc, hlc, "
    "content_hash, deleted, xid, position, created_at, updated_at) VALUES ('probe', 'orders', "
    "$1, $2::jsonb, 1, '{}'::json, 'h', 'h', false, 0, $3, now(), now())"
)


def _rows(count: int, batch: int) -> list[tuple[str, str, int]]:
    return [
        (f"r{count}-{batch}-{n}", json.dumps({"status": "open", "n": n}), n)
        for n in range(ROWS_PER_BATCH)
    ]


def _sqlite(counts: list[int]) -> list[dict[str, Any]]:
    with tempfile.TemporaryDirectory(prefix="homeport-bench-") as directory:
        path = Path(directory) / "homeport.db"
        upgrade(f"sqlite+aiosqlite:///{path}")
        connection = sqlite3.connect(path, isolation_level=None)
        try:
            return _sqlite_runs(connection, counts)
        finally:
            connection.close()


def _sqlite_runs(connection: sqlite3.Connection, counts: list[int]) -> list[dict[str, Any]]:
    connection.execute("PRAGMA journal_mode=WAL")
    results, made = [], 0
    for count in counts:
        while made < count:
            connection.execute(create_statement("sqlite", f"t{made:05d}", "orders", "status"))
            made += 1
        started = time.perf_counter()
        for batch in range(BATCHES):
            connection.execute("BEGIN IMMEDIATE")
            connection.executemany(INSERT_SQLITE, _rows(count, batch))
            connection.execute("COMMIT")
        per_row = (time.perf_counter() - started) / (BATCHES * ROWS_PER_BATCH)
        results.append({"field_indexes": count, "insert_us_per_row": round(per_row * 1e6, 1)})
    return results


async def _postgres(url: str, counts: list[int]) -> list[dict[str, Any]]:
    import asyncpg

    await asyncio.to_thread(upgrade, url)
    connection = await asyncpg.connect(url.replace("postgresql+asyncpg://", "postgresql://"))
    results, made = [], 0
    try:
        for count in counts:
            while made < count:
                await connection.execute(
                    create_statement("postgresql", f"t{made:05d}", "orders", "status")
                )
                made += 1
            started = time.perf_counter()
            for batch in range(BATCHES):
                async with connection.transaction():
                    await connection.executemany(INSERT_POSTGRES, _rows(count, batch))
            per_row = (time.perf_counter() - started) / (BATCHES * ROWS_PER_BATCH)
            explained = await connection.fetchval(
                "EXPLAIN (ANALYZE, FORMAT JSON) SELECT record_id FROM sync_records "
                "WHERE tenant_id = 'probe' AND collection = 'orders' AND record_id = 'r0-0-1'"
            )
            planning = json.loads(explained)[0]["Planning Time"]
            results.append(
                {
                    "field_indexes": count,
                    "insert_us_per_row": round(per_row * 1e6, 1),
                    "planning_ms": round(planning, 2),
                }
            )
    finally:
        await connection.close()
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--postgres", default=None, help="admin URL of a PostgreSQL server")
    parser.add_argument("--counts", default="0,16,32,64,128,1000")
    arguments = parser.parse_args()
    counts = sorted(int(count) for count in arguments.counts.split(","))
    if arguments.postgres:
        with fresh_postgres(arguments.postgres) as url:
            results = asyncio.run(_postgres(url, counts))
    else:
        results = _sqlite(counts)
    database = "postgresql" if arguments.postgres else "sqlite"
    print(json.dumps({"workload": "field indexes", "database": database, "results": results}))


if __name__ == "__main__":
    main()
