"""Hostile collection schemas: references that would fetch or read something, numbers and text
that cannot be stored, schemas that refer to themselves without end, and the messages they get.
On both databases; every probe of the network uses a real listener on 127.0.0.1."""

from __future__ import annotations

import json
import socket
import threading
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from homeport.kit.clock import utcnow
from homeport.kit.db import Database
from homeport.models.sync import Collection
from homeport.sync.repository import SyncRepository
from homeport.sync.validation import validator_for
from tests.conftest import make_settings
from tests.realtime.conftest import receive, running_live, send
from tests.sync.conftest import World, upsert

# References that leave the schema, by every kind of address ({port}: the test listener).
OUTSIDE_REFS = [
    "http://127.0.0.1:{port}/a.json",
    "https://127.0.0.1:{port}/a.json",
    "ftp://127.0.0.1:{port}/a.json",
    "file:///etc/hostname",
    "a.json",
]

URL = "/api/v1/collections"
ONLY_LOCAL = "only references within the schema (#...) are allowed"
ENDLESS = "refers to itself without end"


class Listener:
    """A TCP listener on 127.0.0.1 that counts connections. It answers every one with a small
    JSON Schema over HTTP, so that code which does fetch gets an answer instead of hanging."""

    def __init__(self) -> None:
        self.socket = socket.socket()
        self.socket.bind(("127.0.0.1", 0))
        self.socket.listen(16)
        self.socket.settimeout(0.05)
        self.port: int = self.socket.getsockname()[1]
        self.connections = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)

    def url(self, path: str = "x.json", scheme: str = "http") -> str:
        return f"{scheme}://127.0.0.1:{self.port}/{path}"

    def _serve(self) -> None:
        body = b'{"type": "object"}'
        answer = (
            b"HTTP/1.0 200 OK\r\nContent-Type: application/json\r\n"
            + f"Content-Length: {len(body)}\r\n\r\n".encode()
            + body
        )
        while not self._stop.is_set():
            try:
                connection, _ = self.socket.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            self.connections += 1
            with connection:
                connection.settimeout(1)
                try:
                    connection.recv(65536)
                    connection.sendall(answer)
                except OSError:
                    pass

    def __enter__(self) -> Listener:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        self.socket.close()


@pytest.fixture
def listener() -> Iterator[Listener]:
    with Listener() as running:
        yield running


