"""``homeport apply``: the app manifest, on SQLite and PostgreSQL.

The command runs in-process through Typer's CliRunner, like tests/test_cli.py; what it stored is
read back from the database itself (and once through the admin API).
"""

from __future__ import annotations

import asyncio
import copy
from pathlib import Path
from typing import Any

import pytest
import yaml
from sqlalchemy import select
from typer.testing import CliRunner

from homeport.cli import app
from homeport.kit.db import Database
from homeport.kit.errors import ErrorCode, ProblemError
from homeport.models.sync import Collection, SchemaChange
from homeport.models.tenants import Tenant
from homeport.sync.collections import CollectionService
from homeport.sync.manifest import ManifestError, parse_manifest
from tests import test_cli
from tests.test_cli import PASSWORD, Target, get, login, plain

# The command-line fixtures of tests/test_cli.py: SQLite through --data-dir, PostgreSQL through
# HOMEPORT_DATABASE_URL (``target`` runs on both), no outside HOMEPORT_* variables.
clean_env = test_cli.clean_env
target = test_cli.target
sqlite_target = test_cli.sqlite_target

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "field_service.yaml"

WORK_ORDERS: dict[str, Any] = {
    "name": "work_orders",
    "id_field": "id",
    "schema": {
        "type": "object",
        "properties": {
            "id": {"type": "string"},
            "title": {"type": "string", "maxLength": 200},
            "status": {"type": "string", "enum": ["open", "done"]},
        },
        "required": ["id", "title"],
    },
    "read": "tenant",
    "write": "role:manager",
    "conflict_policy": "field_merge",
}
INSPECTIONS: dict[str, Any] = {
    "name": "inspections",
    "schema": {
        "type": "object",
        "x-owner-field": "technician_id",
        "properties": {
            "id": {"type": "string"},
            "technician_id": {"type": "string"},
            "result": {"type": "string", "enum": ["pass", "fail"]},
        },
    },
    "read": "owner",
    "write": "owner",
    "conflict_policy": "last_write_wins",
}
VOICE_DATA: dict[str, Any] = {
    "name": "voice_data",
    "id_field": "verification_id",
    "schema": {
        "type": "object",
        "properties": {"verification_id": {"type": "string"}, "score": {"type": "number"}},
        "required": ["verification_id"],
    },
    "read": "owner",
    "write": "owner",
    "conflict_policy": "client_wins",
}


def manifest(*collections: dict[str, Any], tenant: str | None = "acme") -> dict[str, Any]:
    body: dict[str, Any] = {"collections": [copy.deepcopy(c) for c in collections]}
    if tenant is not None:
        body["tenant"] = tenant
    return body


def base() -> dict[str, Any]:
    return manifest(WORK_ORDERS, INSPECTIONS, VOICE_DATA)


def write(tmp_path: Path, body: dict[str, Any] | str, name: str = "app.yaml") -> str:
    path = tmp_path / name
    path.write_text(body if isinstance(body, str) else yaml.safe_dump(body, sort_keys=False))
    return str(path)


def entry(body: dict[str, Any], name: str) -> dict[str, Any]:
    found: dict[str, Any] = next(c for c in body["collections"] if c["name"] == name)
    return found


def setup_tenant(target: Target) -> None:
    init = target.run("init", "--email", "o@acme.io", "--password", PASSWORD, "--tenant", "acme")
    assert init.exit_code == 0, plain(init)


async def _read(url: str) -> tuple[dict[str, dict[str, Any]], list[dict[str, Any]]]:
    """Every collection (keyed ``slug/name``) and every recorded schema change."""
    database = Database(url)
    try:
        async with database.transaction() as session:
            slugs = {t.id: t.slug for t in (await session.execute(select(Tenant))).scalars()}
            rows = (await session.execute(select(Collection))).scalars().all()
            collections = {
                f"{slugs[row.tenant_id]}/{row.name}": {
                    "id": row.id,
                    "id_field": row.id_field,
                    "owner_field": row.owner_field,
                    "schema": row.json_schema,
                    "read": row.read_rule,
                    "write": row.write_rule,
                    "conflict_policy": row.conflict_policy,
                    "schema_version": row.schema_version,
                    "updated_at": row.updated_at,
                }
                for row in rows
            }
            changes = [
                {
                    "collection": f"{slugs[row.tenant_id]}/{row.collection}",
                    "from_version": row.from_version,
                    "to_version": row.to_version,
                    "breaking": row.breaking,
                    "old_schema": row.old_schema,
                    "new_schema": row.new_schema,
                    "actor": row.actor,
                }
                for row in (await session.execute(select(SchemaChange))).scalars()
            ]
            return collections, changes
    finally:
        await database.dispose()


