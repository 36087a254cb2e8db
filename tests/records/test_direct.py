"""The direct routes of the single-record writes answer exactly as FastAPI does.

The same requests go to two apps on one database: the app as it runs (direct routes on) on
collection ``ordersa`` and an app without them on ``ordersb`` (same schema and rules). Every
answer must be the same, status, headers and body, once what differs by nature is set aside
(trace ids, times, the collection's name, a generated id)."""

from __future__ import annotations

import json
import re
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from starlette.routing import Router

from homeport.app import create_app
from homeport.config import Settings
from homeport.kit.direct import DirectRoute, check_direct_routes
from homeport.records.direct import DIRECT_ROUTES
from homeport.records.endpoints import create_record
from tests.conftest import Harness, client_without_direct_routes
from tests.records.conftest import ORDERS, ORDERS_SCHEMA, Rest

_TIME = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?(Z|[+-]\d\d:\d\d)?")
_VOLATILE_HEADERS = {"x-trace-id", "date"}
# Each app counts its own requests against the rate limit.
_REMAINING = re.compile(r"r=\d+;t=\d+")


@pytest.fixture
async def plain_client(rest: Rest) -> AsyncIterator[httpx.AsyncClient]:
    """A second app on the harness's database and secrets, without direct routes."""
    async with client_without_direct_routes(rest.harness.settings) as client:
        yield client


def _requests(
    owner: dict[str, str], member: dict[str, str], api_key: dict[str, str]
) -> list[tuple[str, str, dict[str, str], bytes | None]]:
    """(method, path under the collection's records, headers, body) in order; ``{c}`` is the
    collection."""
    json_type = {"Content-Type": "application/json"}
    patch_type = {"Content-Type": "application/merge-patch+json"}

    def body(document: Any) -> bytes:
        return json.dumps(document).encode()

    def as_owner(extra: dict[str, str] | None = None) -> dict[str, str]:
        return {**owner, **json_type, **(extra or {})}

    return [
        ("POST", "", as_owner(), body({"id": "r1", "title": "first", "tags": ["a"]})),
        ("POST", "", as_owner(), body({"id": "r1", "title": "again"})),  # 409
        ("POST", "", as_owner(), body({"id": "r2", "title": 5})),  # schema: 422
        ("POST", "", as_owner(), body({"id": "r3"})),  # required field missing
        ("POST", "", as_owner(), body([{"title": "a list"}])),
        ("POST", "", as_owner(), body("text")),
        ("POST", "", as_owner(), b'{"title": "cut'),
        ("POST", "", as_owner(), b""),
        ("POST", "", {**owner, "Content-Type": "text/plain"}, body({"title": "plain"})),
        ("POST", "", owner, body({"title": "no type"})),
        (
            "POST",
            "",
            as_owner({"Content-Type": "application/json; charset=utf-8"}),
            body({"id": "r4", "title": "charset"}),
        ),
        ("POST", "", {**owner, **patch_type}, body({"id": "r5", "title": "merge type"})),
        (
            "POST",
            "",
            {**owner, "Content-Type": "application/vnd.x+json"},
            body({"id": "r6", "title": "vendor json"}),
        ),
        ("POST", "", json_type, body({"title": "nobody"})),  # 401
        ("POST", "", {"Authorization": "Bearer not-a-token", **json_type}, body({"title": "x"})),
        ("POST", "", {"Authorization": "Basic dXNlcjpwdw==", **json_type}, body({"title": "x"})),
        ("POST", "", {**member, **json_type}, body({"id": "m1", "title": "by a member"})),
        ("POST", "", {**api_key, **json_type}, body({"id": "k1", "title": "by a key"})),
        ("POST", "", {"X-API-Key": "hp_made_up", **json_type}, body({"title": "x"})),
        ("POST", "", as_owner(), body({"id": "a/b?c#d%e é", "title": "odd id"})),
        ("POST", "", as_owner(), body({"id": "x" * 300, "title": "long id"})),
        ("POST", "", as_owner(), body({"id": "r7", "title": "deep", "ref": [[[[[[1]]]]]]})),
        ("POST", "", as_owner(), body({"id": "r8", "title": "big", "ref": 2**60})),
        ("POST", "", as_owner(), body({"id": "r9", "title": "float", "amount": 1e21})),
        ("POST", "/../../../collections", as_owner(), body({"title": "x"})),
        ("PUT", "/r1", as_owner(), body({"title": "replaced", "status": "open"})),
        ("PUT", "/r1", as_owner({"If-Match": '"2"'}), body({"title": "at version 2"})),
        ("PUT", "/r1", as_owner({"If-Match": '"1"'}), body({"title": "stale"})),  # 412
        ("PUT", "/r1", as_owner({"If-Match": "*"}), body({"title": "any version"})),
        ("PUT", "/r1", as_owner({"If-Match": "garbage"}), body({"title": "bad header"})),
        ("PUT", "/missing", as_owner({"If-Match": "*"}), body({"title": "x"})),
        ("PUT", "/missing", as_owner(), body({"title": "put creates?"})),
        ("PUT", "/r1", as_owner(), body(["not", "an", "object"])),
        ("PUT", "/a%2Fb%3Fc%23d%25e%20%C3%A9", as_owner(), body({"title": "odd id again"})),
        ("PUT", "/" + "y" * 300, as_owner(), body({"title": "long"})),
        ("PATCH", "/r1", {**owner, **patch_type}, body({"status": None, "paid": True})),
        ("PATCH", "/r1", as_owner(), body({"tags": ["b", "c"]})),
        ("PATCH", "/r1", {**owner, **patch_type, "If-Match": '"1"'}, body({"title": "stale"})),
        ("PATCH", "/r1", {**owner, **patch_type}, body({"title": None})),  # required: 422
        ("PATCH", "/r1", {**owner, **patch_type}, b"[1, 2"),
        ("PATCH", "/nope", {**owner, **patch_type}, body({"title": "x"})),
        ("PATCH", "/r1", {**member, **patch_type}, body({"status": "member"})),
        ("DELETE", "/r1", {**owner, "If-Match": '"1"'}, None),  # 412
        ("DELETE", "/r4", owner, b"ignored body"),
        ("DELETE", "/r4", owner, None),  # already deleted
        ("DELETE", "/nope", owner, None),
        ("DELETE", "/r1", {}, None),  # 401
        ("DELETE", "/m1", member, None),
        ("DELETE", "/" + "z" * 300, owner, None),
        ("GET", "/r1", owner, None),
        ("GET", "?limit=1000", {**owner, "Accept-Encoding": "identity"}, None),
    ]


