"""Record validation: every draft's own keywords are enforced, formats are checked, and
patterns run on a linear-time engine (a pattern that makes a backtracking engine take
exponential time is as fast as any other). Through the API on both databases, and the
validator alone for the semantics of each keyword."""

from __future__ import annotations

import time
from typing import Any

import pytest

from homeport.sync.validation import validator_for
from tests.sync.conftest import World, upsert
from tests.sync.test_schema_safety import (
    declare,
    in_memory,
    refused,
    refused_declaration,
    stored_names,
)

# On a backtracking engine (Python's re), "^(a+)+$" against 30 "a" and one "!" takes minutes;
# each further "a" doubles it.
EVIL = "^(a+)+$"
EVIL_VALUE = "a" * 5000 + "!"


def fields(schema: dict[str, Any], document: dict[str, Any]) -> list[str]:
    return [where for where, _ in validator_for(in_memory(schema)).errors(document)]


@pytest.mark.timeout(30)
async def test_a_catastrophic_pattern_rejects_a_hostile_value_at_once(world: World) -> None:
    schema = {
        "type": "object",
        "properties": {"code": {"type": "string", "pattern": EVIL}},
        "patternProperties": {EVIL: {"type": "integer"}},
    }
    created = await declare(world, schema, name="codes")
    assert created.status_code == 201, created.text
    phone = await world.device("tech@acme.example.com")
    started = time.monotonic()
    answer = await phone.push(
        [
            upsert("codes", "c1", {"code": EVIL_VALUE}),
            upsert("codes", "c2", {EVIL_VALUE: 1, "aaaa": "not an integer"}),
            upsert("codes", "c3", {"code": "aaaa", "aaaa": 4}),
        ]
    )
    elapsed = time.monotonic() - started
    body = answer.json()
    assert [r["status"] for r in body["results"]] == ["rejected", "rejected", "applied"]
    assert body["errors"][0]["fields"] == ["code"]
    assert body["errors"][1]["fields"] == ["aaaa"]
    assert elapsed < 10, elapsed  # minutes on a backtracking engine; milliseconds here
    # The REST face checks the same way.
    rest = await world.harness.client.post(
        "/api/v1/collections/codes/records",
        json={"id": "c4", "code": EVIL_VALUE},
        headers=world.owner.headers,
    )
    assert rest.status_code == 422, rest.text
    assert rest.json()["code"] == "VALIDATION_001"


@pytest.mark.parametrize(
    ("schema", "where"),
    [
        pytest.param({"pattern": "(?<=a)b"}, "schema.properties.a.pattern", id="lookbehind"),
        pytest.param({"pattern": "(a)\\1"}, "schema.properties.a.pattern", id="backreference"),
        pytest.param({"pattern": "(?=x)"}, "schema.properties.a.pattern", id="lookahead"),
    ],
)
async def test_a_pattern_the_engine_cannot_run_is_refused_where_it_is(
    world: World, schema: dict[str, Any], where: str
) -> None:
    problem = await refused_declaration(world, {"type": "object", "properties": {"a": schema}})
    assert problem["detail"].startswith(where), problem
    assert "lookaround or backreferences" in problem["detail"]
    keys = {"type": "object", "patternProperties": {"(?<=a)b": {}}}
    problem = refused(await declare(world, keys))
    assert "patternProperties" in problem["detail"], problem
    assert await stored_names(world) == []


@pytest.mark.parametrize("pattern", ["^.{1,500}$", "^\\p{L}{1,200}$", "[a-z]{1,5000}x"])
async def test_a_pattern_too_large_once_compiled_is_refused_with_the_way_out(
    world: World, pattern: str
) -> None:
    # Matching costs the text's length times the compiled pattern's size: the size is bounded.
    schema = {"type": "object", "properties": {"name": {"type": "string", "pattern": pattern}}}
    problem = refused(await declare(world, schema))
    assert problem["detail"].startswith("schema.properties.name.pattern:"), problem
    assert "too large once compiled" in problem["detail"]
    assert "maxLength" in problem["detail"]
    # What it says to do instead is accepted, and checks the same.
    schema["properties"]["name"] = {"type": "string", "pattern": "^\\p{L}+$", "maxLength": 200}
    created = await declare(world, schema)
    assert created.status_code == 201, created.text
    phone = await world.device("tech@acme.example.com")
    answer = await phone.push(
        [
            upsert("probe", "p1", {"name": "Zoë"}),
            upsert("probe", "p2", {"name": "Zoë" * 100}),
            upsert("probe", "p3", {"name": "R2D2"}),
        ]
    )
    assert [r["status"] for r in answer.json()["results"]] == ["applied", "rejected", "rejected"]


