"""The README's quickstart works as written: its shell block runs against a real first start.

``homeport serve`` starts on an empty data directory (as ``make run`` does), the password it
prints is pasted where the README says so, and the block runs unchanged otherwise (only the port
differs, so the test never collides with a developer's server on 8000).
"""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

README = Path(__file__).resolve().parents[1] / "README.md"


def _quickstart_block() -> str:
    text = README.read_text(encoding="utf-8")
    match = re.search(r"<!-- quickstart -->\s*```sh\n(.*?)```", text, re.DOTALL)
    assert match, "README.md lost its quickstart block"
    return match.group(1)


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def test_readme_opens_with_the_two_commands() -> None:
    text = README.read_text(encoding="utf-8")
    first_block = re.search(r"```sh\n(.*?)```", text, re.DOTALL)
    assert first_block is not None
    commands = [line.split("#")[0].strip() for line in first_block.group(1).splitlines()]
    assert commands == ["make run", "make test"]


@pytest.fixture
def first_start(tmp_path: Path) -> tuple[str, str]:
    """A server on an empty data dir; yields its base URL and the printed password."""
    port = _free_port()
    env = {**os.environ, "HOMEPORT_ARGON2_MEMORY_COST_KIB": "8192"}
    env.pop("HOMEPORT_DATABASE_URL", None)
    log = tmp_path / "serve.log"
    with log.open("w") as output:
        server = subprocess.Popen(
            [sys.executable, "-m", "homeport.cli", "serve", "--port", str(port)],
            cwd=tmp_path,
            env=env,
            stdout=output,
            stderr=subprocess.STDOUT,
        )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(f"{base}/health/ready").status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert server.poll() is None, log.read_text()
            assert time.monotonic() < deadline, "not ready within 60 s"
            time.sleep(0.2)
        printed = re.search(r"password: (\S+)", log.read_text())
        assert printed, log.read_text()
        yield base, printed.group(1)
    finally:
        server.terminate()
        server.wait(timeout=30)


def test_quickstart_runs_as_written(first_start: tuple[str, str], tmp_path: Path) -> None:
    base, password = first_start
    block = _quickstart_block()
    assert "PASSWORD='paste-the-printed-password'" in block
    script = block.replace("paste-the-printed-password", password).replace(
        "http://127.0.0.1:8000", base
    )
    result = subprocess.run(
        ["bash", "-euo", "pipefail", "-c", script],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    me_line, keys_line = result.stdout.strip().splitlines()
    me = json.loads(me_line)
    assert me["email"] == "admin@example.com"
    assert me["role"] == "owner"
    assert me["device_id"] == "laptop"
    assert keys_line == str(
        sorted(
            ["access_token", "expires_in", "refresh_token", "session_id", "tenant_id", "token_type"]
        )
    )
