"""Project rule: every query on a tenant-owned table goes through homeport.kit.tenancy.

Fails when code under src/homeport calls ``select``/``update``/``delete`` (SQLAlchemy) with a
model that has a ``tenant_id`` column, or calls ``session.get`` on one, anywhere but in
kit/tenancy.py. Use ``tenant_select/tenant_update/tenant_delete`` or, for a deliberate
cross-tenant query, ``unscoped_select/unscoped_delete(model, reason=...)``.
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SOURCE = ROOT / "src" / "homeport"
sys.path.insert(0, str(ROOT / "src"))

QUERY_BUILDERS = {"select", "update", "delete"}
SQLALCHEMY_MODULES = {"sa", "sqlalchemy"}
EXEMPT = {SOURCE / "kit" / "tenancy.py"}


def tenant_models() -> set[str]:
    from homeport.models import Base

    return {
        mapper.class_.__name__
        for mapper in Base.registry.mappers
        # A nullable tenant_id marks a platform-level table whose rows may name a tenant (jobs).
        if "tenant_id" in mapper.columns and not mapper.columns["tenant_id"].nullable
    }


def _name(node: ast.expr) -> str | None:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        return node.attr
    return None


def _is_query_builder(func: ast.expr) -> bool:
    """``select(...)``, or ``sa.select(...)``/``sqlalchemy.select(...)``; not ``session.delete``."""
    if isinstance(func, ast.Name):
        return func.id in QUERY_BUILDERS
    return (
        isinstance(func, ast.Attribute)
        and func.attr in QUERY_BUILDERS
        and isinstance(func.value, ast.Name)
        and func.value.id in SQLALCHEMY_MODULES
    )


def _model_in(argument: ast.expr, models: set[str]) -> str | None:
    """The first tenant-owned model named anywhere in an argument (``Model``, ``Model.column``,
    ``models.Model``, ``func.count(Model.id)``)."""
    for node in ast.walk(argument):
        name = _name(node) if isinstance(node, ast.Name | ast.Attribute) else None
        if name in models:
            return name
    return None


def violations(path: Path, source: str, models: set[str]) -> list[str]:
    found: list[str] = []
    for node in ast.walk(ast.parse(source, filename=str(path))):
        if not isinstance(node, ast.Call):
            continue
        function = _name(node.func)
        if _is_query_builder(node.func):
            for argument in node.args:
                model = _model_in(argument, models)
                if model is not None:
                    found.append(
                        f"{path}:{node.lineno}: {function}({model}...) on a tenant-owned table; "
                        "use homeport.kit.tenancy"
                    )
        if function == "get" and isinstance(node.func, ast.Attribute) and node.args:
            model = _name(node.args[0])
            if model in models:
                found.append(
                    f"{path}:{node.lineno}: session.get({model}, ...) skips tenant scoping; "
                    "use homeport.kit.tenancy.tenant_select"
                )
    return found


def main(paths: list[Path] | None = None) -> int:
    models = tenant_models()
    files = paths or sorted(SOURCE.rglob("*.py"))
    problems: list[str] = []
    for path in files:
        if path in EXEMPT:
            continue
        problems.extend(violations(path, path.read_text("utf-8"), models))
    for problem in problems:
        print(problem)
    if problems:
        print(f"{len(problems)} unscoped queries on tenant-owned tables")
        return 1
    print(
        f"tenant scope: ok ({len(files)} files, tenant-owned models: {', '.join(sorted(models))})"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