@pytest.fixture
def opened(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Every URL given to ``urllib.request.urlopen`` (both validators fetch through it)."""
    calls: list[str] = []
    original = urllib.request.urlopen

    def recording(url: Any, *args: Any, **kwargs: Any) -> Any:
        calls.append(url if isinstance(url, str) else url.full_url)
        return original(url, *args, **kwargs)

    monkeypatch.setattr(urllib.request, "urlopen", recording)
    return calls


async def declare(world: World, schema: Any, name: str = "probe") -> Any:
    body = {"name": name, "schema": schema, "read": "tenant", "write": "tenant"}
    return await world.harness.client.post(URL, json=body, headers=world.owner.headers)


async def declare_raw(world: World, raw_schema: str, name: str = "probe") -> Any:
    """Declares with a schema written as JSON text (NaN, Infinity, escapes as sent)."""
    text = f'{{"name": "{name}", "read": "tenant", "write": "tenant", "schema": {raw_schema}}}'
    headers = {**world.owner.headers, "Content-Type": "application/json"}
    return await world.harness.client.post(URL, content=text.encode(), headers=headers)


def refused(answer: Any) -> dict[str, Any]:
    """The 422 VALIDATION_001 problem; its detail is plain, valid text."""
    assert answer.status_code == 422, answer.text
    problem: dict[str, Any] = answer.json()
    assert problem["code"] == "VALIDATION_001"
    assert problem["errors"]
    assert problem["errors"][0]["field"].startswith("schema")
    return problem


async def stored_names(world: World) -> list[str]:
    listed = await world.harness.client.get(URL, headers=world.owner.headers)
    return [c["name"] for c in listed.json()["collections"]]


async def refused_declaration(world: World, schema: Any) -> dict[str, Any]:
    """The problem of a declaration of ``schema`` that is refused, having declared nothing."""
    problem = refused(await declare(world, schema))
    assert await stored_names(world) == []
    return problem


async def store_schema(database: Database, tenant_id: str, name: str, schema: Any) -> None:
    """Puts ``schema`` on an existing collection straight in the database, as a schema stored
    before the declaration checks existed would be."""
    async with database.transaction() as session:
        collection = await SyncRepository(session).get_collection(tenant_id, name)
        assert collection is not None
        collection.json_schema = schema
        collection.schema_version += 1


def in_memory(schema: dict[str, Any]) -> Collection:
    now = utcnow()
    return Collection(
        id=uuid.uuid4().hex,
        tenant_id="t",
        name="probe",
        id_field="id",
        json_schema=schema,
        schema_version=1,
        created_at=now,
        updated_at=now,
    )


# 1. References may not leave the schema


def remote_schemas(listener: Listener) -> list[tuple[Any, str]]:
    """(schema, where the refused reference is)."""
    http, https = listener.url(), listener.url(scheme="https")
    return [
        ({"$ref": http}, "schema.$ref"),
        ({"type": "object", "properties": {"a": {"$ref": http}}}, "schema.properties.a.$ref"),
        ({"type": "object", "properties": {"a": {"$ref": https}}}, "schema.properties.a.$ref"),
        ({"type": "object", "allOf": [{"$ref": http}]}, "schema.allOf[0].$ref"),
        ({"type": "object", "items": {"$dynamicRef": http}}, "schema.items.$dynamicRef"),
        (
            {"type": "object", "properties": {"a": {"$recursiveRef": http}}},
            "schema.properties.a.$recursiveRef",
        ),
        (
            {"type": "object", "properties": {"a": {"$ref": "other.json"}}},
            "schema.properties.a.$ref",
        ),
        ({"type": "object", "properties": {"a": {"$ref": 5}}}, "schema.properties.a.$ref"),
        (
            {
                "$id": listener.url("base.json"),
                "type": "object",
                "properties": {"a": {"$ref": "other.json"}},
            },
            "schema.properties.a.$ref",
        ),
        (
            {"type": "object", "$defs": {"a": {"$ref": "ftp://127.0.0.1/x.json"}}},
            "schema.$defs.a.$ref",
        ),
    ]


@pytest.mark.parametrize("case", range(10))
async def test_references_outside_the_schema_are_refused_without_connecting(
    world: World, listener: Listener, case: int
) -> None:
    schema, where = remote_schemas(listener)[case]
    problem = refused(await declare(world, schema))
    assert ONLY_LOCAL in problem["detail"], problem
    assert problem["detail"].startswith(where), problem
    assert problem["errors"][0]["field"].startswith(where)
    assert listener.connections == 0
    assert await stored_names(world) == []


async def test_file_references_are_refused_without_reading(world: World, opened: list[str]) -> None:
    secrets = Path(world.harness.settings.data_dir) / "secrets.json"
    secrets.parent.mkdir(parents=True, exist_ok=True)
    secrets.write_text('{"type": "object"}')
    for target in ("file:///etc/hostname", secrets.as_uri(), f"file://{secrets}"):
        schema = {"type": "object", "properties": {"a": {"$ref": target}}}
        problem = refused(await declare(world, schema))
        assert problem["detail"] == f"schema.properties.a.$ref: {ONLY_LOCAL}", problem
    assert opened == []
    assert await stored_names(world) == []


async def test_a_forced_update_refuses_references_outside_the_schema(
    world: World, listener: Listener
) -> None:
    await world.collection("tasks")
    schema = {"type": "object", "properties": {"a": {"$ref": listener.url()}}}
    answer = await world.harness.client.put(
        f"{URL}/tasks",
        json={"schema": schema, "read": "tenant", "write": "tenant"},
        params={"force": "true"},
        headers=world.owner.headers,
    )
    assert ONLY_LOCAL in refused(answer)["detail"]
    assert listener.connections == 0
    got = await world.harness.client.get(f"{URL}/tasks", headers=world.owner.headers)
    assert got.json()["schema_version"] == 1


async def test_an_id_with_a_scheme_keeps_references_local(world: World, listener: Listener) -> None:
    base = listener.url("")
    schema = {
        "$id": base,
        "$ref": "#/definitions/a",
        "definitions": {"a": {"type": "string"}},
    }
    created = await declare(world, schema)
    assert created.status_code == 201, created.text
    # Stored exactly as sent (compiling must not rewrite the references).
    assert created.json()["collection"]["schema"] == schema
    phone = await world.device("tech@acme.example.com")
    answer = await phone.push([upsert("probe", "p1", {"title": "a record is not a string"})])
    assert answer.status_code == 200, answer.text
    assert answer.json()["results"][0]["status"] == "rejected"

    fields = {
        "$id": listener.url("tasks.json"),
        "type": "object",
        "properties": {"title": {"$ref": "#/$defs/title"}},
        "$defs": {"title": {"type": "string", "maxLength": 5}},
    }
    created = await declare(world, fields, name="titled")
    assert created.status_code == 201, created.text
    assert created.json()["collection"]["schema"] == fields
    answer = await phone.push(
        [upsert("titled", "t1", {"title": "short"}), upsert("titled", "t2", {"title": "too long"})]
    )
    assert [r["status"] for r in answer.json()["results"]] == ["applied", "rejected"]
    assert answer.json()["errors"][0]["fields"] == ["title"]
    assert listener.connections == 0


async def test_a_stored_remote_reference_is_never_fetched_on_write(
    world: World, listener: Listener
) -> None:
    await world.collection("tasks")
    await store_schema(
        world.harness.state.database,
        world.tenant.id,
        "tasks",
        {"type": "object", "properties": {"title": {"$ref": listener.url()}}},
    )
    phone = await world.device("tech@acme.example.com")
    answer = await phone.push([upsert("tasks", "t1", {"title": "A"})])
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert body["results"][0]["status"] == "rejected"
    assert body["errors"][0]["error"] == "VALIDATION_001"
    assert "collection schema cannot be used" in body["errors"][0]["message"]
    assert listener.connections == 0


@pytest.mark.parametrize("ref", [*OUTSIDE_REFS, "//127.0.0.1:{port}/a.json"])
def test_the_validators_never_fetch_even_when_the_checks_are_skipped(
    listener: Listener, opened: list[str], ref: str
) -> None:
    schema = {"type": "object", "properties": {"a": {"$ref": ref.format(port=listener.port)}}}
    validator = validator_for(in_memory(schema))
    [(where, message)] = validator.errors({"a": "x"})
    assert where == "(record)"
    assert "collection schema cannot be used" in message
    assert opened == []
    assert listener.connections == 0


# 2. Numbers and text that cannot be stored


NOT_STORABLE = [
    pytest.param('{"type": "object", "properties": {"a": {"const": NaN}}}', id="nan-const"),
    pytest.param('{"type": "object", "properties": {"a": {"maximum": 1e400}}}', id="1e400"),
    pytest.param('{"type": "object", "properties": {"a": {"minimum": -Infinity}}}', id="-inf"),
    pytest.param('{"type": "object", "properties": {"a": {"enum": [1, Infinity]}}}', id="enum"),
    pytest.param('{"type": "object", "default": {"x": [NaN]}}', id="nested-default"),
    pytest.param('{"type": "object", "description": "a\\u0000b"}', id="nul-value"),
    pytest.param('{"type": "object", "properties": {"a\\u0000": {}}}', id="nul-key"),
    pytest.param('{"type": "object", "description": "\\ud800"}', id="surrogate-value"),
    pytest.param('{"type": "object", "properties": {"\\udfff": {}}}', id="surrogate-key"),
]


@pytest.mark.parametrize("raw", NOT_STORABLE)
async def test_schemas_that_cannot_be_stored_are_refused(world: World, raw: str) -> None:
    problem = refused(await declare_raw(world, raw))
    assert "schema." in problem["detail"]
    assert any(word in problem["detail"] for word in ("not a JSON number", "NUL", "surrogate")), (
        problem
    )
    assert await stored_names(world) == []
    # The same through a forced update of an existing collection.
    await world.collection("tasks")
    text = f'{{"read": "tenant", "write": "tenant", "schema": {raw}}}'
    answer = await world.harness.client.put(
        f"{URL}/tasks",
        content=text.encode(),
        params={"force": "true"},
        headers={**world.owner.headers, "Content-Type": "application/json"},
    )
    refused(answer)
    phone = await world.device("tech@acme.example.com")
    pushed = await phone.push([upsert("tasks", "t1", {"title": "still writable"})])
    assert pushed.json()["results"][0]["status"] == "applied"


def test_a_stored_non_finite_schema_gives_a_clean_error() -> None:
    schema = {"type": "object", "properties": {"a": {"const": float("nan")}}}
    [(where, message)] = validator_for(in_memory(schema)).errors({"a": 1})
    assert where == "(record)"
    assert "collection schema cannot be used" in message


# 3. Schemas that refer to themselves without end


ENDLESS_SCHEMAS = [
    pytest.param({"type": "object", "if": {"$ref": "#"}}, "schema.if.$ref", id="if-root"),
    pytest.param({"type": "object", "allOf": [{"$ref": "#"}]}, "schema.allOf[0].$ref", id="allOf"),
    pytest.param(
        {"type": "object", "properties": {"a": {"$ref": "#/properties/a"}}},
        "schema.properties.a.$ref",
        id="self",
    ),
    pytest.param(
        {
            "type": "object",
            "properties": {"a": {"$ref": "#/$defs/x"}},
            "$defs": {"x": {"not": {"$ref": "#/$defs/y"}}, "y": {"anyOf": [{"$ref": "#/$defs/x"}]}},
        },
        "schema.$defs.y.anyOf[0].$ref",
        id="two-step",
    ),
    pytest.param(
        {
            "type": "object",
            "properties": {"a": {"$ref": "#/$defs/x"}},
            "$defs": {"x": {"$anchor": "x", "then": {"$ref": "#x"}}},
        },
        "schema.$defs.x.then.$ref",
        id="anchor",
    ),
]


@pytest.mark.parametrize(("schema", "where"), ENDLESS_SCHEMAS)
async def test_schemas_that_refer_to_themselves_without_end_are_refused(
    world: World, schema: dict[str, Any], where: str
) -> None:
    problem = await refused_declaration(world, schema)
    assert ENDLESS in problem["detail"], problem
    assert problem["detail"].startswith(where), problem
    assert "recursion" not in problem["detail"]


TREE = {
    "type": "object",
    "properties": {
        "title": {"type": "string"},
        "children": {"type": "array", "items": {"$ref": "#"}},
    },
}


async def test_a_stored_endless_schema_gives_a_per_item_error(world: World) -> None:
    await world.collection("tasks")
    created = await declare(world, TREE, name="tree")  # recursion that descends is fine
    assert created.status_code == 201, created.text
    await store_schema(
        world.harness.state.database,
        world.tenant.id,
        "tasks",
        {"type": "object", "if": {"$ref": "#"}},
    )
    phone = await world.device("tech@acme.example.com")
    deep = {"title": "a", "children": [{"title": "b", "children": [{"title": "c"}]}]}
    bad = {"title": "a", "children": [{"title": "b", "children": [{"title": 3}]}]}
    answer = await phone.push(
        [
            upsert("tasks", "t1", {"title": "A"}),
            upsert("tree", "r1", deep),
            upsert("tree", "r2", bad),
        ]
    )
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert [r["status"] for r in body["results"]] == ["rejected", "applied", "rejected"]
    loop, tree = body["errors"]
    assert (loop["item_id"], loop["error"]) == ("t1", "VALIDATION_001")
    assert ENDLESS in loop["message"]
    assert "recursion" not in loop["message"]
    assert tree["fields"] == ["children.0.children.0.title"]


async def test_a_stored_endless_schema_gives_a_per_item_error_on_the_websocket(
    database_url: str, tmp_path: Path
) -> None:
    settings = make_settings(database_url, tmp_path / "data", realtime_heartbeat_seconds=30)
    async with running_live(settings) as live:
        await live.collection("tasks")
        database = Database(settings.resolved_database_url)
        try:
            await store_schema(
                database, live.tenant_id, "tasks", {"type": "object", "if": {"$ref": "#"}}
            )
        finally:
            await database.dispose()
        device = await live.login(live.owner_email)
        async with live.connect(device) as ws:
            batch = [{"collection": "tasks", "id": "t1", "op": "upsert", "data": {"title": "A"}}]
            await send(ws, "sync", {"idempotency_key": "ws-loop", "changes": batch})
            answer = (await receive(ws, "sync_response"))["payload"]
            assert [r["status"] for r in answer["results"]] == ["rejected"]
            assert answer["errors"][0]["item_id"] == "t1"
            assert ENDLESS in answer["errors"][0]["message"]
            await send(ws, "heartbeat", {})  # the connection is still serving
            await receive(ws, "heartbeat_ack")


# 4. Clear messages


async def test_schema_keyword_must_name_a_draft(world: World) -> None:
    for value in (5, {"a": 1}, ["x"], "https://example.com/my-draft"):
        problem = refused(await declare(world, {"$schema": value, "type": "object"}))
        assert problem["detail"].startswith(
            "schema.$schema: $schema must be a string naming a JSON Schema draft"
        ), problem
        assert "decode" not in problem["detail"]
    problem = refused(await declare(world, {"$schema": "http://json-schema.org/draft-03/schema#"}))
    assert "draft-03 is not supported" in problem["detail"]
    for index, draft in enumerate(
        (
            "http://json-schema.org/draft-04/schema#",
            "http://json-schema.org/draft-07/schema#",
            "https://json-schema.org/draft/2020-12/schema",
        )
    ):
        answer = await declare(world, {"$schema": draft, "type": "object"}, name=f"d{index}")
        assert answer.status_code == 201, answer.text


async def test_a_schema_nested_within_the_limit_is_usable(world: World) -> None:
    # 60 levels of "not" (within MAX_DEPTH): an even count means "a" must be a string.
    created = await declare(world, nested(60))
    assert created.status_code == 201, created.text
    phone = await world.device("tech@acme.example.com")
    answer = await phone.push([upsert("probe", "p1", {"a": "x"}), upsert("probe", "p2", {"a": 1})])
    assert [result["status"] for result in answer.json()["results"]] == ["applied", "rejected"]


def nested(depth: int, keyword: str = "not") -> dict[str, Any]:
    schema: dict[str, Any] = {"type": "string"}
    for _ in range(depth):
        schema = {keyword: schema}
    return {"type": "object", "properties": {"a": schema}}


@pytest.mark.parametrize("depth", [70, 300])
async def test_deeply_nested_schemas_get_a_clear_message(world: World, depth: int) -> None:
    problem = refused(await declare_raw(world, json.dumps(nested(depth))))
    assert "nested too deeply" in problem["detail"], problem
    for internal in ("recursion", "<string>", "statically", "indentation"):
        assert internal not in problem["detail"]


@pytest.mark.parametrize("ref", OUTSIDE_REFS)
def test_the_fetch_guard_refuses_every_uri(listener: Listener, opened: list[str], ref: str) -> None:
    import jsonschema_rs

    from homeport.sync.schema_checks import RemoteReferenceRefused, refuse_retrieval
    from homeport.sync.validation import _compile

    uri = ref.format(port=listener.port)
    with pytest.raises(RemoteReferenceRefused):
        refuse_retrieval(uri)
    # The validator itself, the checks before it skipped: the reference fails to compile.
    with pytest.raises((jsonschema_rs.ValidationError, jsonschema_rs.ReferencingError)) as failed:
        _compile({"type": "object", "properties": {"a": {"$ref": uri}}})
    assert "retrieving it failed" in str(failed.value)
    if ":" in uri:  # a relative one has no base to be resolved against: never asked for
        assert ONLY_LOCAL in str(failed.value)
    assert opened == []
    assert listener.connections == 0


def test_names_and_values_are_not_references(listener: Listener) -> None:
    from homeport.sync.validation import SchemaError, check_schema

    # A property named "$ref" or "id" is a name; a value "#..." in data is a value.
    check_schema({"type": "object", "properties": {"$ref": {"type": "string"}, "id": {}}})
    check_schema({"type": "object", "examples": [{"id": "a1", "title": "x"}]})
    # A "$ref" inside const is data to compare with, never fetched.
    constant = {"$ref": listener.url()}
    schema = {"type": "object", "properties": {"a": {"const": constant}}}
    check_schema(schema)
    validator = validator_for(in_memory(schema))
    assert validator.errors({"a": constant}) == []
    assert [where for where, _ in validator.errors({"a": {"$ref": "#"}})] == ["a"]
    # A reference to nothing, and a subschema $id, are named where they are.
    with pytest.raises(SchemaError) as refusal:
        check_schema({"type": "object", "properties": {"a": {"$ref": "#/$defs/missing"}}})
    assert refusal.value.location == "properties.a.$ref"
    assert "points to nothing" in refusal.value.reason
    # An index written in other digits ("³" passes str.isdigit, int() refuses it) is no index.
    for index in ("³", "1"):
        reference = {"$ref": f"#/allOf/{index}"}
        schema = {"type": "object", "allOf": [{}], "properties": {"a": reference}}
        with pytest.raises(SchemaError) as refusal:
            check_schema(schema)
        assert "points to nothing" in refusal.value.reason
    with pytest.raises(SchemaError) as refusal:
        check_schema({"type": "object", "properties": {"a": {"$id": listener.url()}}})
    assert refusal.value.location == "properties.a.$id"
    assert listener.connections == 0


async def test_a_schema_over_the_size_limit_is_refused_before_compiling(world: World) -> None:
    # Checking and compiling hold the server in proportion to the size: the limit bounds that.
    def properties(count: int) -> dict[str, Any]:
        fields = {f"field_{i:05}": {"type": "string", "maxLength": 200} for i in range(count)}
        return {"type": "object", "properties": fields}

    problem = await refused_declaration(world, properties(5000))
    assert problem["detail"] == "a collection schema is at most 128 KiB of JSON"
    accepted = await declare(world, properties(1000))
    assert accepted.status_code == 201, accepted.text[:300]
