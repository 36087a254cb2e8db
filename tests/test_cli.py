"""The ``homeport`` command line: help, init, migrate, tenants, users, api-keys, keys, serve.

Commands run in-process through Typer's CliRunner against the real databases of the harness
(SQLite through ``--data-dir``, PostgreSQL through ``HOMEPORT_DATABASE_URL``); ``serve`` runs as
a real subprocess bound to 127.0.0.1.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest
from alembic.script import ScriptDirectory
from sqlalchemy import text, update
from typer.testing import CliRunner, Result

from homeport.cli import app
from homeport.kit.clock import utcnow
from homeport.kit.db import Database
from homeport.kit.security import load_or_create_secrets
from homeport.migrate import alembic_config
from homeport.models.auth import ApiKey
from tests.conftest import make_settings, start_harness, stop_harness

ANSI = re.compile(r"\x1b\[[0-9;]*m")
PASSWORD = "correct-horse-battery"
FAST_HASHING = {
    "HOMEPORT_ARGON2_TIME_COST": "1",
    "HOMEPORT_ARGON2_MEMORY_COST_KIB": "1024",
    "HOMEPORT_ARGON2_PARALLELISM": "1",
}


def plain(result: Result) -> str:
    """stdout and stderr of a run, without colour codes."""
    return ANSI.sub("", result.output)


@dataclass
class Target:
    """Where the CLI writes: its ``--data-dir`` and the database URL it resolves to."""

    data_dir: Path
    database_url: str

    def run(self, *args: str) -> Result:
        return CliRunner().invoke(app, [*args, "--data-dir", str(self.data_dir)])


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No HOMEPORT_* from the outside, no .env, fast password hashing."""
    for name in list(os.environ):
        if name.startswith("HOMEPORT_"):
            monkeypatch.delenv(name)
    work = tmp_path / "cwd"
    work.mkdir()
    monkeypatch.chdir(work)
    for name, value in FAST_HASHING.items():
        monkeypatch.setenv(name, value)


@pytest.fixture
def target(
    backend: str,
    request: pytest.FixtureRequest,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    clean_env: None,
) -> Target:
    data_dir = tmp_path / "data"
    if backend == "postgresql":
        url: str = request.getfixturevalue("database_url")  # emptied shared database
        monkeypatch.setenv("HOMEPORT_DATABASE_URL", url)
        return Target(data_dir, url)
    # SQLite: nothing but the data directory; the CLI creates homeport.db in it.
    return Target(data_dir, f"sqlite+aiosqlite:///{(data_dir / 'homeport.db').as_posix()}")


@pytest.fixture
def sqlite_target(tmp_path: Path, clean_env: None) -> Target:
    data_dir = tmp_path / "data"
    return Target(data_dir, f"sqlite+aiosqlite:///{(data_dir / 'homeport.db').as_posix()}")


async def _login(target: Target, body: dict[str, Any]) -> httpx.Response:
    settings = make_settings(target.database_url, target.data_dir)
    running, lifespan = await start_harness(settings)
    try:
        return await running.client.post("/api/v1/auth/login", json=body)
    finally:
        await stop_harness(running, lifespan)


def login(target: Target, email: str, password: str, tenant: str | None = None) -> httpx.Response:
    body: dict[str, Any] = {"email": email, "password": password, "device_id": "cli-test"}
    if tenant:
        body["tenant"] = tenant
    return asyncio.run(_login(target, body))


async def _get(target: Target, path: str, headers: dict[str, str]) -> httpx.Response:
    settings = make_settings(target.database_url, target.data_dir)
    running, lifespan = await start_harness(settings)
    try:
        return await running.client.get(path, headers=headers)
    finally:
        await stop_harness(running, lifespan)


def get(target: Target, path: str, headers: dict[str, str]) -> httpx.Response:
    return asyncio.run(_get(target, path, headers))


# Help


