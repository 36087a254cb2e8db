"""The quickstarts work as written (the README's and docs/quickstart.md's): their shell blocks run
against a real first start.

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

from tests.doc_shell import json_objects, run_bash, shell_blocks

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
    result = run_bash(script, tmp_path)
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


def test_the_quickstart_page_runs_as_written(first_start: tuple[str, str], tmp_path: Path) -> None:
    """docs/quickstart.md's walk from the first login to a tenant, its owner, a member, an API
    key and a logout: its blocks run in order, as written, against the same first start."""
    base, password = first_start
    blocks = shell_blocks((README.parent / "docs" / "quickstart.md").read_text(encoding="utf-8"))
    first = next(index for index, block in enumerate(blocks) if block.startswith("BASE="))
    walk = blocks[first : first + 6]
    assert walk[-1].startswith('curl -s "$BASE/api/v1/auth/sessions"'), walk[-1]
    script = (
        "\n".join(walk)
        .replace("paste-the-printed-password", password)
        .replace("http://127.0.0.1:8000", base)
    )
    result = run_bash(script, tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    tenant, accepted, sam, members, by_key, sessions = json_objects(result.stdout)
    assert tenant["slug"] == "acme"
    assert accepted["accepted"] is True
    assert accepted["email"] == "dana@acme.example"
    assert (sam["email"], sam["role"], sam["activated"]) == ("sam@acme.example", "member", False)
    emails = sorted(member["email"] for member in members["members"])
    assert emails == ["dana@acme.example", "sam@acme.example"]
    assert by_key == members  # the API key reads the same list
    (session,) = sessions["sessions"]
    assert session["device_id"] == "dana-phone"
    assert session["current"] is True
    # The walk ends with a logout: Dana's token no longer works.
    dana = json.loads((tmp_path / "dana.json").read_text())
    me = httpx.get(
        f"{base}/api/v1/auth/me", headers={"Authorization": f"Bearer {dana['access_token']}"}
    )
    assert me.status_code == 401
