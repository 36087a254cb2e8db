"""scripts/check_tenant_scope.py: the source tree passes, unscoped queries are reported.

The script takes no command-line arguments, so it runs as a subprocess for the real tree and is
imported (importlib) to point ``main`` at synthetic modules written to ``tmp_path``.
"""

from __future__ import annotations

import importlib.util
import subprocess
import sys
import textwrap
from pathlib import Path
from types import ModuleType

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts" / "check_tenant_scope.py"


@pytest.fixture(scope="module")
def lint() -> ModuleType:
    spec = importlib.util.spec_from_file_location("check_tenant_scope", SCRIPT)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def write(tmp_path: Path, source: str, name: str = "repository.py") -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(source).lstrip(), "utf-8")
    return path


HEADER = """\
from sqlalchemy import delete, func, select, update

from homeport import models
from homeport.kit.tenancy import tenant_delete, tenant_select, tenant_update, unscoped_select
from homeport.models import ApiKey, DeviceSession, Job, Membership, Tenant, User
"""


def test_source_tree_passes() -> None:
    done = subprocess.run(
        [sys.executable, str(SCRIPT)], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "tenant scope: ok" in done.stdout


def test_tenant_owned_models_are_found(lint: ModuleType) -> None:
    models = lint.tenant_models()
    assert {"ApiKey", "DeviceSession", "Invitation", "Membership", "RefreshToken"} <= models
    # No tenant_id, or a nullable one (platform-level rows that may name a tenant).
    assert not {"Tenant", "User", "Job", "JobSchedule", "LoginThrottle"} & models


def test_unscoped_query_fails_and_names_file_and_line(
    lint: ModuleType, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write(
        tmp_path,
        HEADER
        + """
async def members(session, tenant_id):
    return await session.execute(select(Membership).where(Membership.tenant_id == tenant_id))
""",
    )
    assert lint.main([path]) == 1
    out = capsys.readouterr().out
    assert f"{path}:8: select(Membership...) on a tenant-owned table" in out
    assert "1 unscoped queries on tenant-owned tables" in out


def test_every_kind_of_unscoped_query_is_reported(lint: ModuleType, tmp_path: Path) -> None:
    path = write(
        tmp_path,
        HEADER
        + """
async def bad(session, key_id):
    await session.execute(update(ApiKey).values(name="x"))  # line 8
    await session.execute(delete(DeviceSession))  # line 9
    await session.get(ApiKey, key_id)  # line 10
    await session.execute(select(Membership.user_id, Membership.role))  # line 11
""",
    )
    found = lint.violations(path, path.read_text("utf-8"), lint.tenant_models())
    lines = sorted(int(problem.split(":")[1]) for problem in found)
    assert lines == [8, 9, 10, 11, 11]
    assert any("session.get(ApiKey, ...) skips tenant scoping" in p for p in found)
    assert all(p.startswith(f"{path}:") for p in found)


def test_scoped_and_platform_queries_pass(
    lint: ModuleType, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write(
        tmp_path,
        HEADER
        + """
async def good(session, tenant_id, user_id, key_hash):
    await session.execute(tenant_select(Membership, tenant_id).where(Membership.user_id == user_id))
    await session.execute(tenant_update(ApiKey, tenant_id).values(name="x"))
    await session.execute(tenant_delete(DeviceSession, tenant_id))
    await session.execute(unscoped_select(ApiKey, reason="lookup by hash"))
    await session.execute(select(Tenant).where(Tenant.id == tenant_id))
    await session.execute(select(User).where(User.id == user_id))
    await session.execute(select(Job))
    await session.execute(select(func.count()).select_from(User))
    await session.get(User, user_id)
    await session.delete(key_hash)
""",
    )
    assert lint.main([path]) == 0
    assert "tenant scope: ok (1 files" in capsys.readouterr().out


def test_the_helper_module_itself_is_exempt(lint: ModuleType) -> None:
    tenancy = ROOT / "src" / "homeport" / "kit" / "tenancy.py"
    assert tenancy in lint.EXEMPT
    assert lint.main([tenancy]) == 0


@pytest.mark.parametrize(
    "query",
    [
        "select(models.Membership)",
        "select(func.count(Membership.id))",
        "sqlalchemy.select(Membership)",
        "sa.delete(ApiKey)",
    ],
)
def test_indirect_spellings_are_reported(lint: ModuleType, tmp_path: Path, query: str) -> None:
    path = write(
        tmp_path,
        "import sqlalchemy\nimport sqlalchemy as sa\n"
        + HEADER
        + f"\n\nasync def sneaky(session):\n    return await session.execute({query})\n",
    )
    source = path.read_text("utf-8")
    line = source.splitlines().index(f"    return await session.execute({query})") + 1
    found = lint.violations(path, source, lint.tenant_models())
    assert len(found) == 1, found
    assert found[0].startswith(f"{path}:{line}:")