def _normal(answer: httpx.Response, collection: str) -> tuple[int, list[tuple[str, str]], Any]:
    trace_id = answer.headers.get("x-trace-id", "")
    headers = sorted(
        (name, _REMAINING.sub("<left>", value.replace(collection, "<c>")))
        for name, value in answer.headers.items()
        if name not in _VOLATILE_HEADERS
    )
    text = answer.text.replace(collection, "<c>")
    if trace_id:
        text = text.replace(trace_id, "<trace>")
    return answer.status_code, headers, _TIME.sub("<time>", text)


async def test_direct_routes_answer_as_fastapi(
    rest: Rest, harness: Harness, plain_client: httpx.AsyncClient
) -> None:
    member = await rest.world.device("member@acme.example.com", "member")
    for name in ("ordersa", "ordersb"):
        await rest.world.collection(name, schema=ORDERS_SCHEMA, read="tenant", write="owner")
    api_key = await rest.api_key("collections:write", "collections:read")
    requests = _requests(rest.owner.headers, member.headers, api_key)
    statuses = set()
    for method, path, headers, content in requests:
        answers = []
        for client, collection in ((harness.client, "ordersa"), (plain_client, "ordersb")):
            answer = await client.request(
                method,
                f"/api/v1/collections/{collection}/records{path}",
                headers=headers,
                content=content,
            )
            answers.append(_normal(answer, collection))
        assert answers[0] == answers[1], (method, path, content)
        statuses.add(answers[0][0])
    # The requests reached every kind of answer the writes have.
    assert {200, 201, 204, 401, 403, 404, 409, 412, 422} <= statuses, statuses


async def test_writes_take_the_direct_routes(
    rest: Rest, harness: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    """What the comparison above relies on: with direct routes, FastAPI's router does not
    see a well-formed write, and still sees what the direct routes decline."""
    routed: list[tuple[str, str]] = []
    router_call = Router.__call__

    async def counted(router: Router, scope: Any, receive: Any, send: Any) -> None:
        routed.append((scope["method"], scope["path"]))
        await router_call(router, scope, receive, send)

    monkeypatch.setattr(Router, "__call__", counted)
    headers = rest.owner.headers
    created = await rest.client.post(ORDERS, json={"id": "d1", "title": "x"}, headers=headers)
    replaced = await rest.client.put(f"{ORDERS}/d1", json={"title": "y"}, headers=headers)
    patched = await rest.client.patch(f"{ORDERS}/d1", json={"status": "z"}, headers=headers)
    deleted = await rest.client.delete(f"{ORDERS}/d1", headers=headers)
    assert [created.status_code, replaced.status_code, patched.status_code] == [201, 200, 200]
    assert deleted.status_code == 204
    assert routed == []
    declined = await rest.client.post(ORDERS, json=["a list"], headers=headers)
    assert declined.status_code == 422
    assert routed == [("POST", ORDERS)]


def test_direct_routes_must_name_a_route_not_shadowed(settings: Settings) -> None:
    app = create_app(settings, direct_routes=False)
    check_direct_routes(app.router.routes, DIRECT_ROUTES)

    async def nowhere() -> None:
        return None

    wrong = DirectRoute(
        "POST", "/api/v1/collections/{collection}/records", nowhere, DIRECT_ROUTES[0].handler
    )
    with pytest.raises(ValueError, match="no such route"):
        check_direct_routes(app.router.routes, [wrong])
    # A route taking the same requests, added before: the direct route would steal them.
    shadow = create_app(settings, direct_routes=False)
    shadow.router.add_api_route("/api/v1/collections/{name}/records", nowhere, methods=["POST"])
    shadow.router.routes.insert(0, shadow.router.routes.pop())
    with pytest.raises(ValueError, match="first"):
        check_direct_routes(shadow.router.routes, DIRECT_ROUTES[:1])
    assert DIRECT_ROUTES[0].endpoint is create_record
