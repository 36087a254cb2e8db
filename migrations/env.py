"""Alembic environment: runs on SQLite and PostgreSQL through the async engines."""

from __future__ import annotations

import asyncio

from alembic import context
from sqlalchemy.engine import Connection

from homeport.kit.db import create_engine
from homeport.models import metadata
from homeport.models.search import include_in_comparison, include_name_in_comparison

config = context.config


def _run(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=metadata,
        render_as_batch=connection.dialect.name == "sqlite",
        compare_type=True,
        # Autogenerate leaves the full-text engines' own tables and columns alone.
        include_object=include_in_comparison,
        include_name=include_name_in_comparison,
    )
    with context.begin_transaction():
        context.run_migrations()


async def _run_async(url: str) -> None:
    engine = create_engine(url)
    try:
        async with engine.connect() as connection:
            await connection.run_sync(_run)
            await connection.commit()
    finally:
        await engine.dispose()


def run_migrations_online() -> None:
    url = config.get_main_option("sqlalchemy.url")
    assert url, "sqlalchemy.url must be set"
    connection = config.attributes.get("connection")
    if connection is not None:
        _run(connection)
    else:
        asyncio.run(_run_async(url))


if context.is_offline_mode():
    context.configure(
        url=config.get_main_option("sqlalchemy.url"), target_metadata=metadata, literal_binds=True
    )
    with context.begin_transaction():
        context.run_migrations()
else:
    run_migrations_online()