HELP_CASES: list[tuple[list[str], list[str]]] = [
    ([], ["migrate", "serve", "init", "tenants", "users", "api-keys", "keys"]),
    (["migrate"], ["--data-dir"]),
    (["serve"], ["--host", "--port", "--data-dir"]),
    (["init"], ["--email", "--password", "--tenant", "--name", "--data-dir"]),
    (["tenants"], ["list", "create"]),
    (["tenants", "list"], ["--data-dir"]),
    (["tenants", "create"], ["--slug", "--name", "--owner-email", "--data-dir"]),
    (["users"], ["list", "add"]),
    (["users", "list"], ["--data-dir"]),
    (["users", "add"], ["--tenant", "--email", "--role", "--password", "--data-dir"]),
    (["api-keys"], ["create", "list", "revoke"]),
    (
        ["api-keys", "create"],
        ["--tenant", "--name", "--scope", "--expires-days", "--allow-ip", "--data-dir"],
    ),
    (["api-keys", "list"], ["--tenant", "--data-dir"]),
    (["api-keys", "revoke"], ["--tenant", "--id", "--data-dir"]),
    (["keys"], ["rotate"]),
    (["keys", "rotate"], ["--data-dir"]),
]


@pytest.mark.parametrize(
    ("command", "expected"), HELP_CASES, ids=[" ".join(c) or "homeport" for c, _ in HELP_CASES]
)
def test_help(command: list[str], expected: list[str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COLUMNS", "200")
    result = CliRunner().invoke(app, [*command, "--help"])
    assert result.exit_code == 0, result.output
    output = plain(result)
    for word in expected:
        assert word in output, f"{word!r} missing from `homeport {' '.join(command)} --help`"


def test_help_through_the_entry_point() -> None:
    """The installed ``homeport`` script and ``python -m homeport.cli`` both work."""
    script = Path(sys.executable).parent / "homeport"
    commands = [[sys.executable, "-m", "homeport.cli", "--help"]]
    if script.exists():
        commands.append([str(script), "--help"])
    for command in commands:
        done = subprocess.run(command, capture_output=True, text=True, timeout=30, check=False)
        assert done.returncode == 0, done.stderr
        assert "init" in done.stdout
        assert "serve" in done.stdout


# init and migrate


def test_init_creates_an_owner_who_can_log_in(target: Target) -> None:
    args = ["init", "--email", "Owner@Acme.example.com", "--password", PASSWORD, "--tenant", "acme"]
    first = target.run(*args)
    assert first.exit_code == 0, plain(first)
    assert "created tenant 'acme'" in plain(first)

    again = target.run(*args)
    assert again.exit_code == 1
    assert "already exists" in plain(again)
    assert "Traceback" not in plain(again)

    response = login(target, "owner@acme.example.com", PASSWORD, tenant="acme")
    assert response.status_code == 200, response.text
    assert response.json()["access_token"]
    wrong = login(target, "owner@acme.example.com", "not-the-password")
    assert wrong.status_code == 401

    users = target.run("users", "list")
    assert users.exit_code == 0, plain(users)
    # The first user of an empty installation becomes platform admin.
    assert "owner@acme.example.com  platform-admin" in plain(users)


def test_second_init_makes_a_plain_owner(target: Target) -> None:
    assert target.run("init", "--email", "a@a.example.com", "--password", PASSWORD).exit_code == 0
    second = target.run(
        "init", "--email", "b@b.example.com", "--password", PASSWORD, "--tenant", "beta"
    )
    assert second.exit_code == 0, plain(second)
    listed = plain(target.run("users", "list"))
    assert "a@a.example.com  platform-admin" in listed
    assert "b@b.example.com" in listed
    assert "b@b.example.com  platform-admin" not in listed
    assert login(target, "b@b.example.com", PASSWORD).status_code == 200


@pytest.mark.parametrize(
    "args",
    [
        ["--email", "not-an-email", "--password", PASSWORD],
        ["--email", "a@example.com", "--password", "short"],
        ["--email", "a@example.com", "--password", PASSWORD, "--tenant", "Not A Slug!"],
    ],
    ids=["email", "password", "slug"],
)
def test_init_rejects_invalid_input(sqlite_target: Target, args: list[str]) -> None:
    result = sqlite_target.run("init", *args)
    assert result.exit_code == 1
    assert "error:" in plain(result)
    assert "Traceback" not in plain(result)


async def _revision(url: str) -> list[str]:
    database = Database(url)
    try:
        async with database.transaction() as session:
            rows = await session.execute(text("SELECT version_num FROM alembic_version"))
            return [row[0] for row in rows]
    finally:
        await database.dispose()


def test_migrate_is_idempotent(target: Target) -> None:
    for _ in range(2):
        result = target.run("migrate")
        assert result.exit_code == 0, plain(result)
        assert "database is up to date" in plain(result)
    heads = ScriptDirectory.from_config(alembic_config(target.database_url)).get_heads()
    assert asyncio.run(_revision(target.database_url)) == heads
    # SQLite lives in the data directory; with HOMEPORT_DATABASE_URL nothing is created there.
    on_sqlite = target.database_url.startswith("sqlite")
    assert (target.data_dir / "homeport.db").is_file() == on_sqlite


# tenants and users


def test_tenants_and_users(target: Target) -> None:
    assert target.run("migrate").exit_code == 0
    created = target.run(
        "tenants", "create", "--slug", "beta", "--name", "Beta Inc", "--owner-email", "O@Beta.io"
    )
    assert created.exit_code == 0, plain(created)
    assert "created tenant beta" in plain(created)
    assert "invitation token for o@beta.io:" in plain(created)

    plain_tenant = target.run("tenants", "create", "--slug", "gamma", "--name", "Gamma")
    assert plain_tenant.exit_code == 0, plain(plain_tenant)
    assert "invitation" not in plain(plain_tenant)

    duplicate = target.run("tenants", "create", "--slug", "beta", "--name", "Again")
    assert duplicate.exit_code == 1
    assert "error:" in plain(duplicate)

    listed = target.run("tenants", "list")
    assert listed.exit_code == 0, plain(listed)
    assert "beta  Beta Inc" in plain(listed)
    assert "gamma  Gamma" in plain(listed)

    added = target.run(
        "users", "add", "--tenant", "beta", "--email", "Ann@Beta.io", "--role", "admin",
        "--password", PASSWORD,
    )  # fmt: skip
    assert added.exit_code == 0, plain(added)
    assert "added ann@beta.io to beta as admin" in plain(added)
    assert "invitation" not in plain(added)

    invited = target.run("users", "add", "--tenant", "beta", "--email", "bob@beta.io")
    assert invited.exit_code == 0, plain(invited)
    assert "as member" in plain(invited)
    assert "invitation token:" in plain(invited)

    missing = target.run("users", "add", "--tenant", "nope", "--email", "c@beta.io")
    assert missing.exit_code == 1
    assert "no tenant 'nope'" in plain(missing)

    bad_role = target.run("users", "add", "--tenant", "beta", "--email", "d@beta.io", "--role", "x")
    assert bad_role.exit_code == 2

    users = plain(target.run("users", "list"))
    for email in ("o@beta.io", "ann@beta.io", "bob@beta.io"):
        assert email in users
    assert "c@beta.io" not in users

    response = login(target, "ann@beta.io", PASSWORD, tenant="beta")
    assert response.status_code == 200, response.text


# api-keys


def test_api_key_lifecycle(target: Target) -> None:
    init = target.run("init", "--email", "o@acme.io", "--password", PASSWORD, "--tenant", "acme")
    assert init.exit_code == 0, plain(init)
    created = target.run(
        "api-keys", "create", "--tenant", "acme", "--name", "erp",
        "--scope", "tenant:read", "--scope", "members:read",
    )  # fmt: skip
    assert created.exit_code == 0, plain(created)
    output = plain(created)
    key_id = re.search(r"^id:\s+(\S+)$", output, re.MULTILINE)
    key = re.search(r"^key:\s+(\S+)\s+\(shown once\)$", output, re.MULTILINE)
    assert key_id
    assert key
    secret = key.group(1)
    assert secret.startswith("hpk_")
    assert output.count(secret) == 1

    listed = target.run("api-keys", "list", "--tenant", "acme")
    assert listed.exit_code == 0, plain(listed)
    line = next(row for row in plain(listed).splitlines() if key_id.group(1) in row)
    prefix = secret.removeprefix("hpk_").partition("_")[0]
    assert f"hpk_{prefix}_" in line
    assert "erp" in line
    assert "active" in line
    assert "members:read,tenant:read" in line
    assert secret not in plain(listed)
    assert secret.partition(f"hpk_{prefix}_")[2] not in plain(listed)

    me = get(target, "/api/v1/auth/me", {"X-API-Key": secret})
    assert me.status_code == 200, me.text
    assert me.json()["kind"] == "api_key"

    revoked = target.run("api-keys", "revoke", "--tenant", "acme", "--id", key_id.group(1))
    assert revoked.exit_code == 0, plain(revoked)
    assert f"revoked {key_id.group(1)}" in plain(revoked)
    after = plain(target.run("api-keys", "list", "--tenant", "acme"))
    assert "revoked" in next(row for row in after.splitlines() if key_id.group(1) in row)
    assert get(target, "/api/v1/auth/me", {"X-API-Key": secret}).status_code == 401

    unknown = target.run("api-keys", "revoke", "--tenant", "acme", "--id", "no-such-key")
    assert unknown.exit_code == 1
    assert "error:" in plain(unknown)


def test_api_key_errors(target: Target) -> None:
    init = target.run("init", "--email", "o@acme.io", "--password", PASSWORD, "--tenant", "acme")
    assert init.exit_code == 0, plain(init)
    bad_scope = target.run(
        "api-keys", "create", "--tenant", "acme", "--name", "x", "--scope", "admin:everything"
    )
    assert bad_scope.exit_code == 1
    assert "Unknown scopes: admin:everything" in plain(bad_scope)
    no_tenant = target.run("api-keys", "list", "--tenant", "nope")
    assert no_tenant.exit_code == 1
    assert "no tenant 'nope'" in plain(no_tenant)
    listed = target.run("api-keys", "list", "--tenant", "acme")
    assert listed.exit_code == 0
    assert "hpk_" not in plain(listed)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            [
                "api-keys",
                "create",
                "--tenant",
                "acme",
                "--name",
                "x",
                "--scope",
                "tenant:read",
                "--allow-ip",
                "garbage",
            ],
            "--allow-ip: 'garbage' is not an IP address or CIDR network",
        ),
        (["tenants", "create", "--slug", "Bad Slug", "--name", "x"], "--slug:"),
        (
            ["tenants", "create", "--slug", "ok", "--name", "x", "--owner-email", "nope"],
            "--owner-email: not a valid email address",
        ),
        (
            ["users", "add", "--tenant", "acme", "--email", "not an email"],
            "--email: not a valid email address",
        ),
        (
            ["users", "add", "--tenant", "acme", "--email", "a@acme.io", "--password", "short"],
            "--password:",
        ),
        (
            ["init", "--email", "bad", "--password", "short"],
            "--email: not a valid email address; --password:",
        ),
    ],
    ids=["allow-ip", "slug", "owner-email", "user-email", "user-password", "init-both"],
)
def test_cli_refuses_what_the_api_refuses(
    sqlite_target: Target, args: list[str], message: str
) -> None:
    init = sqlite_target.run(
        "init", "--email", "o@acme.io", "--password", PASSWORD, "--tenant", "acme"
    )
    assert init.exit_code == 0, plain(init)
    before = (
        plain(sqlite_target.run("tenants", "list")),
        plain(sqlite_target.run("users", "list")),
        plain(sqlite_target.run("api-keys", "list", "--tenant", "acme")),
    )
    result = sqlite_target.run(*args)
    assert result.exit_code == 1, plain(result)
    assert message in plain(result)
    assert "Traceback" not in plain(result)
    after = (
        plain(sqlite_target.run("tenants", "list")),
        plain(sqlite_target.run("users", "list")),
        plain(sqlite_target.run("api-keys", "list", "--tenant", "acme")),
    )
    assert after == before  # nothing was stored


