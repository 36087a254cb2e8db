"""Database engine, sessions and the shared declarative base.

SQLite (the embedded default) runs in WAL mode and every transaction starts with
``BEGIN IMMEDIATE``: SQLite has one writer, and taking the write lock up front avoids the
"database is locked" failure a deferred transaction hits when it upgrades from read to write.
Within one process, units of work queue on an asyncio lock (the single writer) instead of
SQLite's sleeping busy handler, which made waiting requests stall for seconds under load.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import ColumnElement, DateTime, MetaData, String, any_, bindparam, event, text
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.engine import Dialect, make_url
from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)
from sqlalchemy.orm import DeclarativeBase
from sqlalchemy.types import TypeDecorator

from homeport.kit.errors import ErrorCode, ProblemError
from homeport.kit.logging import get_logger
from homeport.kit.sqlite_inline import InlineConnection, inline_connector

log = get_logger("homeport.db")

NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


UNIQUE_VIOLATION = "23505"

# SQLite names its constraint errors; the ones that are PostgreSQL's unique_violation.
_SQLITE_UNIQUE = {"SQLITE_CONSTRAINT_UNIQUE", "SQLITE_CONSTRAINT_PRIMARYKEY"}


def database_state(exc: BaseException) -> str | None:
    """The SQLSTATE of the database error behind ``exc`` (a SQLite unique or primary key
    violation as PostgreSQL's ``23505``), else None. Follows the driver's exception chain
    (SQLAlchemy's wrapper, then the driver's error, which carries the state)."""
    seen: BaseException | None = exc
    for _depth in range(4):
        if seen is None:
            return None
        state = getattr(seen, "sqlstate", None)
        if isinstance(state, str):
            return state
        if getattr(seen, "sqlite_errorname", None) in _SQLITE_UNIQUE:
            return UNIQUE_VIOLATION
        seen = getattr(seen, "orig", None) or seen.__cause__
    return None


# Text with a lone surrogate has no UTF-8: SQLite's driver fails to encode it where
# PostgreSQL refuses it (class 22). Only a request's text can hold one.
_NO_UTF8 = "no-utf-8"


def _as_problem(exc: BaseException) -> ProblemError | None:
    """The caller's problem when the database refused the request's data, else None."""
    state = _NO_UTF8 if isinstance(exc, UnicodeEncodeError) else database_state(exc)
    if state is None:
        return None
    # Never the value itself in the log: it may be a secret.
    if state == _NO_UTF8 or state.startswith("22"):
        # Too long, out of range, a NUL in text: the caller's input, not a failure.
        log.warning("value_refused_by_database", sqlstate=state)
        return ProblemError(ErrorCode.VALIDATION_001, "A value in this request cannot be stored")
    if state == UNIQUE_VIOLATION:
        # Checked before the write, so another request stored the same value meanwhile (two
        # writers at once on PostgreSQL): what the later one would have been told after it.
        log.warning("unique_value_taken_meanwhile", sqlstate=state)
        return ProblemError(
            ErrorCode.VALIDATION_002,
            "Already exists: a request at the same moment stored the same value",
        )
    return None


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)


class UTCDateTime(TypeDecorator[datetime]):
    """Stores UTC; always hands back timezone-aware datetimes, on SQLite too."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to a UTC column")
        value = value.astimezone(UTC)
        if dialect.name == "sqlite":
            return value.replace(tzinfo=None)
        return value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value.astimezone(UTC)


# FULL: a commit is on disk (the WAL synced) before the write is answered, so an acknowledged
# write survives a power loss; NORMAL syncs only at checkpoints (faster; the last commits
# before a power loss or OS crash may be lost, never the database itself).
SQLITE_SYNCHRONOUS = ("FULL", "NORMAL")
# Execution option of a unit of work whose commit need not reach the disk before it is answered
# (see Database.transaction); the SQLite begin hook reads it from the connection.
_NOT_DURABLE = "homeport_not_durable"


