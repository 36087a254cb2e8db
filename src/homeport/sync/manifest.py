"""The app manifest: a YAML file declaring a tenant's collections (``homeport apply``).

```yaml
tenant: acme            # optional; the command's --tenant overrides it
collections:
  - name: work_orders
    id_field: id
    schema: {type: object, properties: {...}}
    read: tenant
    write: role:manager
    conflict_policy: field_merge
```

Loading checks the whole file before anything touches the database: every entry is validated
with :class:`CollectionSpec` (the admin API's own body) and its JSON Schema is checked, and
every problem is reported with the entry it belongs to. Applying is all or nothing: the plan of
every entry is computed first, and when one of them is breaking without ``force`` nothing is
declared. Collections of the tenant that the manifest does not name are listed and kept, never
deleted.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from pydantic import TypeAdapter, ValidationError

from homeport.auth.schemas import Slug
from homeport.kit.errors import ErrorCode, ProblemError
from homeport.sync.collections import Change, CollectionService
from homeport.sync.schemas import CollectionSpec
from homeport.sync.validation import SchemaError, check_schema

TOP_LEVEL_KEYS = ("tenant", "collections")
_SLUG = TypeAdapter(Slug)


class ManifestError(ValueError):
    """The manifest cannot be used; ``problems`` names every one, with its entry."""

    def __init__(self, source: str, problems: list[str]) -> None:
        self.source = source
        self.problems = problems
        super().__init__(f"invalid manifest {source}: " + "; ".join(problems))


@dataclass(frozen=True)
class Manifest:
    collections: list[CollectionSpec]
    tenant: str | None = None


# Parsing


class _StrictLoader(yaml.SafeLoader):
    """SafeLoader that refuses a key given twice in one mapping (YAML would keep the last)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: set[Any] = set()
        for key_node, _value in node.value:
            key = self.construct_object(key_node, deep=True)
            try:
                duplicate = key in seen
            except TypeError:  # an unhashable key; the base class reports it
                continue
            if duplicate:
                raise yaml.constructor.ConstructorError(
                    "while constructing a mapping",
                    node.start_mark,
                    f"found duplicate key {key!r}",
                    key_node.start_mark,
                )
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


def _entry_lines(root: yaml.Node | None) -> list[int]:
    """The line (1-based) where each entry of ``collections`` starts, for error messages."""
    if not isinstance(root, yaml.MappingNode):
        return []
    for key, value in root.value:
        is_collections = isinstance(key, yaml.ScalarNode) and key.value == "collections"
        if is_collections and isinstance(value, yaml.SequenceNode):
            return [item.start_mark.line + 1 for item in value.value]
    return []


def _json_problem(value: Any, path: str) -> str | None:
    """Where ``value`` holds something JSON cannot (a YAML date, a non-string key, NaN)."""
    if value is None or isinstance(value, str | bool | int):
        return None
    if isinstance(value, float):
        return None if math.isfinite(value) else f"{path}: {value} is not a JSON number"
    if isinstance(value, list):
        for index, item in enumerate(value):
            problem = _json_problem(item, f"{path}[{index}]")
            if problem:
                return problem
        return None
    if isinstance(value, dict):
        for key, item in value.items():
            if not isinstance(key, str):
                return f"{path}: key {key!r} is not a string (quote it)"
            problem = _json_problem(item, f"{path}.{key}")
            if problem:
                return problem
        return None
    return f"{path}: {value!r} is not a JSON value (quote it)"


def _describe_entry(index: int, entry: Any, lines: list[int]) -> str:
    label = f"collections[{index}]"
    name = entry.get("name") if isinstance(entry, dict) else None
    if isinstance(name, str) and name:
        label += f" ({name})"
    if index < len(lines):
        label += f", line {lines[index]}"
    return label


def _validate_entry(entry: Any, label: str) -> tuple[CollectionSpec | None, list[str]]:
    if not isinstance(entry, dict):
        return None, [f"{label}: must be a mapping (name, id_field, schema, read, ...)"]
    problem = _json_problem(entry, "")
    if problem:
        return None, [f"{label}: {problem.lstrip('.')}"]
    try:
        spec = CollectionSpec.model_validate(entry)
    except ValidationError as exc:
        problems = []
        for error in exc.errors():
            where = ".".join(str(part) for part in error["loc"]) or "(entry)"
            message = error["msg"].removeprefix("Value error, ")
            problems.append(f"{label}: {where}: {message}")
        return None, problems
    try:
        check_schema(spec.schema_)
    except SchemaError as exc:
        return None, [f"{label}: schema: {exc}"]
    return spec, []


def _yaml_problem(exc: yaml.YAMLError) -> str:
    if not isinstance(exc, yaml.MarkedYAMLError):
        return f"invalid YAML: {exc}"
    mark = exc.problem_mark or exc.context_mark
    where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
    what = ": ".join(part for part in (exc.context, exc.problem) if part)
    return f"invalid YAML{where}: {what}"