def test_api_keys_list_shows_expired_keys(sqlite_target: Target) -> None:
    init = sqlite_target.run(
        "init", "--email", "o@acme.io", "--password", PASSWORD, "--tenant", "acme"
    )
    assert init.exit_code == 0, plain(init)
    created = sqlite_target.run(
        "api-keys",
        "create",
        "--tenant",
        "acme",
        "--name",
        "soon",
        "--scope",
        "tenant:read",
        "--expires-days",
        "1",
    )
    assert created.exit_code == 0, plain(created)
    assert "  active  " in plain(sqlite_target.run("api-keys", "list", "--tenant", "acme"))
    asyncio.run(_expire_api_keys(sqlite_target.database_url))
    assert "  expired  " in plain(sqlite_target.run("api-keys", "list", "--tenant", "acme"))


async def _expire_api_keys(url: str) -> None:
    database = Database(url)
    try:
        async with database.transaction() as session:
            await session.execute(update(ApiKey).values(expires_at=utcnow() - timedelta(hours=1)))
    finally:
        await database.dispose()


# keys rotate


def _secrets(data_dir: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((data_dir / "secrets.json").read_text("utf-8"))
    return data


def test_keys_rotate(sqlite_target: Target, monkeypatch: pytest.MonkeyPatch) -> None:
    data_dir = sqlite_target.data_dir
    missing = sqlite_target.run("keys", "rotate")
    assert missing.exit_code == 1
    assert "no secrets file" in plain(missing)

    load_or_create_secrets(data_dir / "secrets.json", utcnow())
    before = _secrets(data_dir)
    rotated = sqlite_target.run("keys", "rotate")
    assert rotated.exit_code == 0, plain(rotated)
    after = _secrets(data_dir)
    assert after["jwt_active_kid"] != before["jwt_active_kid"]
    assert f"active signing key is now {after['jwt_active_kid']}" in plain(rotated)
    old_kid = before["jwt_active_kid"]
    assert after["jwt_keys"][old_kid] == before["jwt_keys"][old_kid]
    assert after["secret_key"] == before["secret_key"]
    assert (data_dir / "secrets.json").stat().st_mode & 0o077 == 0

    monkeypatch.setenv("HOMEPORT_JWT_KEYS", json.dumps({"env": "x" * 48}))
    refused = sqlite_target.run("keys", "rotate")
    assert refused.exit_code == 1
    assert "HOMEPORT_JWT_KEYS" in plain(refused)
    assert _secrets(data_dir) == after


async def _token_survives_rotation(target: Target) -> None:
    settings = make_settings(target.database_url, target.data_dir)
    running, lifespan = await start_harness(settings)
    try:
        body = {"email": "o@acme.io", "password": PASSWORD, "device_id": "d1"}
        old = (await running.client.post("/api/v1/auth/login", json=body)).json()["access_token"]
    finally:
        await stop_harness(running, lifespan)

    rotated = await asyncio.to_thread(target.run, "keys", "rotate")
    assert rotated.exit_code == 0, plain(rotated)
    new_kid = _secrets(target.data_dir)["jwt_active_kid"]

    running, lifespan = await start_harness(settings)
    try:
        me = await running.client.get("/api/v1/auth/me", headers={"Authorization": f"Bearer {old}"})
        assert me.status_code == 200, me.text
        body["device_id"] = "d2"
        new = (await running.client.post("/api/v1/auth/login", json=body)).json()["access_token"]
    finally:
        await stop_harness(running, lifespan)
    assert jwt.get_unverified_header(new)["kid"] == new_kid
    assert jwt.get_unverified_header(old)["kid"] != new_kid


def test_tokens_survive_key_rotation(sqlite_target: Target) -> None:
    init = sqlite_target.run(
        "init", "--email", "o@acme.io", "--password", PASSWORD, "--tenant", "acme"
    )
    assert init.exit_code == 0, plain(init)
    asyncio.run(_token_survives_rotation(sqlite_target))


# serve


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _serve_env() -> dict[str, str]:
    env = {name: value for name, value in os.environ.items() if not name.startswith("HOMEPORT_")}
    env.update(FAST_HASHING)
    env["PYTHONUNBUFFERED"] = "1"
    env["HOMEPORT_LOG_LEVEL"] = "WARNING"
    return env


def _stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)


