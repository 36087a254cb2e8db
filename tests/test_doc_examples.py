"""The shell examples of docs/files.md and docs/rest.md work as written, against a real server
(uvicorn on 127.0.0.1, SQLite), with ``bash -euo pipefail``.

Only the variables block of each page is filled in (the server's address and a real access
token), and what the reader brings is made here (``photo.png``; records for the lists to show).
Every other line runs unchanged; what it prints is checked against what the page says.
"""

from __future__ import annotations

import asyncio
import hashlib
import io
import json
import re
import shutil
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from PIL import Image

from tests.conftest import make_settings, seed_tenant_owner, unavailable
from tests.doc_shell import json_objects, run_bash, shell_blocks
from tests.live_server import LiveServer

DOCS = Path(__file__).resolve().parents[1] / "docs"
FILES_DOC = DOCS / "files.md"
REST_DOC = DOCS / "rest.md"
EMAIL = "owner@docs.example.com"
PASSWORD = "documented-password-1"
REST_VARIABLES = """export HP=http://127.0.0.1:8000
export TOKEN=...   # the access_token of POST /api/v1/auth/login
export R=$HP/api/v1/collections/orders/records
"""
FILES_VARIABLES = """BASE=http://127.0.0.1:8000
ACCESS=...   # an access token
AUTH="Authorization: Bearer $ACCESS"
"""

TOOLS = ("bash", "curl", "openssl", "split", "sha256sum", "base64", "python3")


@pytest.fixture
def server(sqlite_template: Path, tmp_path: Path) -> Iterator[LiveServer]:
    missing = [tool for tool in TOOLS if shutil.which(tool) is None]
    if missing:
        unavailable("The tools the examples use", f"{', '.join(missing)} not found")
    database = tmp_path / "homeport.db"
    shutil.copy(sqlite_template, database)
    settings = make_settings(f"sqlite+aiosqlite:///{database}", tmp_path / "data")
    asyncio.run(seed_tenant_owner(settings.resolved_database_url, "docs", EMAIL, PASSWORD))
    with LiveServer(settings) as running:
        yield running


def _access_token(base_url: str) -> str:
    answer = httpx.post(
        f"{base_url}/api/v1/auth/login",
        json={"email": EMAIL, "password": PASSWORD, "device_id": "docs-laptop"},
    )
    assert answer.status_code == 200, answer.text
    return str(answer.json()["access_token"])


def test_the_files_page_runs_as_written(server: LiveServer, tmp_path: Path) -> None:
    blocks = shell_blocks(FILES_DOC.read_text(encoding="utf-8"))
    assert blocks[0] == FILES_VARIABLES, "docs/files.md changed its variables block"
    variables = f"BASE={server.base_url}\nACCESS={_access_token(server.base_url)}\n"
    variables += 'AUTH="Authorization: Bearer $ACCESS"\n'
    work = tmp_path / "reader"
    work.mkdir()
    photo = io.BytesIO()
    Image.new("RGB", (400, 300), (200, 40, 40)).save(photo, "PNG")
    (work / "photo.png").write_bytes(photo.getvalue())

    result = run_bash("\n".join([variables, *blocks[1:]]), work, timeout=120)

    assert result.returncode == 0, result.stdout + result.stderr
    video = (work / "video.bin").read_bytes()
    answers = json_objects(result.stdout)
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


def _statuses(output: str) -> list[int]:
    """The status codes of the ``curl -i`` answers printed (a body printed before one has no
    newline at its end, so a status line may start mid-line)."""
    return [int(code) for code in re.findall(r"HTTP/[\d.]+ (\d{3}) ", output)]


class RestPage:
    """Runs the blocks of docs/rest.md one by one, each in a new bash with the page's
    variables, as a reader pastes them."""

    def __init__(self, server: LiveServer, work: Path) -> None:
        self.blocks = shell_blocks(REST_DOC.read_text(encoding="utf-8"))
        assert self.blocks[0] == REST_VARIABLES, "docs/rest.md changed its variables block"
        self.token = _access_token(server.base_url)
        self.base_url = server.base_url
        self.variables = (
            f"export HP={server.base_url}\nexport TOKEN={self.token}\n"
            "export R=$HP/api/v1/collections/orders/records\n"
        )
        self.work = work
        self.next = 1

    def run(self, starts_with: str) -> str:
        """The next block, which must start with ``starts_with`` (so a reordered page fails
        here, not in a confusing check later)."""
        block = self.blocks[self.next]
        assert block.startswith(starts_with), block
        self.next += 1
        result = run_bash(self.variables + block, self.work)
        assert result.returncode == 0, block + result.stdout + result.stderr
        return result.stdout

    def create(self, collection: str, data: dict[str, Any]) -> None:
        answer = httpx.post(
            f"{self.base_url}/api/v1/collections/{collection}/records",
            json=data,
            headers={"Authorization": f"Bearer {self.token}"},
        )
        assert answer.status_code == 201, answer.text


def _brotli_command(directory: Path) -> None:
    """A ``brotli -d`` for the page's brotli example (the reader's own tool), from the brotli
    module the server compresses with."""
    script = directory / "brotli"
    script.write_text(
        f"#!{sys.executable}\n"
        "import sys\n"
        "import brotli\n"
        "assert sys.argv[1:] == ['-d'], sys.argv\n"
        "sys.stdout.buffer.write(brotli.decompress(sys.stdin.buffer.read()))\n"
    )
    script.chmod(0o755)


