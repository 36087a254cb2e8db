"""Alembic migrations match the models and run both ways, on SQLite and PostgreSQL.

Each test gets its own empty database (a new SQLite file, or a new PostgreSQL database that is
dropped afterwards), so downgrading never touches the database the other tests share.
"""

from __future__ import annotations

import asyncio
import io
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import inspect
from sqlalchemy.engine import Connection

from homeport.kit.db import create_engine
from homeport.migrate import alembic_config, migrations_dir, upgrade
from homeport.models import metadata
from homeport.models.search import (
    include_in_comparison,
    include_name_in_comparison,
    is_full_text_internal,
)
from tests.conftest import temporary_postgres_database


@pytest.fixture
def empty_url(backend: str, tmp_path: Path) -> Iterator[str]:
    if backend == "sqlite":
        yield f"sqlite+aiosqlite:///{(tmp_path / 'migrations.db').as_posix()}"
        return
    with temporary_postgres_database("homeport_migrations") as url:
        yield url


def _differences(connection: Connection) -> list[Any]:
    context = MigrationContext.configure(
        connection,
        opts={
            "compare_type": True,
            "render_as_batch": connection.dialect.name == "sqlite",
            # The full-text engines' own tables and columns (FTS5 virtual and shadow tables,
            # the generated tsvector) have no SQLAlchemy model; see homeport.models.search.
            "include_object": include_in_comparison,
            "include_name": include_name_in_comparison,
        },
    )
    return list(compare_metadata(context, metadata))


def _tables(connection: Connection) -> set[str]:
    names = inspect(connection).get_table_names()
    return {name for name in names if not is_full_text_internal(name, "table")}


def _current(connection: Connection) -> str | None:
    return MigrationContext.configure(connection).get_current_revision()


async def _inspect(url: str) -> tuple[list[Any], set[str], str | None]:
    engine = create_engine(url)
    try:
        async with engine.connect() as connection:
            differences = await connection.run_sync(_differences)
            tables = await connection.run_sync(_tables)
            current = await connection.run_sync(_current)
    finally:
        await engine.dispose()
    return differences, tables, current


def inspect_database(url: str) -> tuple[list[Any], set[str], str | None]:
    return asyncio.run(_inspect(url))


def head() -> str:
    heads = ScriptDirectory.from_config(alembic_config("sqlite://")).get_heads()
    assert len(heads) == 1, f"migrations have several heads: {heads}"
    return heads[0]


MODEL_TABLES = {table.name for table in metadata.sorted_tables}


def test_one_head_in_the_migrations_directory() -> None:
    assert (migrations_dir() / "env.py").is_file()
    assert head() == "0008_upload_synced_offset"


def test_upgrade_head_matches_the_models(empty_url: str) -> None:
    upgrade(empty_url)
    differences, tables, current = inspect_database(empty_url)
    assert differences == [], "models and migrations differ; run `alembic revision --autogenerate`"
    assert tables == MODEL_TABLES | {"alembic_version"}
    assert current == head()


def test_downgrade_to_base_then_upgrade_again(empty_url: str) -> None:
    config = alembic_config(empty_url)
    upgrade(empty_url)
    command.downgrade(config, "base")
    differences, tables, current = inspect_database(empty_url)
    assert tables <= {"alembic_version"}
    assert current is None
    assert differences  # every model table is now missing

    upgrade(empty_url)
    differences, tables, current = inspect_database(empty_url)
    assert differences == []
    assert tables == MODEL_TABLES | {"alembic_version"}
    assert current == head()

    upgrade(empty_url)  # nothing to do
    assert inspect_database(empty_url)[2] == head()


@pytest.mark.parametrize(
    "url", ["postgresql+asyncpg://offline/homeport", "sqlite+aiosqlite:///offline.db"]
)
def test_offline_sql_renders(url: str) -> None:
    """``alembic upgrade head --sql`` works: the env's offline branch renders every table."""
    buffer = io.StringIO()
    config = alembic_config(url)
    config.output_buffer = buffer
    command.upgrade(config, "head", sql=True)
    sql = buffer.getvalue()
    for table in MODEL_TABLES:
        assert f"CREATE TABLE {table}" in sql