@dataclass
class Served:
    port: int
    log: Path
    process: subprocess.Popen[bytes]

    @property
    def output(self) -> str:
        return self.log.read_text("utf-8", errors="replace")

    def stop(self) -> None:
        _stop(self.process)


@pytest.fixture
def serve(tmp_path: Path) -> Iterator[Any]:
    """Start ``homeport serve`` as a subprocess; every process is terminated afterwards."""
    processes: list[subprocess.Popen[bytes]] = []
    handles: list[Any] = []

    def start(data_dir: Path, name: str) -> Served:
        port = _free_port()
        log = tmp_path / f"{name}.log"
        handle = log.open("wb")
        handles.append(handle)
        command = [sys.executable, "-m", "homeport.cli", "serve", "--host", "127.0.0.1"]
        command += ["--port", str(port), "--data-dir", str(data_dir)]
        process = subprocess.Popen(
            command, stdout=handle, stderr=subprocess.STDOUT, env=_serve_env(), cwd=tmp_path
        )
        processes.append(process)
        served = Served(port, log, process)
        deadline = time.monotonic() + 60
        while True:
            if process.poll() is not None:
                pytest.fail(f"serve exited with {process.returncode}:\n{served.output}")
            try:
                ready = httpx.get(f"http://127.0.0.1:{port}/health/ready", timeout=2)
                if ready.status_code == 200:
                    return served
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"not ready within 60 s:\n{served.output}")
            time.sleep(0.1)

    try:
        yield start
    finally:
        for process in processes:
            _stop(process)
        for handle in handles:
            handle.close()