async def test_keywords_of_2020_12_are_enforced_on_writes(world: World) -> None:
    schema = {
        "type": "object",
        "properties": {
            "title": {"type": "string"},
            "tags": {"type": "array", "prefixItems": [{"type": "string"}]},
            "due": {"type": "string", "format": "date"},
            "assignee": {"type": "string", "format": "email"},
        },
        "dependentRequired": {"due": ["assignee"]},
        "unevaluatedProperties": False,
        "patternProperties": {"^x_": {}},
    }
    created = await declare(world, schema, name="jobs")
    assert created.status_code == 201, created.text
    phone = await world.device("tech@acme.example.com")
    answer = await phone.push(
        [
            upsert("jobs", "ok", {"title": "a", "x_note": 1, "tags": ["t", 2]}),
            upsert("jobs", "extra", {"title": "a", "surprise": True}),
            upsert("jobs", "dependent", {"title": "a", "due": "2026-12-24"}),
            upsert("jobs", "prefix", {"title": "a", "tags": [1]}),
            upsert("jobs", "date", {"title": "a", "due": "24.12.2026", "assignee": "a@b.example"}),
            upsert("jobs", "email", {"title": "a", "due": "2026-12-24", "assignee": "nobody"}),
        ]
    )
    body = answer.json()
    statuses = {r["id"]: r["status"] for r in body["results"]}
    assert statuses == {
        "ok": "applied",
        "extra": "rejected",
        "dependent": "rejected",
        "prefix": "rejected",
        "date": "rejected",
        "email": "rejected",
    }
    fields_by_message = [error["fields"] for error in body["errors"]]
    assert fields_by_message == [["(record)"], ["assignee"], ["tags.0"], ["due"], ["assignee"]]


@pytest.mark.parametrize(
    ("schema", "valid", "invalid", "where"),
    [
        pytest.param(
            {"properties": {"a": {"type": "string"}}, "unevaluatedProperties": False},
            {"a": "x"},
            {"a": "x", "b": 1},
            ["(record)"],
            id="unevaluatedProperties",
        ),
        pytest.param(
            {"dependentRequired": {"a": ["b"]}}, {"a": 1, "b": 2}, {"a": 1}, ["b"], id="dependent"
        ),
        pytest.param(
            {"properties": {"t": {"contains": {"type": "string"}, "minContains": 2}}},
            {"t": ["a", "b", 3]},
            {"t": ["a", 3]},
            ["t"],
            id="minContains",
        ),
        pytest.param(
            {
                "$defs": {"s": {"type": "string"}},
                "properties": {"a": {"$ref": "#/$defs/s", "maxLength": 2}},
            },
            {"a": "ab"},
            {"a": "abc"},
            ["a"],
            id="ref-beside-keywords",
        ),
        pytest.param(
            {"properties": {"d": {"pattern": "^\\d+$"}}},
            {"d": "123"},
            {"d": "١٢٣"},  # Arabic-Indic digits: \d is 0-9, as in ECMA-262
            ["d"],
            id="digits-are-ascii",
        ),
        pytest.param(
            {"properties": {"d": {"pattern": "^a$"}}},
            {"d": "a"},
            {"d": "a\n"},
            ["d"],
            id="dollar-is-the-end",
        ),
        pytest.param(
            {"properties": {"u": {"format": "uuid"}, "x": {"format": "made-up"}}},
            {"u": "8c5c3c1e-8e0e-4b7e-9a55-4d1ea9f0a1b2", "x": "anything"},
            {"u": "not-a-uuid"},
            ["u"],
            id="formats",
        ),
        pytest.param(
            {"properties": {"owner": {"required": ["id"]}}, "required": ["title"]},
            {"title": "t", "owner": {"id": 1}},
            {"owner": {}},
            ["owner.id", "title"],
            id="required-names-the-field",
        ),
    ],
)
def test_each_keyword_is_checked(
    schema: dict[str, Any], valid: dict[str, Any], invalid: dict[str, Any], where: list[str]
) -> None:
    schema = {"type": "object", **schema}
    assert fields(schema, valid) == []
    assert fields(schema, invalid) == where


