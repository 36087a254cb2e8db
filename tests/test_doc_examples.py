"""docs/files.md's shell examples work as written: its ``sh`` blocks run in order, in one bash
with ``set -euo pipefail``, against a real server (uvicorn on 127.0.0.1, SQLite).

Only the variables block is filled in (the server's address and a real access token), and the
one file the reader brings (``photo.png``) is made here. Every other line runs unchanged; what
they print is checked against what the page says they print.
"""

from __future__ import annotations

import asyncio
import hashlib
import io
import json
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from PIL import Image

from homeport.kit.db import Database
from homeport.kit.security import PasswordHashing
from homeport.tenants.service import TenantService
from tests.conftest import make_settings, unavailable
from tests.live_server import LiveServer

FILES_DOC = Path(__file__).resolve().parents[1] / "docs" / "files.md"
EMAIL = "owner@docs.example.com"
PASSWORD = "documented-password-1"
VARIABLES = """BASE=http://127.0.0.1:8000
ACCESS=...   # an access token
AUTH="Authorization: Bearer $ACCESS"
"""

TOOLS = ("bash", "curl", "openssl", "split", "sha256sum", "base64", "python3")


def shell_blocks(text: str) -> list[str]:
    return re.findall(r"```sh\n(.*?)```", text, re.DOTALL)


async def _seed(database_url: str) -> None:
    database = Database(database_url)
    try:
        async with database.transaction() as session:
            await TenantService(session, PasswordHashing(1, 1024, 1)).create_tenant_with_owner(
                "docs", "Docs", EMAIL, PASSWORD, platform_admin=False
            )
    finally:
        await database.dispose()


@pytest.fixture
def server(sqlite_template: Path, tmp_path: Path) -> Iterator[LiveServer]:
    missing = [tool for tool in TOOLS if shutil.which(tool) is None]
    if missing:
        unavailable("The tools the examples use", f"{', '.join(missing)} not found")
    database = tmp_path / "homeport.db"
    shutil.copy(sqlite_template, database)
    settings = make_settings(f"sqlite+aiosqlite:///{database}", tmp_path / "data")
    asyncio.run(_seed(settings.resolved_database_url))
    with LiveServer(settings) as running:
        yield running


def _access_token(base_url: str) -> str:
    answer = httpx.post(
        f"{base_url}/api/v1/auth/login",
        json={"email": EMAIL, "password": PASSWORD, "device_id": "docs-laptop"},
    )
    assert answer.status_code == 200, answer.text
    return str(answer.json()["access_token"])


def _json_objects(output: str) -> list[dict[str, Any]]:
    """The JSON objects printed, in order (some examples print one without a newline)."""
    decoder = json.JSONDecoder()
    found, position = [], 0
    while (position := output.find("{", position)) != -1:
        value, position = decoder.raw_decode(output, position)
        found.append(value)
    return found


def test_the_files_page_runs_as_written(server: LiveServer, tmp_path: Path) -> None:
    blocks = shell_blocks(FILES_DOC.read_text(encoding="utf-8"))
    assert blocks[0] == VARIABLES, "docs/files.md changed its variables block"
    variables = f"BASE={server.base_url}\nACCESS={_access_token(server.base_url)}\n"
    variables += 'AUTH="Authorization: Bearer $ACCESS"\n'
    work = tmp_path / "reader"
    work.mkdir()
    photo = io.BytesIO()
    Image.new("RGB", (400, 300), (200, 40, 40)).save(photo, "PNG")
    (work / "photo.png").write_bytes(photo.getvalue())

    result = subprocess.run(
        ["bash", "-euo", "pipefail", "-c", "\n".join([variables, *blocks[1:]])],
        cwd=work,
        capture_output=True,
        text=True,
        timeout=120,
    )

    assert result.returncode == 0, result.stdout + result.stderr
    video = (work / "video.bin").read_bytes()
    answers = _json_objects(result.stdout)
    init, *chunks = answers[: 1 + 3]
    assert (init["chunk_size"], init["total_chunks"]) == (1048576, 3)
    assert [chunk["chunk_index"] for chunk in chunks] == [0, 1, 2]
    assert chunks[-1]["remaining_chunks"] == 0
    status, finalized, cancelled, metadata, pretty, image = answers[4:]
    assert status["missing_chunks"] == []
    assert status["status"] == "open"
    assert finalized["finalized"] is True
    assert finalized["checksum"] == hashlib.sha256(video).hexdigest()
    assert finalized["file_size"] == len(video) == 3_000_000
    # The page cancels after finishing, and says a finished upload cannot be cancelled.
    assert (cancelled["status"], cancelled["code"]) == (409, "VALIDATION_003")
    assert metadata["id"] == finalized["file_id"]
    assert metadata["size"] == 3_000_000
    assert image["mime_type"] == "image/png"
    assert image["filename"] == "photo.png"
    lines = [line.lower() for line in result.stdout.splitlines()]
    assert any(line.startswith("tus-version: 1.0.0") for line in lines), result.stdout
    assert "upload-offset: 2000000" in [line.strip() for line in lines]
    assert any(line.startswith("homeport-file-id: ") for line in lines), result.stdout
    assert "same" in lines
    assert "206" in lines
    assert (work / "rest-of-file.bin").read_bytes() == video[1_000_000:]
    assert pretty == metadata | {"url": pretty["url"], "url_expires_at": pretty["url_expires_at"]}
