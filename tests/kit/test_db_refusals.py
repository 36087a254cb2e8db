"""A value the database itself refuses (SQLSTATE class 22) is the caller's error, not a 500."""

from __future__ import annotations

import pytest
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError

from homeport.kit.db import UNIQUE_VIOLATION, Database, database_state
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
        # A lone surrogate has no UTF-8: refused by both (SQLite's driver cannot encode it).
        with pytest.raises(ProblemError) as no_utf8:
            await _insert(database, "\ud800")
        assert no_utf8.value.code is ErrorCode.VALIDATION_001
        for value in ("abcd", "a\x00b"):
            if database.dialect == "postgresql":
                with pytest.raises(ProblemError) as refused:
                    await _insert(database, value)
                assert refused.value.code is ErrorCode.VALIDATION_001
                # The value never goes into the answer: it may be a secret.
                assert value not in refused.value.detail
                assert database_state(refused.value.__cause__ or refused.value) in (
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


async def _run(database: Database, *statements: str) -> None:
    async with database.transaction() as session:
        for statement in statements:
            await session.execute(text(statement))


async def test_a_unique_value_taken_meanwhile_is_already_exists_not_a_500(
    database_url: str,
) -> None:
    # What a request meets when another stored the same unique value after its check (two
    # writers at once on PostgreSQL): the later one is told it exists, as it would be after.
    database = Database(database_url)
    try:
        await _run(
            database,
            "DROP TABLE IF EXISTS taken",
            "DROP TABLE IF EXISTS strict",
            "CREATE TABLE taken (k VARCHAR(8) PRIMARY KEY, u INT)",
            "CREATE UNIQUE INDEX uq_taken_u ON taken (u)",
            "CREATE TABLE strict (v INT NOT NULL)",
            "INSERT INTO taken VALUES ('a', 1)",
        )
        for statement in ("INSERT INTO taken VALUES ('a', 2)", "INSERT INTO taken VALUES ('b', 1)"):
            with pytest.raises(ProblemError) as taken:
                await _run(database, "INSERT INTO taken VALUES ('c', 3)", statement)
            assert taken.value.code is ErrorCode.VALIDATION_002
            assert database_state(taken.value.__cause__ or taken.value) == UNIQUE_VIOLATION
        async with database.transaction() as session:
            stored = (await session.execute(text("SELECT k, u FROM taken"))).all()
        assert [tuple(row) for row in stored] == [("a", 1)]  # the failed units kept nothing
        # A NOT NULL violation is no such case: it stays an error (a bug shows as one).
        with pytest.raises(DBAPIError):
            await _run(database, "INSERT INTO strict VALUES (NULL)")
        await _run(database, "DROP TABLE taken", "DROP TABLE strict")
    finally:
        await database.dispose()