def test_the_rest_page_runs_as_written(server: LiveServer, tmp_path: Path) -> None:
    work = tmp_path / "reader"
    work.mkdir()
    page = RestPage(server, work)
    _brotli_command(tmp_path)
    page.variables += f'export PATH="{tmp_path}:$PATH"\n'

    (orders,) = json_objects(page.run("curl -s -X POST $HP/api/v1/collections"))
    assert orders["name"] == "orders"
    assert orders["collection"]["sortable"] == ["priority", "amount"]
    (created,) = json_objects(page.run("curl -s -X POST $R"))
    assert (created["id"], created["version"], created["data"]["title"]) == ("o1", 1, "Pump")

    read = page.run("curl -si $R/o1")
    assert _statuses(read) == [200, 304]
    assert re.search(r'^etag: "1"\r?$', read, re.IGNORECASE | re.MULTILINE), read

    replaced, patched = json_objects(page.run("curl -s -X PUT $R/o1"))
    assert (replaced["version"], replaced["data"]["title"]) == (2, "Valve")
    assert patched["version"] == 3
    assert patched["data"] == {"id": "o1", "title": "Valve", "address": {"city": "Lyon"}}
    assert httpx.get(
        f"{page.base_url}/api/v1/collections/orders/records/o1",
        headers={"Authorization": f"Bearer {page.token}"},
    ).status_code in (404, 410)  # the block ends with the DELETE

    # o1 is deleted by now: the page says a write to a deleted record is 404.
    assert _statuses(page.run("curl -si -X PATCH $R/o1")) == [404]

    for number, (status, priority, tags) in enumerate(
        [("open", 5, ["urgent"]), ("open", 2, []), ("late", 4, ["urgent"])], start=2
    ):
        page.create(
            "orders",
            {
                "id": f"o{number}",
                "title": f"Order {number}",
                "status": status,
                "priority": priority,
                "tags": tags,
            },
        )
    (listed,) = json_objects(page.run('curl -s "$R?limit=100"'))
    assert [record["id"] for record in listed["data"]] == ["o2", "o3", "o4"]
    assert listed["has_more"] is False

    first, foreign = json_objects(page.run('curl -s "$R?sort=-priority&limit=2"'))
    assert [record["id"] for record in first["data"]] == ["o2", "o4"]
    assert first["has_more"] is True
    # The second line's cursor is the page's placeholder: an altered cursor is refused.
    assert (foreign["status"], foreign["code"], foreign["parameter"]) == (
        400,
        "VALIDATION_004",
        "cursor",
    )

    (filtered,) = json_objects(page.run("curl -s -G $R"))
    assert [record["data"] for record in filtered["data"]] == [
        {"id": "o2", "title": "Order 2", "status": "open"}
    ]

    (batch,) = json_objects(page.run('curl -s -X POST "$R:batch"'))
    # Atomic: o1 is deleted, so its patch fails and nothing of the batch is written.
    assert batch["applied"] is False
    statuses = {result["op"]: result["status"] for result in batch["results"]}
    assert statuses["patch"] == 404
    assert statuses["create"] == 424

    # Answers under 1 KiB are sent as they are: enough records for a page worth compressing
    # (brotli -d refuses anything that is not brotli).
    extra = [f"p{number:02d}" for number in range(1, 21)]
    for record_id in extra:
        page.create("orders", {"id": record_id, "title": f"Order {record_id}", "status": "open"})
    gzipped, brotli_decoded = json_objects(page.run('curl -s --compressed "$R?limit=1000'))
    assert [record["data"] for record in gzipped["data"]][:3] == [
        {"id": f"o{number}", "title": f"Order {number}"} for number in (2, 3, 4)
    ]
    assert [record["id"] for record in brotli_decoded["data"]] == ["o2", "o3", "o4", *extra]

    (work_orders,) = json_objects(page.run("curl -s -X POST $HP/api/v1/collections"))
    assert work_orders["collection"]["searchable"] == ["title", "notes", "tags"]
    # The records of the page's search answer.
    page.create(
        "work_orders",
        {
            "id": "wo-1",
            "title": "Replace pump",
            "notes": "Bring the ladder",
            "status": "open",
            "priority": 1,
        },
    )
    page.create(
        "work_orders",
        {
            "id": "wo-2",
            "title": "Leaking pump",
            "notes": "Valve seal worn",
            "status": "open",
            "priority": 3,
        },
    )
    (ranked,) = json_objects(page.run('curl -s "$HP/api/v1/collections/work_orders/records?q='))
    assert [record["id"] for record in ranked["data"]] == ["wo-2", "wo-1"]  # both words first

    (searched,) = json_objects(page.run('curl -s "$HP/api/v1/search?q=leaking%20pum'))
    documented = json.loads(
        re.search(
            r"```json\n(\{\n  \"terms\": .*?)```", REST_DOC.read_text(encoding="utf-8"), re.DOTALL
        ).group(1)  # type: ignore[union-attr]
    )
    assert searched["terms"] == documented["terms"]
    assert [(hit["id"], hit["data"]) for hit in searched["hits"]] == [
        (hit["id"], hit["data"]) for hit in documented["hits"]
    ]
    assert searched["collections"] == documented["collections"]
    assert searched["suggestions"] == documented["suggestions"]
    assert page.next == len(page.blocks), "a block of docs/rest.md is not run"
