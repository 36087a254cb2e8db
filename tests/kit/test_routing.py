"""The flat route table: routers' routes join the app's own table, nested routers and routes
not made by ``api_router`` are refused, and the literal-prefix check answers as FastAPI does."""

from __future__ import annotations

from collections.abc import Callable

import httpx
import pytest
from fastapi import APIRouter, Depends, FastAPI, Header, HTTPException

from homeport.kit.routing import api_router, include_flat


def _require_marker(x_marker: str | None = Header(default=None)) -> None:
    if x_marker != "yes":
        raise HTTPException(status_code=400, detail="marker missing")


def _routers(make: Callable[..., APIRouter]) -> list[APIRouter]:
    plain = make(prefix="/plain", tags=["plain"])
    guarded = make(prefix="/plain", tags=["plain"], dependencies=[Depends(_require_marker)])
    items = make(prefix="/items/{group}")

    @plain.get("/open")
    async def open_route() -> dict[str, str]:
        return {"route": "open"}

    @guarded.get("/guarded/{item}")
    async def guarded_route(item: int) -> dict[str, int]:
        return {"item": item}

    @items.get("/list")
    async def list_items(group: str) -> dict[str, str]:
        return {"group": group, "route": "list"}

    @items.post("/{item_id:path}")
    async def put_item(group: str, item_id: str) -> dict[str, str]:
        return {"group": group, "item": item_id}

    @items.get("/{item_id:path}")
    async def get_item(group: str, item_id: str) -> dict[str, str]:
        return {"group": group, "item": item_id, "route": "get"}

    return [plain, guarded, items]


def _app() -> FastAPI:
    app = FastAPI()
    include_flat(app, *_routers(api_router))
    return app


async def test_flat_routes_keep_prefix_parameters_and_router_dependencies() -> None:
    app = _app()
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        assert (await client.get("/plain/open")).json() == {"route": "open"}
        assert (await client.get("/plain/guarded/7")).status_code == 400  # router dependency
        answer = await client.get("/plain/guarded/7", headers={"X-Marker": "yes"})
        assert answer.json() == {"item": 7}
        not_a_number = await client.get("/plain/guarded/x", headers={"X-Marker": "yes"})
        assert not_a_number.status_code == 422
        assert (await client.get("/elsewhere")).status_code == 404
    document = app.openapi()
    assert set(document["paths"]) == {
        "/plain/open",
        "/plain/guarded/{item}",
        "/items/{group}/list",
        "/items/{group}/{item_id}",
    }
    assert document["paths"]["/plain/open"]["get"]["tags"] == ["plain"]


PROBES = [
    ("GET", "/plain/open"),
    ("GET", "/plain/open/"),  # redirected to the route without the slash
    ("POST", "/plain/open"),  # 405
    ("GET", "/plain/guarded/3"),
    ("GET", "/plain"),
    ("GET", "/items/a/list"),
    ("POST", "/items/a/list"),  # the path route, not a 405 from the list route
    ("GET", "/items/a/b/c"),
    ("DELETE", "/items/a/b"),
    ("GET", "/items//x"),
    ("GET", "/items"),
    ("GET", "/"),
    ("GET", "/base/plain/open"),
]


@pytest.mark.parametrize("root_path", ["", "/base"])
async def test_every_path_gets_the_answer_fastapis_own_routing_gives(root_path: str) -> None:
    # The root path as a server behind a proxy sets it (the ASGI scope's root_path).
    reference = FastAPI()
    for each in _routers(APIRouter):
        reference.include_router(each)
    flat = _app()
    answers: dict[str, list[tuple[int, str, str]]] = {}
    for name, app in (("reference", reference), ("flat", flat)):
        transport = httpx.ASGITransport(app=app, root_path=root_path)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            answers[name] = []
            for method, path in PROBES:
                answer = await client.request(method, root_path + path)
                answers[name].append(
                    (answer.status_code, answer.headers.get("location", ""), answer.text)
                )
    assert answers["flat"] == answers["reference"]
    # The probes reach every kind of answer: found, redirected, 405, 404.
    assert {status for status, _location, _text in answers["flat"]} >= {200, 307, 404, 405}


def test_a_router_that_includes_routers_is_refused() -> None:
    outer = api_router(prefix="/outer")
    inner = api_router()

    @inner.get("/x")
    async def x() -> None:
        return None

    outer.include_router(inner)
    with pytest.raises(TypeError):
        include_flat(FastAPI(), outer)


def test_a_router_not_made_by_api_router_is_refused() -> None:
    plain = APIRouter()

    @plain.get("/x")
    async def x() -> None:
        return None

    with pytest.raises(TypeError, match="api_router"):
        include_flat(FastAPI(), plain)