def _configure_sqlite(engine: AsyncEngine, synchronous: str) -> None:
    @event.listens_for(engine.sync_engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # Let SQLAlchemy, not the driver, decide when transactions begin.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute(f"PRAGMA synchronous={synchronous}")
        cursor.execute("PRAGMA foreign_keys=ON")
        # Only another process (CLI, a second server on the same file) can hold the lock.
        cursor.execute("PRAGMA busy_timeout=5000")
        cursor.close()

    @event.listens_for(engine.sync_engine, "begin")
    def _on_begin(connection: Any) -> None:
        # Straight to sqlite3 (the engine's connections are InlineConnections): through the
        # statement machinery this BEGIN cost about as much as a query, and every unit of work
        # runs one.
        driver: InlineConnection = connection.connection.driver_connection
        relaxed = connection.get_execution_options().get(_NOT_DURABLE, False)
        driver.begin_immediate("NORMAL" if relaxed else synchronous)


def one_of(column: Any, name: str) -> dict[str, ColumnElement[bool]]:
    """``column`` is one of the strings of the list parameter ``name``, by dialect, for
    statements built once: on PostgreSQL one array parameter (one statement to prepare,
    whatever the list's length); on SQLite an expanding ``IN``."""
    return {
        "postgresql": column == any_(bindparam(name, type_=ARRAY(String))),
        "sqlite": column.in_(bindparam(name, expanding=True)),
    }


def compact_json(document: Any) -> str:
    """How JSON columns are written: no spaces, UTF-8 kept (smaller and faster to pass on)."""
    return json.dumps(document, separators=(",", ":"), ensure_ascii=False)


def create_engine(
    url: str, *, pool_size: int = 10, echo: bool = False, sqlite_synchronous: str = "FULL"
) -> AsyncEngine:
    if url.startswith("sqlite"):
        if sqlite_synchronous not in SQLITE_SYNCHRONOUS:
            raise ValueError(
                f"synchronous must be one of {SQLITE_SYNCHRONOUS}, not {sqlite_synchronous!r}"
            )
        parsed = make_url(url)
        database = parsed.database or ":memory:"
        engine = create_async_engine(
            url,
            echo=echo,
            hide_parameters=True,  # a failed statement's log line shows no value of it
            pool_size=2,
            max_overflow=4,
            async_creator=inline_connector(database, uri=bool(parsed.query.get("uri"))),
            json_serializer=compact_json,
        )
        _configure_sqlite(engine, sqlite_synchronous)
        return engine
    return create_async_engine(
        url,
        echo=echo,
        hide_parameters=True,
        pool_size=pool_size,
        max_overflow=pool_size,
        pool_pre_ping=True,
        json_serializer=compact_json,
        # asyncpg prepares every statement; after five runs PostgreSQL may switch to a generic
        # plan that ignores the actual parameters (e.g. scans a whole collection for an id
        # list). Planning each run is cheap next to that.
        connect_args={"server_settings": {"plan_cache_mode": "force_custom_plan"}},
    )


@asynccontextmanager
async def _closed_directly(session: AsyncSession) -> AsyncIterator[AsyncSession]:
    try:
        yield session
    finally:
        await session.close()


class Database:
    """Owns the engine and the session factory; created by the app lifespan or the CLI."""

    def __init__(
        self,
        url: str,
        *,
        pool_size: int = 10,
        echo: bool = False,
        sqlite_synchronous: str = "FULL",
    ) -> None:
        self.url = url
        self.engine = create_engine(
            url, pool_size=pool_size, echo=echo, sqlite_synchronous=sqlite_synchronous
        )
        self.sessionmaker = async_sessionmaker(self.engine, expire_on_commit=False)
        self._writer = asyncio.Lock() if self.engine.dialect.name == "sqlite" else None

    def unit_of_work_lock(self) -> contextlib.AbstractAsyncContextManager[object]:
        """Held for a whole transaction on SQLite (one writer); free on PostgreSQL."""
        if self._writer is None:
            return contextlib.nullcontext()
        return self._writer

    @property
    def dialect(self) -> str:
        return self.engine.dialect.name

    @asynccontextmanager
    async def transaction(self, *, durable: bool = True) -> AsyncIterator[AsyncSession]:
        """A unit of work: commits on success, rolls back on any exception.

        ``durable=False``: on SQLite the commit need not be synced to disk before it returns
        (``synchronous=NORMAL`` for this one), for bookkeeping whose loss in a power failure
        costs a retry and nothing else (upload progress: the bytes it describes are not synced
        either). PostgreSQL commits as configured."""
        options = {} if durable else {"execution_options": {_NOT_DURABLE: True}}
        session = self.sessionmaker(**options)
        async with self.unit_of_work_lock(), self._closing(session):
            try:
                yield session
                await session.commit()
            except BaseException as exc:
                await session.rollback()
                problem = _as_problem(exc)
                if problem is None:
                    raise
                raise problem from exc

    def _closing(self, session: AsyncSession) -> contextlib.AbstractAsyncContextManager[object]:
        """Closes ``session`` at the end (its connection went back to the pool at the commit
        or rollback already). AsyncSession's own context manager closes it in a task of its
        own, shielded from the caller's cancellation (asyncpg's close may do network I/O that
        must not stop halfway); that task and the event loop passes it take about a quarter of
        a short unit of work's CPU. SQLite's inline driver closes without ever suspending, so
        a cancellation cannot land in the middle: it is closed directly."""
        if self._writer is None:
            return session
        return _closed_directly(session)

    async def ping(self) -> None:
        async with self.unit_of_work_lock(), self.engine.connect() as connection:
            await connection.execute(text("SELECT 1"))

    async def dispose(self) -> None:
        await self.engine.dispose()
