"""What an upload's answers promise after a power loss (SQLite, files on disk): progress is
bookkeeping that commits without waiting for the disk (a lost chunk is re-sent; the whole-file
hash catches it), a finished upload is durable: its bytes and its file row are synced before
the finalize answer."""

from __future__ import annotations

import errno
import hashlib
import os
import shutil
import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import event

from tests.conftest import Harness, make_settings, running_harness
from tests.uploads.conftest import Uploader, make_uploader


class StatementLog:
    """Every statement SQLite runs on the app's connections, with the connection's
    ``synchronous`` level at that moment (PRAGMA statements change it)."""

    def __init__(self) -> None:
        self.entries: list[tuple[str, str]] = []
        self._levels: dict[int, str] = {}
        self._traced: set[int] = set()

    def trace(self, connection: sqlite3.Connection) -> None:
        if id(connection) in self._traced:
            return
        self._traced.add(id(connection))
        key = id(connection)
        self._levels[key] = "FULL"  # the server's default

        def record(statement: str) -> None:
            text = " ".join(statement.split())
            if text.upper().startswith("PRAGMA SYNCHRONOUS="):
                self._levels[key] = text.split("=", 1)[1].strip().upper()
            self.entries.append((self._levels[key], text))

        connection.set_trace_callback(record)

    def levels_of(self, prefix: str) -> set[str]:
        return {level for level, text in self.entries if text.startswith(prefix)}


async def _upload_rest(uploader: Uploader, data: bytes, hook: Callable[[], None]) -> str:
    upload = await uploader.init(data)
    await uploader.send_all(upload, data)
    hook()
    finished = await uploader.finalize(upload["upload_id"])
    assert finished.status_code == 200, finished.text
    return str(finished.json()["file_url"])


async def _upload_tus(uploader: Uploader, data: bytes, hook: Callable[[], None]) -> str:
    headers = {**uploader.headers, "Tus-Resumable": "1.0.0"}
    created = await uploader.client.post(
        "/api/v1/tus/", headers={**headers, "Upload-Length": str(len(data))}
    )
    assert created.status_code == 201, created.text
    location = created.headers["Location"]
    patch = {**headers, "Content-Type": "application/offset+octet-stream"}
    half = len(data) // 2
    first = await uploader.client.patch(
        location, content=data[:half], headers={**patch, "Upload-Offset": "0"}
    )
    assert first.status_code == 204, first.text
    hook()
    last = await uploader.client.patch(
        location, content=data[half:], headers={**patch, "Upload-Offset": str(half)}
    )
    assert last.status_code == 204, last.text
    return str(last.headers["Homeport-File-Url"])


@pytest.mark.parametrize("protocol", ["rest", "tus"])
async def test_progress_commits_relaxed_and_the_finished_file_is_synced(
    sqlite_template: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, protocol: str
) -> None:
    # SQLite only: PostgreSQL commits as its server is configured (synchronous_commit).
    shutil.copy(sqlite_template, tmp_path / "homeport.db")
    url = f"sqlite+aiosqlite:///{(tmp_path / 'homeport.db').as_posix()}"
    settings = make_settings(url, tmp_path / "data", uploads_chunk_size_bytes=64 * 1024)
    synced: list[str] = []
    real_fsync = os.fsync

    def fsync(descriptor: int) -> None:
        synced.append(os.readlink(f"/proc/self/fd/{descriptor}"))
        real_fsync(descriptor)

    log = StatementLog()
    async with running_harness(settings) as harness:
        engine = harness.app.state.homeport.database.engine.sync_engine

        def on_checkout(dbapi_connection: Any, *_args: Any) -> None:
            log.trace(dbapi_connection.driver_connection._conn)

        event.listen(engine, "checkout", on_checkout)
        uploader = await make_uploader(harness)
        data = os.urandom(3 * 64 * 1024 + 100)
        send = _upload_rest if protocol == "rest" else _upload_tus
        # Watch the syncs from the moment the upload is about to finish.
        file_url = await send(uploader, data, lambda: monkeypatch.setattr(os, "fsync", fsync))
        monkeypatch.undo()
        event.remove(engine, "checkout", on_checkout)
        downloaded = await uploader.download(file_url)
    assert hashlib.sha256(downloaded.content).hexdigest() == hashlib.sha256(data).hexdigest()

    # Progress: the session and its parts or offsets commit at NORMAL.
    assert log.levels_of("INSERT INTO upload_sessions") == {"NORMAL"}
    if protocol == "rest":
        assert log.levels_of("INSERT INTO upload_parts") == {"NORMAL"}
    else:
        assert "NORMAL" in log.levels_of("UPDATE upload_sessions SET")
    # The file object is committed at FULL (synced before the answer) ...
    assert log.levels_of("INSERT INTO files") == {"FULL"}
    # ... after the stored bytes and their directory were synced.
    stored = [path for path in synced if Path(path).is_file()]
    assert len(stored) == 1
    assert Path(stored[0]).stat().st_size == len(data)
    assert str(Path(stored[0]).parent) in synced
    # Both kinds of units of work ran on the same connections, each at its own level.
    assert {level for level, text in log.entries if text == "BEGIN IMMEDIATE"} == {
        "NORMAL",
        "FULL",
    }


async def test_a_full_disk_is_a_503_that_keeps_nothing(
    harness: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The disk, not the client, failed: a problem answer to retry later, never a 500, and the
    # chunk (or PATCH) is not counted as received.
    uploader = await make_uploader(harness)
    data = os.urandom(3 * 64 * 1024)
    upload = await uploader.init(data)
    size = upload["chunk_size"]
    headers = {**uploader.headers, "Tus-Resumable": "1.0.0"}
    created = await uploader.client.post(
        "/api/v1/tus/", headers={**headers, "Upload-Length": str(len(data))}
    )
    assert created.status_code == 201, created.text

    def no_space(*_args: Any) -> int:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, "pwritev", no_space)
    chunk = await uploader.chunk(upload["upload_id"], 0, data[:size])
    patch = await uploader.client.patch(
        created.headers["Location"],
        content=data,
        headers={
            **headers,
            "Content-Type": "application/offset+octet-stream",
            "Upload-Offset": "0",
        },
    )
    monkeypatch.undo()
    for answer in (chunk, patch):
        assert answer.status_code == 503, answer.text
        assert answer.headers["content-type"].startswith("application/problem+json")
        assert answer.json()["code"] == "UNAVAILABLE"
    status = await uploader.client.get(
        f"/api/v1/uploads/{upload['upload_id']}/status", headers=uploader.headers
    )
    assert status.json()["uploaded_chunks"] == []
    head = await uploader.client.head(created.headers["Location"], headers=headers)
    assert head.headers["Upload-Offset"] == "0"
