"""A value the database itself refuses (SQLSTATE class 22) is the caller's error, not a 500."""

from __future__ import annotations

import pytest
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError

from homeport.kit.db import Database, refused_value_state
from homeport.kit.errors import ErrorCode, ProblemError


async def _insert(database: Database, value: str) -> None:
    async with database.transaction() as session:
        await session.execute(text("INSERT INTO refusals (v) VALUES (:v)"), {"v": value})


async def test_a_refused_value_is_a_validation_problem_and_nothing_is_kept(
    database_url: str,
) -> None:
    database = Database(database_url)
    try:
        async with database.transaction() as session:
            await session.execute(text("DROP TABLE IF EXISTS refusals"))
            await session.execute(text("CREATE TABLE refusals (v VARCHAR(3))"))
        await _insert(database, "ok")
        for value in ("abcd", "a\x00b"):
            if database.dialect == "postgresql":
                with pytest.raises(ProblemError) as refused:
                    await _insert(database, value)
                assert refused.value.code is ErrorCode.VALIDATION_001
                # The value never goes into the answer: it may be a secret.
                assert value not in refused.value.detail
                assert refused_value_state(refused.value.__cause__ or refused.value) in (
                    "22001",  # too long
                    "22021",  # a NUL in text
                )
            else:  # SQLite stores both; it has no such refusals
                await _insert(database, value)
        async with database.transaction() as session:
            stored = (await session.execute(text("SELECT v FROM refusals ORDER BY v"))).all()
        expected = ["ok"] if database.dialect == "postgresql" else sorted(["ok", "abcd", "a\x00b"])
        assert [row.v for row in stored] == expected
        # Other database errors stay errors (a bug shows as one).
        with pytest.raises(DBAPIError):
            async with database.transaction() as session:
                await session.execute(text("SELECT * FROM no_such_table"))
        async with database.transaction() as session:
            await session.execute(text("DROP TABLE refusals"))
    finally:
        await database.dispose()
