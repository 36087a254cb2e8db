"""An aiosqlite-compatible connection that runs sqlite3 calls inline on the event loop.

Why: aiosqlite runs each call on a worker thread; the hand-off and wake-up cost about 0.4 ms
per statement here, more when the CPUs are busy, which dominated request latency (profiled
with py-spy). SQLite statements on a local file take microseconds, and Homeport already
serialises SQLite units of work on one asyncio lock (kit/db.py), so running them inline never
waits on another in-process transaction. SQLAlchemy's aiosqlite dialect drives this object
through ``async_creator``; only the parts of aiosqlite's API that the dialect uses exist.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Iterable
from typing import Any


class InlineCursor:
    def __init__(self, cursor: sqlite3.Cursor) -> None:
        self._cursor = cursor

    async def __aenter__(self) -> InlineCursor:
        return self

    async def __aexit__(self, *exc: object) -> None:
        self._cursor.close()

    async def execute(self, sql: str, parameters: Any = ()) -> InlineCursor:
        self._cursor.execute(sql, parameters)
        return self

    async def executemany(self, sql: str, parameters: Iterable[Any]) -> InlineCursor:
        self._cursor.executemany(sql, parameters)
        return self

    async def fetchone(self) -> Any:
        return self._cursor.fetchone()

    async def fetchmany(self, size: int | None = None) -> list[Any]:
        return self._cursor.fetchmany(size if size is not None else self._cursor.arraysize)

    async def fetchall(self) -> list[Any]:
        return self._cursor.fetchall()

    async def close(self) -> None:
        self._cursor.close()

    @property
    def description(self) -> Any:
        return self._cursor.description

    @property
    def rowcount(self) -> int:
        return self._cursor.rowcount

    @property
    def lastrowid(self) -> int | None:
        return self._cursor.lastrowid

    @property
    def arraysize(self) -> int:
        return self._cursor.arraysize

    @arraysize.setter
    def arraysize(self, value: int) -> None:
        self._cursor.arraysize = value


class _InlineQueue:
    """Stands in for aiosqlite's worker queue: runs the function now."""

    def put_nowait(self, item: tuple[Any, Callable[[], Any]]) -> None:
        future, function = item
        try:
            result = function()
        except BaseException as exc:
            if future is not None:
                future.set_exception(exc)
        else:
            if future is not None:
                future.set_result(result)


class InlineConnection:
    def __init__(self, connection: sqlite3.Connection) -> None:
        self._conn = connection
        self._connection: sqlite3.Connection | None = connection
        self._tx = _InlineQueue()
        self._synchronous: str | None = None  # as last set by begin_immediate

    def cursor(self) -> InlineCursor:
        return InlineCursor(self._conn.cursor())

    async def execute(self, sql: str, parameters: Any = ()) -> InlineCursor:
        return await self.cursor().execute(sql, parameters)

    def begin_immediate(self, synchronous: str | None = None) -> None:
        """Start a write transaction now (called synchronously, from SQLAlchemy's begin event),
        committing with the given ``PRAGMA synchronous`` level (it cannot change inside one)."""
        if synchronous is not None and synchronous != self._synchronous:
            self._conn.execute(f"PRAGMA synchronous={synchronous}")
            self._synchronous = synchronous
        self._conn.execute("BEGIN IMMEDIATE")

    async def commit(self) -> None:
        self._conn.commit()

    async def rollback(self) -> None:
        self._conn.rollback()

    async def close(self) -> None:
        if self._connection is not None:
            self._connection = None
            self._conn.close()

    def stop(self) -> None:
        if self._connection is not None:
            self._connection = None
            self._conn.close()

    async def create_function(self, *args: Any, **kwargs: Any) -> None:
        self._conn.create_function(*args, **kwargs)

    @property
    def isolation_level(self) -> str | None:
        return self._conn.isolation_level

    @isolation_level.setter
    def isolation_level(self, value: str | None) -> None:
        self._conn.isolation_level = value  # type: ignore[assignment]  # typeshed is narrower


def inline_connector(database: str, *, uri: bool = False) -> Callable[[], Any]:
    async def connect() -> InlineConnection:
        connection = sqlite3.connect(
            database, check_same_thread=False, isolation_level=None, uri=uri
        )
        return InlineConnection(connection)

    return connect
