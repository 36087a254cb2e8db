"""Start a real Homeport server (uvicorn, separate process) for a benchmark, on 127.0.0.1."""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx

# The benchmark tenant's owner, and the work-order records several workloads use.
EMAIL = "bench@example.com"
PASSWORD = "bench-password-123"
WORK_ORDER_SCHEMA = {
    "type": "object",
    "properties": {
        "id": {"type": "string"},
        "title": {"type": "string"},
        "status": {"enum": ["open", "assigned", "done"]},
        "site": {"type": "string"},
        "priority": {"type": "integer"},
        "notes": {"type": "string"},
    },
    "required": ["title", "status"],
}


@dataclass(frozen=True)
class Server:
    base_url: str
    data_dir: Path
    env: dict[str, str]
    pid: int = 0


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def _postgres_admin(admin_url: str, statement: str) -> None:
    import asyncpg

    connection = await asyncpg.connect(admin_url)
    try:
        await connection.execute(statement)
    finally:
        await connection.close()


@contextlib.contextmanager
def fresh_postgres(admin_url: str) -> Iterator[str]:
    """A new, empty database on the server of ``admin_url`` (dropped afterwards); yields its URL
    in the form Homeport takes (asyncpg driver)."""
    name = f"homeport_bench_{os.getpid()}"
    asyncio.run(_postgres_admin(admin_url, f'CREATE DATABASE "{name}"'))
    base = admin_url.rsplit("/", 1)[0].replace("postgresql://", "postgresql+asyncpg://", 1)
    try:
        yield f"{base}/{name}"
    finally:
        asyncio.run(_postgres_admin(admin_url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


@contextlib.contextmanager
def running_server(database_url: str | None = None, **settings: str) -> Iterator[Server]:
    data_dir = Path(tempfile.mkdtemp(prefix="homeport-bench-"))
    port = free_port()
    env = {
        **os.environ,
        "HOMEPORT_LOG_LEVEL": "WARNING",
        # Limits on (their cost is part of every request) but high enough never to refuse.
        "HOMEPORT_RATE_LIMIT_DEFAULT": "1000000/minute",
        "HOMEPORT_RATE_LIMIT_LOGIN": "1000000/minute",
        **{f"HOMEPORT_{key.upper()}": value for key, value in settings.items()},
    }
    if database_url:
        env["HOMEPORT_DATABASE_URL"] = database_url
    command = [sys.executable, "-m", "homeport.cli"]
    subprocess.run([*command, "migrate", "--data-dir", str(data_dir)], env=env, check=True)
    process = subprocess.Popen(
        [*command, "serve", "--data-dir", str(data_dir), "--port", str(port)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    base_url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{base_url}/health/ready", timeout=1).status_code == 200:
                    break
            time.sleep(0.2)
        else:
            raise RuntimeError("server did not become ready in 60 s")
        yield Server(base_url=base_url, data_dir=data_dir, env=env, pid=process.pid)
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        shutil.rmtree(data_dir, ignore_errors=True)  # uploads runs leave gigabytes


def init_tenant(server: Server, email: str, password: str, tenant: str) -> None:
    """The benchmark's tenant and owner, created the way an operator would (``homeport init``)."""
    subprocess.run(
        [
            sys.executable,
            "-m",
            "homeport.cli",
            "init",
            "--data-dir",
            str(server.data_dir),
            "--email",
            email,
            "--password",
            password,
            "--tenant",
            tenant,
        ],
        env=server.env,
        check=True,
        capture_output=True,
    )


@contextlib.contextmanager
def profiling(pid: int, seconds: int, output: Path) -> Iterator[None]:
    """py-spy samples the server process for ``seconds`` (raw format), if asked for."""
    if seconds <= 0:
        yield
        return
    py_spy = Path(sys.executable).with_name("py-spy")
    recorder = subprocess.Popen(
        [
            str(py_spy),
            "record",
            "--pid",
            str(pid),
            "--duration",
            str(seconds),
            "--rate",
            "200",
            "--format",
            "raw",
            "--output",
            str(output),
            "--nonblocking",
            *os.environ.get("BENCH_PY_SPY_FLAGS", "").split(),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        yield
    finally:
        recorder.wait(timeout=seconds + 60)