def stored(target: Target) -> dict[str, dict[str, Any]]:
    return asyncio.run(_read(target.database_url))[0]


def schema_changes(target: Target) -> list[dict[str, Any]]:
    return asyncio.run(_read(target.database_url))[1]


def lines(output: str) -> list[str]:
    return [line for line in output.splitlines() if line.strip()]


# Help


def test_help_names_every_option(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COLUMNS", "200")
    result = CliRunner().invoke(app, ["apply", "--help"])
    assert result.exit_code == 0, result.output
    for word in ("FILE", "--tenant", "--force", "--dry-run", "--data-dir"):
        assert word in plain(result)


# Applying


def test_first_apply_creates_and_a_second_changes_nothing(target: Target, tmp_path: Path) -> None:
    setup_tenant(target)
    path = write(tmp_path, base())

    first = target.run("apply", path)
    assert first.exit_code == 0, plain(first)
    assert lines(plain(first)) == [
        "+ work_orders (new)",
        "+ inspections (new)",
        "+ voice_data (new)",
        "applied to acme: 3 created, 0 updated, 0 unchanged",
    ]
    after_first = stored(target)
    assert set(after_first) == {"acme/work_orders", "acme/inspections", "acme/voice_data"}
    orders = after_first["acme/work_orders"]
    assert orders["schema"] == WORK_ORDERS["schema"]
    assert (orders["read"], orders["write"]) == ("tenant", "role:manager")
    assert orders["conflict_policy"] == "field_merge"
    assert orders["schema_version"] == 1
    assert after_first["acme/inspections"]["owner_field"] == "technician_id"
    assert after_first["acme/inspections"]["id_field"] == "id"  # the default
    assert after_first["acme/voice_data"]["id_field"] == "verification_id"

    second = target.run("apply", path)
    assert second.exit_code == 0, plain(second)
    assert lines(plain(second)) == [
        "= work_orders (unchanged)",
        "= inspections (unchanged)",
        "= voice_data (unchanged)",
        "applied to acme: 0 created, 0 updated, 3 unchanged",
    ]
    assert stored(target) == after_first  # not even updated_at moved
    assert schema_changes(target) == []


def test_an_additive_change_is_applied(target: Target, tmp_path: Path) -> None:
    setup_tenant(target)
    assert target.run("apply", write(tmp_path, base())).exit_code == 0
    before = stored(target)

    changed = base()
    inspections = entry(changed, "inspections")
    inspections["read"] = "tenant"
    inspections["schema"]["properties"]["notes"] = {"type": "string"}
    entry(changed, "voice_data")["conflict_policy"] = "most_recent_wins"  # an alias
    result = target.run("apply", write(tmp_path, changed, "v2.yaml"))
    assert result.exit_code == 0, plain(result)
    assert lines(plain(result)) == [
        "= work_orders (unchanged)",
        "~ inspections: read: owner -> tenant; schema: + property notes",
        "~ voice_data: conflict_policy: client_wins -> last_write_wins",
        "applied to acme: 0 created, 2 updated, 1 unchanged",
    ]
    after = stored(target)
    assert after["acme/work_orders"] == before["acme/work_orders"]
    assert after["acme/inspections"]["read"] == "tenant"
    assert after["acme/inspections"]["schema"] == inspections["schema"]
    assert after["acme/inspections"]["schema_version"] == 2
    assert after["acme/inspections"]["id"] == before["acme/inspections"]["id"]
    assert after["acme/voice_data"]["conflict_policy"] == "last_write_wins"
    assert after["acme/voice_data"]["schema_version"] == 1  # the schema did not change
    assert schema_changes(target) == []  # additive: nothing to record

    again = target.run("apply", write(tmp_path, changed, "v2.yaml"))
    assert again.exit_code == 0, plain(again)
    assert "0 created, 0 updated, 3 unchanged" in plain(again)
    assert stored(target) == after


def test_a_breaking_change_needs_force(target: Target, tmp_path: Path) -> None:
    setup_tenant(target)
    assert target.run("apply", write(tmp_path, base())).exit_code == 0
    before = stored(target)

    changed = base()
    inspections = entry(changed, "inspections")
    old_schema = copy.deepcopy(inspections["schema"])
    inspections["schema"]["properties"]["result"]["enum"] = ["pass", "fail", "follow_up"]
    inspections["schema"]["required"] = ["result"]
    entry(changed, "work_orders")["schema"]["properties"]["priority"] = {"type": "integer"}
    changed["collections"].append({"name": "visits", "read": "tenant"})
    path = write(tmp_path, changed, "v2.yaml")

    refused = target.run("apply", path)
    assert refused.exit_code == 1
    output = plain(refused)
    assert lines(output)[:5] == [
        "~ work_orders: schema: + property priority",
        "~ inspections: schema: ~ property result",
        "! inspections: property result changed; property result became required"
        " (breaking; needs --force)",
        "= voice_data (unchanged)",
        "+ visits (new)",
    ]
    assert "error: breaking changes in inspections; nothing applied (use --force)" in output
    assert "Traceback" not in output
    # All or nothing: neither the additive change nor the new collection was applied.
    assert stored(target) == before
    assert schema_changes(target) == []

    forced = target.run("apply", path, "--force")
    assert forced.exit_code == 0, plain(forced)
    assert lines(plain(forced)) == [
        "~ work_orders: schema: + property priority",
        "~ inspections: schema: ~ property result",
        "! inspections: property result changed; property result became required"
        " (breaking; forced)",
        "= voice_data (unchanged)",
        "+ visits (new)",
        "applied to acme: 1 created, 2 updated, 1 unchanged",
    ]
    after = stored(target)
    assert after["acme/inspections"]["schema"] == inspections["schema"]
    assert after["acme/inspections"]["schema_version"] == 2
    assert after["acme/work_orders"]["schema_version"] == 2
    assert "acme/visits" in after
    recorded = schema_changes(target)
    assert recorded == [
        {
            "collection": "acme/inspections",
            "from_version": 1,
            "to_version": 2,
            "breaking": ["property result changed", "property result became required"],
            "old_schema": old_schema,
            "new_schema": inspections["schema"],
            "actor": "cli:homeport apply",
        }
    ]

    # The admin API sees the new version.
    token = login(target, "o@acme.io", PASSWORD, tenant="acme").json()["access_token"]
    answer = get(target, "/api/v1/collections/inspections", {"Authorization": f"Bearer {token}"})
    assert answer.status_code == 200, answer.text
    assert answer.json()["schema_version"] == 2
    assert answer.json()["schema"] == inspections["schema"]

    # Applying the same file again, with or without --force, is a no-op.
    for args in ([path], [path, "--force"]):
        again = target.run("apply", *args)
        assert again.exit_code == 0, plain(again)
        assert "0 created, 0 updated, 4 unchanged" in plain(again)
    assert stored(target) == after
    assert len(schema_changes(target)) == 1


def test_changing_the_id_field_is_breaking(sqlite_target: Target, tmp_path: Path) -> None:
    setup_tenant(sqlite_target)
    assert sqlite_target.run("apply", write(tmp_path, base())).exit_code == 0
    changed = base()
    entry(changed, "voice_data")["id_field"] = "score"
    result = sqlite_target.run("apply", write(tmp_path, changed, "v2.yaml"))
    assert result.exit_code == 1
    assert (
        "! voice_data: id_field changed from verification_id to score (breaking; needs --force)"
        in plain(result)
    )
    assert stored(sqlite_target)["acme/voice_data"]["id_field"] == "verification_id"


def test_dry_run_changes_nothing(target: Target, tmp_path: Path) -> None:
    setup_tenant(target)
    path = write(tmp_path, base())
    dry = target.run("apply", path, "--dry-run")
    assert dry.exit_code == 0, plain(dry)
    assert lines(plain(dry)) == [
        "+ work_orders (new)",
        "+ inspections (new)",
        "+ voice_data (new)",
        "dry run: nothing applied",
    ]
    assert stored(target) == {}

    assert target.run("apply", path).exit_code == 0
    before = stored(target)
    changed = base()
    entry(changed, "voice_data")["schema"]["properties"]["score"] = {"type": "integer"}
    entry(changed, "work_orders")["write"] = "tenant"
    v2 = write(tmp_path, changed, "v2.yaml")
    for args in (["--dry-run"], ["--dry-run", "--force"]):
        result = target.run("apply", v2, *args)
        assert result.exit_code == 0, plain(result)
        how = "forced" if "--force" in args else "needs --force"
        assert lines(plain(result)) == [
            "~ work_orders: write: role:manager -> tenant",
            "= inspections (unchanged)",
            "~ voice_data: schema: ~ property score",
            f"! voice_data: property score changed (breaking; {how})",
            "dry run: nothing applied",
        ]
    assert stored(target) == before
    assert schema_changes(target) == []


def test_collections_not_in_the_manifest_are_kept(target: Target, tmp_path: Path) -> None:
    setup_tenant(target)
    assert target.run("apply", write(tmp_path, base())).exit_code == 0
    before = stored(target)

    only_orders = manifest(WORK_ORDERS)
    result = target.run("apply", write(tmp_path, only_orders, "orders.yaml"))
    assert result.exit_code == 0, plain(result)
    assert lines(plain(result)) == [
        "= work_orders (unchanged)",
        "? inspections (not in the manifest; kept)",
        "? voice_data (not in the manifest; kept)",
        "applied to acme: 0 created, 0 updated, 1 unchanged",
    ]
    assert stored(target) == before

    empty = target.run("apply", write(tmp_path, manifest(), "empty.yaml"))
    assert empty.exit_code == 0, plain(empty)
    assert "? work_orders (not in the manifest; kept)" in plain(empty)
    assert stored(target) == before


def test_tenant_comes_from_the_option_or_the_manifest(target: Target, tmp_path: Path) -> None:
    setup_tenant(target)
    assert target.run("tenants", "create", "--slug", "beta", "--name", "Beta").exit_code == 0
    path = write(tmp_path, manifest(VOICE_DATA))  # says tenant: acme

    overridden = target.run("apply", path, "--tenant", "beta")
    assert overridden.exit_code == 0, plain(overridden)
    assert "applied to beta: 1 created" in plain(overridden)
    assert set(stored(target)) == {"beta/voice_data"}

    from_file = target.run("apply", path)
    assert from_file.exit_code == 0, plain(from_file)
    assert set(stored(target)) == {"beta/voice_data", "acme/voice_data"}

    nowhere = target.run("apply", write(tmp_path, manifest(VOICE_DATA, tenant=None), "n.yaml"))
    assert nowhere.exit_code == 1
    assert "error: no tenant: pass --tenant" in plain(nowhere)
    unknown = target.run("apply", path, "--tenant", "nope")
    assert unknown.exit_code == 1
    assert "error: no tenant 'nope'" in plain(unknown)
    assert set(stored(target)) == {"beta/voice_data", "acme/voice_data"}


def test_an_error_while_applying_rolls_everything_back(
    target: Target, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    setup_tenant(target)
    assert target.run("apply", write(tmp_path, manifest(INSPECTIONS))).exit_code == 0
    before = stored(target)
    declare = CollectionService.declare
    calls: list[str] = []

    async def failing_declare(self: CollectionService, tenant_id: str, spec: Any, **kw: Any) -> Any:
        calls.append(spec.name)
        if len(calls) == 3:
            raise ProblemError(ErrorCode.VALIDATION_001, "simulated failure")
        return await declare(self, tenant_id, spec, **kw)

    monkeypatch.setattr(CollectionService, "declare", failing_declare)
    changed = base()
    entry(changed, "inspections")["read"] = "tenant"
    result = target.run("apply", write(tmp_path, changed, "v2.yaml"))
    assert result.exit_code == 1
    assert "error: simulated failure" in plain(result)
    assert calls == ["work_orders", "inspections", "voice_data"]
    assert stored(target) == before  # work_orders not created, inspections not changed


def test_the_example_manifest_applies_cleanly(target: Target) -> None:
    setup_tenant(target)
    first = target.run("apply", str(EXAMPLE))  # its tenant: acme
    assert first.exit_code == 0, plain(first)
    assert lines(plain(first)) == [
        "+ work_orders (new)",
        "+ inspections (new)",
        "+ voice_data (new)",
        "applied to acme: 3 created, 0 updated, 0 unchanged",
    ]
    collections = stored(target)
    assert collections["acme/inspections"]["owner_field"] == "technician_id"
    assert collections["acme/inspections"]["read"] == "owner"
    assert collections["acme/voice_data"]["id_field"] == "verification_id"
    again = target.run("apply", str(EXAMPLE))
    assert again.exit_code == 0, plain(again)
    assert "0 created, 0 updated, 3 unchanged" in plain(again)
    assert stored(target) == collections


# Invalid manifests: nothing is applied, every problem names its entry


INVALID: list[tuple[str, str, list[str]]] = [
    (
        "bad-rule",
        "collections:\n  - name: work_orders\n    read: everyone\n",
        ["collections[0] (work_orders), line 2: read: unknown rule 'everyone'"],
    ),
    (
        "bad-role",
        "collections:\n  - name: work_orders\n  - name: inspections\n    write: role:boss\n",
        ["collections[1] (inspections), line 3: write: 'boss' is not a valid Role"],
    ),
    (
        "bad-policy",
        "collections:\n  - name: voice_data\n    conflict_policy: newest\n",
        ["collections[0] (voice_data), line 2: conflict_policy: unknown conflict policy 'newest'"],
    ),
    (
        "bad-yaml",
        "collections:\n  - name: work_orders\n    read: [tenant\n",
        ["invalid YAML at line 4"],
    ),
    (
        "missing-name",
        "collections:\n  - name: work_orders\n  - id_field: id\n    read: tenant\n",
        ["collections[1], line 3: name: Field required"],
    ),
    (
        "several",
        "collections:\n  - name: Work Orders\n  - name: ok\n    colour: red\n"
        "  - name: ok2\n    schema: {type: string}\n",
        [
            "collections[0] (Work Orders), line 2: name: String should match pattern",
            "collections[1] (ok), line 3: colour: Extra inputs are not permitted",
            "collections[2] (ok2), line 5: schema: a record schema must describe an object",
        ],
    ),
    (
        "invalid-json-schema",
        "collections:\n  - name: a\n    schema: {type: object, properties: {x: {type: 12}}}\n",
        ["collections[0] (a), line 2: schema: invalid JSON Schema"],
    ),
    (
        "duplicate-name",
        "collections:\n  - name: a\n  - name: a\n    read: tenant\n",
        ["collections[1] (a), line 3: name: a is declared twice (also collections[0] (a), line 2)"],
    ),
    (
        "duplicate-key",
        "collections:\n  - name: a\n    read: tenant\n    read: owner\n",
        ["invalid YAML at line 4, column 5", "found duplicate key 'read'"],
    ),
    (
        "not-json",
        "collections:\n  - name: a\n    schema: {type: object, default: {at: 2024-01-01}}\n",
        ["collections[0] (a), line 2: schema.default.at: datetime.date(2024, 1, 1)"],
    ),
    (
        "no-collections",
        "tenant: acme\ncolors: [red]\n",
        ["unknown top-level key(s) 'colors'", "collections: required"],
    ),
    ("not-a-mapping", "- name: a\n", ["the top level must be a mapping"]),
    ("empty-file", "", ["the top level must be a mapping"]),
    (
        "entry-not-a-mapping",
        "collections:\n  - work_orders\n",
        ["collections[0], line 2: must be a mapping"],
    ),
    ("bad-tenant", "tenant: Not A Slug\ncollections: []\n", ["tenant: 'Not A Slug' is not"]),
]


@pytest.mark.parametrize(
    ("text", "expected"), [c[1:] for c in INVALID], ids=[c[0] for c in INVALID]
)
def test_an_invalid_manifest_applies_nothing(
    sqlite_target: Target, tmp_path: Path, text: str, expected: list[str]
) -> None:
    setup_tenant(sqlite_target)
    good = "collections:\n  - name: kept\n"
    assert sqlite_target.run("apply", write(tmp_path, good), "--tenant", "acme").exit_code == 0
    path = write(tmp_path, text, "bad.yaml")
    for args in ([], ["--force"], ["--dry-run"]):
        result = sqlite_target.run("apply", path, "--tenant", "acme", *args)
        assert result.exit_code == 1, plain(result)
        output = plain(result)
        assert f"error: invalid manifest {path}:" in output
        for fragment in expected:
            assert fragment in output, output
        assert "Traceback" not in output
    assert set(stored(sqlite_target)) == {"acme/kept"}


def test_a_missing_file(sqlite_target: Target, tmp_path: Path) -> None:
    result = sqlite_target.run("apply", str(tmp_path / "nope.yaml"), "--tenant", "acme")
    assert result.exit_code == 1
    assert "error: cannot read" in plain(result)
    assert "No such file" in plain(result)


def test_parse_manifest_without_the_cli() -> None:
    parsed = parse_manifest(yaml.safe_dump(base()))
    assert parsed.tenant == "acme"
    assert [spec.name for spec in parsed.collections] == [
        "work_orders",
        "inspections",
        "voice_data",
    ]
    assert parsed.collections[1].id_field == "id"
    assert parsed.collections[2].schema_ == VOICE_DATA["schema"]
    with pytest.raises(ManifestError) as caught:
        parse_manifest("collections:\n  - name: a\n    read: x\n  - {}\n", "app.yaml")
    assert caught.value.source == "app.yaml"
    assert len(caught.value.problems) == 2
