"""Test harness: every database test runs on real SQLite and real PostgreSQL.

- SQLite: one migrated template file per run, copied for each test.
- PostgreSQL: one database per run (created here, dropped at the end), migrated once, emptied
  before each test.
- When ``CI`` is set, an unreachable PostgreSQL or Redis fails the run instead of skipping.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import shutil
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from homeport.app import create_app
from homeport.config import Settings
from homeport.kit.jobs import JobRegistry
from homeport.migrate import upgrade
from homeport.models import metadata

PG_ADMIN_URL = os.environ.get("HOMEPORT_TEST_PG", "postgresql://postgres@127.0.0.1:5432/postgres")
REDIS_URL = os.environ.get("HOMEPORT_TEST_REDIS", "redis://127.0.0.1:6379/15")
IN_CI = bool(os.environ.get("CI"))
BACKENDS = ["sqlite", "postgresql"]


def unavailable(what: str, reason: str) -> None:
    message = f"{what} unavailable: {reason}"
    if IN_CI:
        pytest.fail(f"{message} (CI requires it)", pytrace=False)
    pytest.skip(message)


@pytest.fixture(scope="session")
def anyio_backend() -> str:
    return "asyncio"


# PostgreSQL: one database for the whole run


async def _pg_admin(statement: str) -> None:
    import asyncpg

    connection = await asyncpg.connect(PG_ADMIN_URL, timeout=5)
    try:
        await connection.execute(statement)
    finally:
        await connection.close()


@contextlib.contextmanager
def temporary_postgres_database(prefix: str) -> Iterator[str]:
    """A new empty PostgreSQL database (asyncpg URL), dropped afterwards."""
    name = f"{prefix}_{os.getpid()}_{uuid.uuid4().hex[:6]}"
    try:
        asyncio.run(_pg_admin(f'CREATE DATABASE "{name}"'))
    except Exception as exc:
        unavailable("PostgreSQL", f"{type(exc).__name__}: {exc}")
    base = PG_ADMIN_URL.rsplit("/", 1)[0].replace("postgresql://", "postgresql+asyncpg://")
    try:
        yield f"{base}/{name}"
    finally:
        asyncio.run(
            _pg_admin(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                f"WHERE datname = '{name}' AND pid <> pg_backend_pid()"
            )
        )
        asyncio.run(_pg_admin(f'DROP DATABASE IF EXISTS "{name}"'))


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    with temporary_postgres_database("homeport_test") as url:
        upgrade(url)
        yield url


@pytest.fixture(scope="session")
def sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("template") / "homeport.db"
    upgrade(f"sqlite+aiosqlite:///{path}")
    return path


async def empty_all_tables(url: str) -> None:
    """Delete every row, children first, in one round trip. DELETE, not TRUNCATE: on a few
    rows per table it is several times faster (TRUNCATE makes every table a new file), and
    the suite does this before each of its PostgreSQL tests."""
    import asyncpg

    statements = "; ".join(
        f'DELETE FROM "{table.name}"' for table in reversed(metadata.sorted_tables)
    )
    connection = await asyncpg.connect(url.replace("postgresql+asyncpg://", "postgresql://"))
    try:
        await connection.execute(statements)
    finally:
        await connection.close()


# A test on PostgreSQL: ``postgresql`` is one of the parameter ids in its brackets.
_ON_POSTGRES = re.compile(r"\[(?:[^\]]*-)?postgresql(?:-|\])")


def pytest_xdist_make_scheduler(config: pytest.Config, log: Any) -> Any:
    """Test workers (`make test`) get the PostgreSQL tests all on one worker, one after the
    other, and the rest spread as they free up. A pull serves only changes below the oldest
    transaction still open anywhere on the PostgreSQL server (docs/sync.md), so another
    worker's tests on the same server would hold a test's changes back at random."""
    from xdist.scheduler import LoadScopeScheduling

    class OnePostgresWorker(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            return "postgresql" if _ON_POSTGRES.search(nodeid) else nodeid

    return OnePostgresWorker(config, log)


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "backend" in metafunc.fixturenames:
        only_postgres = metafunc.definition.get_closest_marker("postgres_only") is not None
        metafunc.parametrize("backend", ["postgresql"] if only_postgres else BACKENDS)


@pytest.fixture
def database_url(backend: str, request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if backend == "postgresql":
        url: str = request.getfixturevalue("postgres_url")
        asyncio.run(empty_all_tables(url))
        return url
    template: Path = request.getfixturevalue("sqlite_template")
    target = tmp_path / "homeport.db"
    shutil.copy(template, target)
    return f"sqlite+aiosqlite:///{target}"


@pytest.fixture
def redis_url() -> str:
    """The real Redis. Tests isolate their keys with a unique ``redis_key_prefix``."""
    import redis

    client = redis.Redis.from_url(REDIS_URL, socket_connect_timeout=2)
    try:
        client.ping()
    except Exception as exc:
        unavailable("Redis", f"{type(exc).__name__}: {exc}")
    finally:
        client.close()
    return REDIS_URL


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """Endpoint URL of a real S3-compatible server (moto) for the whole run; each test uses its
    own bucket. Under ``CI`` a server that cannot start fails the run."""
    from tests.s3_server import S3ServerUnavailable, running_s3_server

    with contextlib.ExitStack() as stack:
        try:
            endpoint = stack.enter_context(running_s3_server(tmp_path_factory.mktemp("s3")))
        except (S3ServerUnavailable, OSError) as exc:
            unavailable("S3 server (moto)", f"{type(exc).__name__}: {exc}")
        yield endpoint


async def seed_tenant_owner(database_url: str, slug: str, email: str, password: str) -> str:
    """A tenant with its owner, made straight in the database (fast password hashing); its id."""
    from homeport.kit.db import Database
    from homeport.kit.security import PasswordHashing
    from homeport.tenants.service import TenantService

    database = Database(database_url)
    try:
        async with database.transaction() as session:
            tenant, _owner = await TenantService(
                session, PasswordHashing(1, 1024, 1)
            ).create_tenant_with_owner(slug, slug.title(), email, password, platform_admin=False)
            return tenant.id
    finally:
        await database.dispose()


def make_settings(database_url: str, data_dir: Path, **overrides: Any) -> Settings:
    """Fast password hashing and no background jobs unless a test asks for them."""
    values: dict[str, Any] = {
        "data_dir": data_dir,
        "database_url": database_url,
        "argon2_time_cost": 1,
        "argon2_memory_cost_kib": 1024,
        "argon2_parallelism": 1,
        "jobs_enabled": False,
        "rate_limit_login": "1000/minute",
        "rate_limit_default": "10000/minute",
        "rate_limit_health": "1000/minute",
        "rate_limit_upload_init": "10000/minute",
        "rate_limit_upload_chunk": "100000/minute",
        "log_json": True,
        "redis_key_prefix": f"homeport-test-{uuid.uuid4().hex[:8]}",
    }
    values.update(overrides)
    return Settings(_env_file=None, **values)  # type: ignore[call-arg]


@dataclass
class Tenant:
    id: str
    slug: str
    owner_email: str
    owner_password: str


@dataclass
class Harness:
    """A running app (lifespan entered) with an HTTP client and helpers."""

    app: Any
    client: httpx.AsyncClient
    settings: Settings
    tenants: dict[str, Tenant] = field(default_factory=dict)

    @property
    def state(self) -> Any:
        return self.app.state.homeport

    async def create_tenant(
        self, slug: str, email: str | None = None, password: str = "correct-horse-battery"
    ) -> Tenant:
        from homeport.tenants.service import TenantService

        email = email or f"owner@{slug}.example.com"
        async with self.state.database.transaction() as session:
            tenant, _user = await TenantService(
                session, self.state.passwords
            ).create_tenant_with_owner(slug, slug.title(), email, password, platform_admin=False)
        created = Tenant(id=tenant.id, slug=slug, owner_email=email, owner_password=password)
        self.tenants[slug] = created
        return created

    async def add_member(
        self, tenant: Tenant, email: str, role: str, password: str = "member-password-1"
    ) -> str:
        headers = await self.login_headers(tenant.owner_email, tenant.owner_password)
        response = await self.client.post(
            f"/api/v1/tenants/{tenant.id}/members",
            json={"email": email, "role": role, "password": password},
            headers=headers,
        )
        assert response.status_code == 201, response.text
        return str(response.json()["user_id"])

    async def login(
        self,
        email: str,
        password: str,
        device_id: str = "device-1",
        tenant: str | None = None,
    ) -> dict[str, Any]:
        body: dict[str, Any] = {"email": email, "password": password, "device_id": device_id}
        if tenant:
            body["tenant"] = tenant
        response = await self.client.post("/api/v1/auth/login", json=body)
        assert response.status_code == 200, response.text
        result: dict[str, Any] = response.json()
        return result

    async def login_headers(
        self, email: str, password: str, device_id: str = "device-1"
    ) -> dict[str, str]:
        tokens = await self.login(email, password, device_id)
        return {"Authorization": f"Bearer {tokens['access_token']}"}

    async def owner_headers(
        self, tenant: Tenant, device_id: str = "owner-device"
    ) -> dict[str, str]:
        return await self.login_headers(tenant.owner_email, tenant.owner_password, device_id)


async def start_harness(
    settings: Settings, registry: JobRegistry | None = None
) -> tuple[Harness, Any]:
    app = create_app(settings, registry=registry)
    lifespan = app.router.lifespan_context(app)
    await lifespan.__aenter__()
    transport = httpx.ASGITransport(
        app=app, raise_app_exceptions=False, client=("127.0.0.1", 50000)
    )
    client = httpx.AsyncClient(transport=transport, base_url="http://homeport.test")
    return Harness(app=app, client=client, settings=settings), lifespan


async def stop_harness(harness: Harness, lifespan: Any) -> None:
    await harness.client.aclose()
    await lifespan.__aexit__(None, None, None)


@pytest.fixture
def settings(database_url: str, tmp_path: Path) -> Settings:
    return make_settings(database_url, tmp_path / "data")


@contextlib.asynccontextmanager
async def running_harness(
    settings: Settings, registry: JobRegistry | None = None
) -> AsyncIterator[Harness]:
    running, lifespan = await start_harness(settings, registry)
    try:
        yield running
    finally:
        await stop_harness(running, lifespan)


@contextlib.asynccontextmanager
async def client_without_direct_routes(settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    """A client of a second app on ``settings`` (the same database, storage and secrets as a
    harness on them) that leaves every request to FastAPI: the direct routes' tests compare
    the two apps' answers."""
    app = create_app(settings, direct_routes=False)
    lifespan = app.router.lifespan_context(app)
    await lifespan.__aenter__()
    transport = httpx.ASGITransport(
        app=app, raise_app_exceptions=False, client=("127.0.0.1", 50000)
    )
    try:
        async with httpx.AsyncClient(
            transport=transport, base_url="http://homeport.test"
        ) as client:
            yield client
    finally:
        await lifespan.__aexit__(None, None, None)


@pytest.fixture
async def harness(settings: Settings) -> AsyncIterator[Harness]:
    async with running_harness(settings) as running:
        yield running
