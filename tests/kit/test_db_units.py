"""A unit of work gives its connection back however it ends: committed, failed or cancelled
(a connection left checked out would exhaust the pool). SQLite's sessions are closed
directly, not through SQLAlchemy's shielded close task; the commit or the rollback already
hands the connection back, and this checks that it stays so."""

from __future__ import annotations

import asyncio

import pytest
from sqlalchemy import text

from homeport.kit.db import Database


async def test_every_ending_gives_the_connection_back(database_url: str) -> None:
    database = Database(database_url)
    pool = database.engine.pool
    try:
        async with database.transaction() as session:
            await session.execute(text("DROP TABLE IF EXISTS units"))
            await session.execute(text("CREATE TABLE units (v INTEGER)"))
        assert pool.checkedout() == 0  # type: ignore[attr-defined]

        async def failing() -> None:
            async with database.transaction() as session:
                await session.execute(text("INSERT INTO units (v) VALUES (1)"))
                raise RuntimeError("the request failed")

        with pytest.raises(RuntimeError):
            await failing()
        assert pool.checkedout() == 0  # type: ignore[attr-defined]

        inside = asyncio.Event()

        async def held() -> None:
            async with database.transaction() as session:
                await session.execute(text("INSERT INTO units (v) VALUES (2)"))
                inside.set()
                await asyncio.sleep(60)

        task = asyncio.create_task(held())
        await inside.wait()
        assert pool.checkedout() == 1  # type: ignore[attr-defined]
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert pool.checkedout() == 0  # type: ignore[attr-defined]

        # More units of work than the pool holds connections, one after the other.
        for value in range(3, 30):
            async with database.transaction(durable=value % 2 == 0) as session:
                await session.execute(text("INSERT INTO units (v) VALUES (:v)"), {"v": value})
        async with database.transaction() as session:
            stored = (await session.execute(text("SELECT v FROM units ORDER BY v"))).scalars()
            assert list(stored) == list(range(3, 30))  # the failed and cancelled ones left nothing
        assert pool.checkedout() == 0  # type: ignore[attr-defined]
    finally:
        async with database.transaction() as session:
            await session.execute(text("DROP TABLE IF EXISTS units"))
        await database.dispose()