PASSWORD_LINE = re.compile(r"^\s*password:\s+(\S+)\s*$", re.MULTILINE)


def test_serve_cold_start(serve: Any, tmp_path: Path, clean_env: None) -> None:
    data_dir = tmp_path / "served"
    first: Served = serve(data_dir, "first")
    passwords = PASSWORD_LINE.findall(first.output)
    assert len(passwords) == 1, first.output
    password = passwords[0]
    assert "admin@example.com" in first.output
    assert (data_dir / "homeport.db").is_file()
    assert (data_dir / "secrets.json").is_file()

    login = httpx.post(
        f"http://127.0.0.1:{first.port}/api/v1/auth/login",
        json={"email": "admin@example.com", "password": password, "device_id": "laptop"},
        timeout=10,
    )
    assert login.status_code == 200, login.text
    token = login.json()["access_token"]
    me = httpx.get(
        f"http://127.0.0.1:{first.port}/api/v1/auth/me",
        headers={"Authorization": f"Bearer {token}"},
        timeout=10,
    )
    assert me.status_code == 200, me.text

    first.stop()
    assert first.process.returncode is not None

    second: Served = serve(data_dir, "second")
    assert PASSWORD_LINE.findall(second.output) == [], second.output
    assert password not in second.output
    assert "First start" not in second.output
    again = httpx.post(
        f"http://127.0.0.1:{second.port}/api/v1/auth/login",
        json={"email": "admin@example.com", "password": password, "device_id": "laptop"},
        timeout=10,
    )
    assert again.status_code == 200, again.text
