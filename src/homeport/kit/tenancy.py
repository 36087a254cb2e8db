"""The one tenant-scoping helper. Every query on a tenant-owned table goes through here.

``scripts/check_tenant_scope.py`` fails the build when a repository builds a SELECT, UPDATE or
DELETE on a tenant-owned model any other way.
"""

from __future__ import annotations

from typing import Any, TypeVar

from sqlalchemy import BindParameter, Delete, Select, Table, Update, delete, select, update

ModelT = TypeVar("ModelT")
# A tenant id, or a bound parameter for one in a statement built once and run many times.
TenantId = str | BindParameter[str]


def _tenant_column(model: Any) -> Any:
    """The tenant column of a mapped class, or of a Table (Core statements on hot paths)."""
    columns = getattr(model, "c", None)
    column = getattr(model, "tenant_id", None) if columns is None else columns.get("tenant_id")
    if column is None:
        raise TypeError(f"{model!r} has no tenant_id column")
    return column


def tenant_select(model: type[ModelT], tenant_id: TenantId) -> Select[ModelT]:
    return select(model).where(_tenant_column(model) == tenant_id)


def tenant_select_columns(model: type[Any], tenant_id: TenantId, *columns: Any) -> Select[Any]:
    """Only some columns, no ORM objects (hot paths), scoped on ``model`` like tenant_select."""
    return select(*columns).select_from(model).where(_tenant_column(model) == tenant_id)


def tenant_update(model: type[Any] | Table, tenant_id: TenantId) -> Update:
    return update(model).where(_tenant_column(model) == tenant_id)


def tenant_delete(model: type[Any], tenant_id: TenantId) -> Delete:
    return delete(model).where(_tenant_column(model) == tenant_id)


def unscoped_select(model: type[ModelT], *, reason: str) -> Select[ModelT]:
    """A deliberate cross-tenant lookup (e.g. by a secret's hash, before the tenant is known).

    The reason is required so every such query is visible in review and in the scope lint.
    """
    if not reason.strip():
        raise ValueError("an unscoped query needs a reason")
    return select(model)


def unscoped_delete(model: type[Any], *, reason: str) -> Delete:
    """A deliberate cross-tenant delete (maintenance jobs). The reason is required."""
    if not reason.strip():
        raise ValueError("an unscoped query needs a reason")
    return delete(model)
