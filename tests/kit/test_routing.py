"""The flat route table: routers' routes join the app's own table, nested routers are refused."""

from __future__ import annotations

import httpx
import pytest
from fastapi import APIRouter, Depends, FastAPI, Header, HTTPException

from homeport.kit.routing import include_flat


def _require_marker(x_marker: str | None = Header(default=None)) -> None:
    if x_marker != "yes":
        raise HTTPException(status_code=400, detail="marker missing")


def _app() -> FastAPI:
    plain = APIRouter(prefix="/plain", tags=["plain"])
    guarded = APIRouter(prefix="/plain", tags=["plain"], dependencies=[Depends(_require_marker)])

    @plain.get("/open")
    async def open_route() -> dict[str, str]:
        return {"route": "open"}

    @guarded.get("/guarded/{item}")
    async def guarded_route(item: int) -> dict[str, int]:
        return {"item": item}

    app = FastAPI()
    include_flat(app, plain, guarded)
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
    assert set(document["paths"]) == {"/plain/open", "/plain/guarded/{item}"}
    assert document["paths"]["/plain/open"]["get"]["tags"] == ["plain"]


def test_a_router_that_includes_routers_is_refused() -> None:
    outer = APIRouter(prefix="/outer")
    inner = APIRouter()

    @inner.get("/x")
    async def x() -> None:
        return None

    outer.include_router(inner)
    with pytest.raises(TypeError):
        include_flat(FastAPI(), outer)