def parse_manifest(text: str, source: str = "<manifest>") -> Manifest:
    """The manifest in ``text``; :class:`ManifestError` naming every problem otherwise."""
    loader = _StrictLoader(text)
    try:
        root = loader.get_single_node()
        data = loader.construct_document(root) if root is not None else None
    except yaml.YAMLError as exc:
        raise ManifestError(source, [_yaml_problem(exc)]) from exc
    finally:
        loader.dispose()
    if not isinstance(data, dict):
        raise ManifestError(source, ["the top level must be a mapping with a collections list"])

    problems: list[str] = []
    unknown = [key for key in data if key not in TOP_LEVEL_KEYS]
    if unknown:
        problems.append(
            f"unknown top-level key(s) {', '.join(map(repr, unknown))}: "
            f"use {', '.join(TOP_LEVEL_KEYS)}"
        )
    tenant = data.get("tenant")
    if tenant is not None:
        try:
            tenant = _SLUG.validate_python(tenant)
        except ValidationError:
            problems.append(f"tenant: {tenant!r} is not a tenant slug")
            tenant = None
    entries = data.get("collections")
    if not isinstance(entries, list):
        problems.append("collections: required, a list of collections")
        raise ManifestError(source, problems)

    lines = _entry_lines(root)
    specs: list[CollectionSpec] = []
    first_seen: dict[str, str] = {}
    for index, entry in enumerate(entries):
        label = _describe_entry(index, entry, lines)
        spec, entry_problems = _validate_entry(entry, label)
        problems.extend(entry_problems)
        if spec is None:
            continue
        if spec.name in first_seen:
            problems.append(
                f"{label}: name: {spec.name} is declared twice (also {first_seen[spec.name]})"
            )
            continue
        first_seen[spec.name] = label
        specs.append(spec)
    if problems:
        raise ManifestError(source, problems)
    return Manifest(collections=specs, tenant=tenant)


def load_manifest(path: Path) -> Manifest:
    """Read and validate a manifest file (``OSError`` when it cannot be read)."""
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise ManifestError(str(path), [f"not UTF-8 text: {exc.reason}"]) from exc
    return parse_manifest(text, str(path))


# Planning and applying


@dataclass
class ManifestPlan:
    """What applying a manifest does (or did): one change per entry, in manifest order."""

    changes: list[Change]
    kept: list[str] = field(default_factory=list)  # in the tenant, not in the manifest
    force: bool = False

    @property
    def breaking(self) -> list[Change]:
        return [change for change in self.changes if change.breaking]

    @property
    def refused(self) -> bool:
        """Breaking changes without force: nothing may be applied."""
        return bool(self.breaking) and not self.force

    def count(self, action: str) -> int:
        return sum(1 for change in self.changes if change.action == action)

    def lines(self) -> list[str]:
        """The diff, one line per collection (two for a breaking change)."""
        out: list[str] = []
        for change in self.changes:
            if change.action == "created":
                out.append(f"+ {change.name} (new)")
            elif change.action == "unchanged":
                out.append(f"= {change.name} (unchanged)")
            else:
                out.append(f"~ {change.name}: " + "; ".join(change.changes))
            if change.breaking:
                how = "forced" if self.force else "needs --force"
                out.append(
                    f"! {change.name}: " + "; ".join(change.breaking) + f" (breaking; {how})"
                )
        out.extend(f"? {name} (not in the manifest; kept)" for name in self.kept)
        return out


class ManifestRefused(ProblemError):
    """A breaking change without force; nothing was applied. ``plan`` holds the diff."""

    def __init__(self, plan: ManifestPlan) -> None:
        self.plan = plan
        names = ", ".join(change.name for change in plan.breaking)
        super().__init__(
            ErrorCode.VALIDATION_003,
            f"breaking changes in {names}; nothing applied. Stored records may no longer "
            "validate; repeat with force to apply them anyway (they are recorded).",
            extra={"breaking": {change.name: change.breaking for change in plan.breaking}},
        )


async def plan_manifest(
    service: CollectionService, tenant_id: str, manifest: Manifest, *, force: bool = False
) -> ManifestPlan:
    """The diff between the tenant's collections and the manifest; changes nothing."""
    changes = [await service.plan(tenant_id, spec) for spec in manifest.collections]
    declared = {spec.name for spec in manifest.collections}
    kept = [c.name for c in await service.list(tenant_id) if c.name not in declared]
    return ManifestPlan(changes=changes, kept=kept, force=force)


async def apply_manifest(
    service: CollectionService,
    tenant_id: str,
    manifest: Manifest,
    *,
    force: bool = False,
    actor: str | None = None,
) -> ManifestPlan:
    """Declare every collection of the manifest, in the caller's transaction.

    Raises :class:`ManifestRefused` before declaring anything when a change is breaking and
    ``force`` is false. Any error while declaring propagates, so the caller's transaction rolls
    back whatever was declared before it."""
    plan = await plan_manifest(service, tenant_id, manifest, force=force)
    if plan.refused:
        raise ManifestRefused(plan)
    for index, spec in enumerate(manifest.collections):
        if plan.changes[index].action == "unchanged":
            continue
        plan.changes[index] = await service.declare(tenant_id, spec, force=force, actor=actor)
    return plan
