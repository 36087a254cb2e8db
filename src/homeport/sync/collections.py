"""Declaring collections: create, change (additive unless forced), delete; and the diff that the
admin API and ``homeport apply`` both show."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from homeport.kit.broker import publish_after_commit
from homeport.kit.clock import utcnow
from homeport.kit.errors import ErrorCode, ProblemError
from homeport.kit.ids import new_id
from homeport.models.sync import Collection, SchemaChange
from homeport.records.indexes import FieldIndexRepository
from homeport.sync.repository import SyncRepository
from homeport.sync.schemas import CollectionSpec
from homeport.sync.validation import (
    OWNER_FIELD_KEYWORD,
    SchemaError,
    check_schema,
    validator_of,
)

# Stored records read at a time when a change is checked against them.
_PAGE = 1000


@dataclass
class Change:
    name: str
    action: str  # created | updated | unchanged | deleted
    changes: list[str] = field(default_factory=list)
    breaking: list[str] = field(default_factory=list)
    collection: Collection | None = None


def _properties(schema: dict[str, Any]) -> dict[str, Any]:
    properties = schema.get("properties")
    return properties if isinstance(properties, dict) else {}


def _restricts_extra(schema: dict[str, Any]) -> bool:
    """Whether ``additionalProperties`` can reject a field the schema does not declare."""
    return schema.get("additionalProperties", True) not in (True, {})


def breaking_changes(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    """What in ``new`` could reject records that ``old`` accepted (stored ones included)."""
    found = []
    old_props, new_props = _properties(old), _properties(new)
    for name in sorted(set(old_props) - set(new_props)):
        if new.get("additionalProperties") is False:
            found.append(f"property {name} removed while additionalProperties is false")
        elif _restricts_extra(new):
            found.append(f"property {name} removed while additionalProperties is restricted")
    for name in sorted(set(old_props) & set(new_props)):
        if old_props[name] != new_props[name]:
            found.append(f"property {name} changed")
    newly_required = set(new.get("required", [])) - set(old.get("required", []))
    found.extend(f"property {name} became required" for name in sorted(newly_required))
    old_extra, new_extra = old.get("additionalProperties"), new.get("additionalProperties")
    if new_extra is False and old_extra is not False:
        found.append("additionalProperties became false")
    elif new_extra != old_extra and _restricts_extra(new) and old_extra is not False:
        # A schema for extra fields rejects stored extra values it does not match.
        found.append("additionalProperties changed")
    for keyword in sorted(
        (set(old) | set(new))
        - {
            "properties",
            "required",
            "additionalProperties",
            "title",
            "description",
            "$schema",
            "$id",
            OWNER_FIELD_KEYWORD,
        }
    ):
        if old.get(keyword) != new.get(keyword):
            found.append(f"schema keyword {keyword} changed")
    if old.get(OWNER_FIELD_KEYWORD) != new.get(OWNER_FIELD_KEYWORD):
        found.append(f"{OWNER_FIELD_KEYWORD} changed")
    return found


def _describe(old: Collection, spec: CollectionSpec) -> list[str]:
    changes: list[str] = []
    pairs = [
        ("id_field", old.id_field, spec.id_field),
        ("read", old.read_rule, spec.read),
        ("write", old.write_rule, spec.write),
        ("conflict_policy", old.conflict_policy, spec.conflict_policy),
        ("sortable", old.sortable, spec.sortable),
        ("indexes", old.indexes, spec.indexes),
        ("searchable", old.searchable, spec.searchable),
        ("facets", old.facets, spec.facets),
    ]
    changes.extend(
        f"{name}: {before} -> {after}" for name, before, after in pairs if before != after
    )
    old_props, new_props = _properties(old.json_schema), _properties(spec.schema_)
    changes.extend(f"schema: + property {name}" for name in sorted(set(new_props) - set(old_props)))
    changes.extend(f"schema: - property {name}" for name in sorted(set(old_props) - set(new_props)))
    changes.extend(
        f"schema: ~ property {name}"
        for name in sorted(set(old_props) & set(new_props))
        if old_props[name] != new_props[name]
    )
    if old.json_schema != spec.schema_ and not any(c.startswith("schema:") for c in changes):
        changes.append("schema: changed")
    return changes


class CollectionService:
    def __init__(self, session: AsyncSession, max_field_indexes: int) -> None:
        self.repository = SyncRepository(session)
        self.field_indexes = FieldIndexRepository(session, max_field_indexes)

    async def list(self, tenant_id: str) -> list[Collection]:
        return list(await self.repository.list_collections(tenant_id))

    async def get(self, tenant_id: str, name: str) -> Collection:
        collection = await self.repository.get_collection(tenant_id, name)
        if collection is None:
            raise ProblemError(ErrorCode.NOT_FOUND, f"Collection {name!r} not found")
        return collection

    async def plan(self, tenant_id: str, spec: CollectionSpec) -> Change:
        """What declaring ``spec`` would do, without doing it."""
        _check(spec)
        existing = await self.repository.get_collection(tenant_id, spec.name)
        if existing is None:
            return Change(spec.name, "created", ["new collection"])
        changes = _describe(existing, spec)
        breaking = breaking_changes(existing.json_schema, spec.schema_)
        breaking += await _stored_values_rejected(
            self.repository, tenant_id, existing, spec.schema_
        )
        if existing.id_field != spec.id_field:
            breaking.append(f"id_field changed from {existing.id_field} to {spec.id_field}")
        return Change(spec.name, "updated" if changes else "unchanged", changes, breaking, existing)

    async def declare(
        self,
        tenant_id: str,
        spec: CollectionSpec,
        *,
        force: bool = False,
        actor: str | None = None,
        must_exist: bool | None = None,
    ) -> Change:
        """Create or change a collection. ``must_exist``: True for an update (404 when missing),
        False for a create (409 when it exists), None for either (the manifest)."""
        change = await self.plan(tenant_id, spec)
        existing = change.collection
        if must_exist is True and existing is None:
            raise ProblemError(ErrorCode.NOT_FOUND, f"Collection {spec.name!r} not found")
        if must_exist is False and existing is not None:
            raise ProblemError(ErrorCode.VALIDATION_002, f"Collection {spec.name!r} exists")
        now = utcnow()
        if existing is None:
            collection = Collection(
                id=new_id(),
                tenant_id=tenant_id,
                name=spec.name,
                id_field=spec.id_field,
                owner_field=spec.schema_.get(OWNER_FIELD_KEYWORD),
                json_schema=spec.schema_,
                read_rule=spec.read,
                write_rule=spec.write,
                conflict_policy=spec.conflict_policy,
                auto_resolve=True,
                notify_on_conflict=False,
                schema_version=1,
                sortable=list(spec.sortable),
                indexes=list(spec.indexes),
                searchable=list(spec.searchable),
                facets=list(spec.facets),
                created_at=now,
                updated_at=now,
            )
            self.repository.add(collection)
            try:
                await self.repository.flush()
            except IntegrityError as exc:  # declared at the same moment by another request
                raise ProblemError(
                    ErrorCode.VALIDATION_002, f"Collection {spec.name!r} exists"
                ) from exc
            change.collection = collection
            await self.field_indexes.ensure(spec.indexes)
            return change
        if change.action == "unchanged":
            return change
        if change.breaking and not force:
            raise ProblemError(
                ErrorCode.VALIDATION_003,
                "Not an additive change: " + "; ".join(change.breaking) + ". Stored records may "
                "no longer validate; repeat with force to apply it anyway (it is recorded).",
                extra={"breaking": change.breaking},
            )
        schema_changed = existing.json_schema != spec.schema_
        if change.breaking:
            self.repository.add(
                SchemaChange(
                    id=new_id(),
                    tenant_id=tenant_id,
                    collection=spec.name,
                    from_version=existing.schema_version,
                    to_version=existing.schema_version + (1 if schema_changed else 0),
                    breaking=change.breaking,
                    old_schema=existing.json_schema,
                    new_schema=spec.schema_,
                    actor=actor,
                    created_at=now,
                )
            )
        existing.id_field = spec.id_field
        existing.json_schema = spec.schema_
        existing.owner_field = spec.schema_.get(OWNER_FIELD_KEYWORD)
        existing.read_rule = spec.read
        existing.write_rule = spec.write
        existing.conflict_policy = spec.conflict_policy
        existing.sortable = list(spec.sortable)
        existing.indexes = list(spec.indexes)
        existing.searchable = list(spec.searchable)
        existing.facets = list(spec.facets)
        if schema_changed:
            existing.schema_version += 1
        existing.updated_at = now
        await self.repository.flush()
        await self.field_indexes.ensure(spec.indexes)
        # Live connections re-check their scopes against the new rules.
        publish_after_commit(self.repository.session, {"kind": "feed", "tenant_id": tenant_id})
        return change

    async def delete(self, tenant_id: str, name: str, *, force: bool = False) -> None:
        await self.get(tenant_id, name)
        records = await self.repository.count_records(tenant_id, name)
        if records and not force:
            raise ProblemError(
                ErrorCode.VALIDATION_003,
                f"Collection {name!r} holds {records} records; delete with force to remove "
                "them too (devices keep their local copies)",
            )
        await self.repository.delete_collection(tenant_id, name)
        await self.field_indexes.ensure()  # its field indexes go with it


async def _stored_values_rejected(
    repository: SyncRepository, tenant_id: str, existing: Collection, schema: dict[str, Any]
) -> list[str]:
    """Properties ``schema`` adds that stored records already hold (as extra fields, e.g.
    after the property was removed) with values it rejects: adding those is breaking."""
    added = sorted(set(_properties(schema)) - set(_properties(existing.json_schema)))
    if not added:
        return []
    validator = validator_of(schema)
    found: dict[str, str] = {}
    after = ""
    while len(found) < len(added):
        page = await repository.records_holding(
            tenant_id, existing.name, [n for n in added if n not in found], after, _PAGE
        )
        for record_id, data in page:
            for where, _message in validator.errors(data):
                name = next((n for n in added if where == n or where.startswith(f"{n}.")), None)
                if name is not None:
                    found.setdefault(name, record_id)
        if len(page) < _PAGE:
            break
        after = page[-1][0]
    return [
        f"property {name} added, but stored records hold values of it that it rejects "
        f"(record {found[name][:100]!r})"
        for name in added
        if name in found
    ]


def _check(spec: CollectionSpec) -> None:
    try:
        check_schema(spec.schema_)
    except SchemaError as exc:
        where = f"schema.{exc.location}" if exc.location else "schema"
        raise ProblemError(
            ErrorCode.VALIDATION_001,
            f"{where}: {exc.reason}" if exc.location else str(exc),
            extra={"errors": [{"field": where, "message": exc.reason}]},
        ) from exc