def test_draft_07_keeps_its_own_ref_semantics() -> None:
    # Before 2019-09, "$ref" replaces the keywords beside it.
    schema = {
        "$schema": "http://json-schema.org/draft-07/schema#",
        "type": "object",
        "definitions": {"s": {"type": "string"}},
        "properties": {"a": {"$ref": "#/definitions/s", "maxLength": 2}},
    }
    assert fields(schema, {"a": "long"}) == []
    assert fields(schema, {"a": 1}) == ["a"]
    draft_04 = {
        "$schema": "http://json-schema.org/draft-04/schema#",
        "type": "object",
        "properties": {"n": {"type": "number", "maximum": 3, "exclusiveMaximum": True}},
    }
    assert fields(draft_04, {"n": 2.5}) == []
    assert fields(draft_04, {"n": 3}) == ["n"]


def _doubling() -> dict[str, Any]:
    # Each level of "c" applies the whole schema twice: 2^depth checks for a record depth deep.
    return {
        "type": "object",
        "properties": {
            "c": {"allOf": [{"$ref": "#"}, {"$ref": "#"}]},
            "s": {"type": "string", "maxLength": 1},
        },
    }


def _chain(length: int) -> dict[str, Any]:
    definitions: dict[str, Any] = {
        f"d{i}": {"allOf": [{"$ref": f"#/$defs/d{i + 1}"}]} for i in range(length)
    }
    definitions[f"d{length}"] = {"type": "string"}
    return {"type": "object", "$defs": definitions, "properties": {"x": {"$ref": "#/$defs/d0"}}}


COSTLY = [
    pytest.param(_doubling(), "more than 256 subschemas", id="doubling-per-level"),
    pytest.param(_chain(300), "more than 256 subschemas", id="long-chain"),
    pytest.param(
        {
            "type": "object",
            "properties": {"t": {"allOf": [{"pattern": f"a{i}"} for i in range(17)]}},
        },
        "more than 16 patterns",
        id="patterns-on-one-field",
    ),
    pytest.param(
        {
            "type": "object",
            "allOf": [{"properties": {"t": {"pattern": f"a{i}"}}} for i in range(17)],
        },
        "more than 16 patterns",
        id="patterns-through-allOf",
    ),
    pytest.param(
        {"type": "object", "patternProperties": {f"^a{i}": {} for i in range(17)}},
        "more than 16 patterns",
        id="patterns-on-names",
    ),
]


@pytest.mark.parametrize(("schema", "reason"), COSTLY)
async def test_a_schema_whose_checks_could_explode_is_refused(
    world: World, schema: dict[str, Any], reason: str
) -> None:
    problem = await refused_declaration(world, schema)
    assert reason in problem["detail"], problem


@pytest.mark.timeout(60)
@pytest.mark.parametrize(("schema", "reason"), COSTLY)
def test_a_stored_schema_whose_checks_could_explode_rejects_writes_at_once(
    schema: dict[str, Any], reason: str
) -> None:
    record: dict[str, Any] = {"s": "xx", "t": "x", "x": "x"}
    for _ in range(40):  # 2^40 checks under the doubling schema
        record = {"c": record}
    [(where, message)] = validator_for(in_memory(schema)).errors(record)
    assert where == "(record)"
    assert "collection schema cannot be used" in message
    assert reason in message


@pytest.mark.parametrize(
    "schema",
    [
        pytest.param(
            {
                "type": "object",
                "properties": {
                    "title": {"type": "string", "pattern": "^\\S"},
                    "children": {"type": "array", "items": {"$ref": "#"}},
                },
            },
            id="tree",
        ),
        pytest.param(
            {
                "type": "object",
                "$defs": {
                    "address": {
                        "type": "object",
                        "properties": {f"line{i}": {"type": "string"} for i in range(20)},
                    }
                },
                "properties": {f"site{i}": {"$ref": "#/$defs/address"} for i in range(300)},
            },
            id="one-definition-used-300-times",
        ),
        pytest.param(
            {
                "type": "object",
                "properties": {
                    f"code{i}": {"type": "string", "pattern": "^[A-Z]{3}$"} for i in range(500)
                },
            },
            id="a-pattern-on-each-of-500-fields",
        ),
        pytest.param(
            {"type": "object", "allOf": [{"$ref": "#/$defs/a"}] * 16, "$defs": {"a": {}}},
            id="sixteen-applications",
        ),
    ],
)
async def test_ordinary_large_schemas_are_within_the_bounds(
    world: World, schema: dict[str, Any]
) -> None:
    created = await declare(world, schema)
    assert created.status_code == 201, created.text
