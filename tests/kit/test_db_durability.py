"""SQLite commits reach the disk before a write is answered (synchronous=FULL) unless the
operator chose NORMAL; the setting is checked at startup."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError
from sqlalchemy import text

from homeport.config import Settings
from homeport.kit.db import Database
from tests.conftest import make_settings, running_harness

# PRAGMA synchronous reads back as a number: 1 NORMAL, 2 FULL.
PRAGMA_VALUES = {"NORMAL": 1, "FULL": 2}


async def _synchronous(database: Database) -> tuple[int, str]:
    async with database.transaction() as session:
        synchronous = (await session.execute(text("PRAGMA synchronous"))).scalar_one()
        journal = (await session.execute(text("PRAGMA journal_mode"))).scalar_one()
    return int(synchronous), str(journal)


@pytest.mark.parametrize("chosen", [None, "FULL", "NORMAL"])
async def test_every_connection_syncs_as_chosen(tmp_path: Path, chosen: str | None) -> None:
    url = f"sqlite+aiosqlite:///{(tmp_path / 'homeport.db').as_posix()}"
    database = Database(url) if chosen is None else Database(url, sqlite_synchronous=chosen)
    try:
        assert await _synchronous(database) == (PRAGMA_VALUES[chosen or "FULL"], "wal")
    finally:
        await database.engine.dispose()


def test_an_unknown_mode_is_refused(tmp_path: Path) -> None:
    url = f"sqlite+aiosqlite:///{(tmp_path / 'homeport.db').as_posix()}"
    with pytest.raises(ValueError, match="synchronous"):
        Database(url, sqlite_synchronous="OFF")
    with pytest.raises(ValidationError):
        Settings(_env_file=None, sqlite_synchronous="off")  # type: ignore[call-arg]
    relaxed = Settings(_env_file=None, sqlite_synchronous=" normal ")  # type: ignore[call-arg]
    assert relaxed.sqlite_synchronous == "NORMAL"


async def test_the_server_uses_the_setting(tmp_path: Path) -> None:
    url = f"sqlite+aiosqlite:///{(tmp_path / 'homeport.db').as_posix()}"
    settings = make_settings(url, tmp_path / "data", sqlite_synchronous="NORMAL")
    async with running_harness(settings) as harness:
        database = harness.app.state.homeport.database
        assert await _synchronous(database) == (PRAGMA_VALUES["NORMAL"], "wal")


async def test_a_unit_of_work_may_commit_without_waiting_for_the_disk(tmp_path: Path) -> None:
    url = f"sqlite+aiosqlite:///{(tmp_path / 'homeport.db').as_posix()}"
    database = Database(url)
    try:
        async with database.transaction(durable=False) as session:
            relaxed = (await session.execute(text("PRAGMA synchronous"))).scalar_one()
        # The connection goes back to the pool; the next unit of work is durable again.
        assert relaxed == PRAGMA_VALUES["NORMAL"]
        assert await _synchronous(database) == (PRAGMA_VALUES["FULL"], "wal")
    finally:
        await database.engine.dispose()
