"""Compression (brotli when asked, else gzip; never a range or an encoded answer), Vary,
Cache-Control and the API-Version header."""

from __future__ import annotations

import gzip
from collections.abc import AsyncIterator

import brotli
import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response, StreamingResponse
from starlette.routing import Route

from homeport.kit.compression import CompressionMiddleware, choose_encoding
from tests.records.conftest import ORDERS, Rest


async def _big_page(rest: Rest) -> None:
    await rest.client.post(
        f"{ORDERS}:batch",
        json={
            "operations": [
                {"op": "create", "data": {"title": f"order number {i}", "status": "open"}}
                for i in range(100)
            ]
        },
        headers=rest.owner.headers,
    )


async def test_brotli_when_asked_else_gzip_else_identity(rest: Rest) -> None:
    await _big_page(rest)
    plain = await rest.client.get(
        ORDERS,
        params={"limit": "100"},
        headers={**rest.owner.headers, "Accept-Encoding": "identity"},
    )
    assert "content-encoding" not in plain.headers
    assert "accept-encoding" in plain.headers["vary"].lower()
    assert plain.headers["cache-control"] == "private, no-cache"
    assert plain.headers["api-version"] == "1"
    raw = plain.content
    for asked, used, decode in (
        ("gzip, deflate, br", "br", brotli.decompress),
        ("br;q=0, gzip", "gzip", gzip.decompress),
        ("gzip", "gzip", gzip.decompress),
        ("*", "br", brotli.decompress),
    ):
        # Stream so the client does not decode: the bytes on the wire are checked.
        request = rest.client.build_request(
            "GET",
            ORDERS,
            params={"limit": "100"},
            headers={**rest.owner.headers, "Accept-Encoding": asked},
        )
        answer = await rest.client.send(request, stream=True)
        wire = b"".join([chunk async for chunk in answer.aiter_raw()])
        await answer.aclose()
        assert answer.headers["content-encoding"] == used, asked
        assert int(answer.headers["content-length"]) == len(wire)
        assert len(wire) < len(raw) / 3
        assert decode(wire) == raw
        assert "accept-encoding" in answer.headers["vary"].lower()


async def test_small_answers_and_errors_carry_version_and_vary(rest: Rest) -> None:
    missing = await rest.client.get(
        f"{ORDERS}/nope", headers={**rest.owner.headers, "Accept-Encoding": "br"}
    )
    assert missing.status_code == 404
    assert missing.headers["api-version"] == "1"
    assert "content-encoding" not in missing.headers  # under the minimum size
    assert "accept-encoding" in missing.headers["vary"].lower()
    unauthenticated = await rest.client.get(ORDERS)
    assert unauthenticated.headers["api-version"] == "1"
    assert "api-version" not in (await rest.client.get("/health/live")).headers


def _app() -> Starlette:
    body = "x" * 5000

    async def text(_request: Request) -> Response:
        return PlainTextResponse(body)

    async def ranged(_request: Request) -> Response:
        return Response(
            body.encode()[:100],
            status_code=206,
            media_type="application/json",
            headers={"Content-Range": "bytes 0-99/5000"},
        )

    async def encoded(_request: Request) -> Response:
        return Response(
            gzip.compress(body.encode()),
            media_type="application/json",
            headers={"Content-Encoding": "gzip"},
        )

    async def binary(_request: Request) -> Response:
        return Response(body.encode(), media_type="image/png")

    async def streamed(_request: Request) -> Response:
        async def parts() -> AsyncIterator[bytes]:
            for _ in range(5):
                yield body.encode()

        return StreamingResponse(parts(), media_type="application/json")

    async def rangeable(_request: Request) -> Response:
        return Response(body.encode(), media_type="text/plain", headers={"Accept-Ranges": "bytes"})

    async def full_range(_request: Request) -> Response:
        return Response(
            body.encode(), media_type="text/plain", headers={"Content-Range": "bytes */5000"}
        )

    routes = [
        Route("/text", text),
        Route("/ranged", ranged),
        Route("/encoded", encoded),
        Route("/binary", binary),
        Route("/streamed", streamed),
        Route("/full-range", full_range),
        Route("/rangeable", rangeable),
    ]
    return Starlette(routes=routes, middleware=[])


@pytest.fixture
async def client() -> AsyncIterator[httpx.AsyncClient]:
    app = CompressionMiddleware(_app(), minimum_size=1024)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as running:
        yield running


async def test_middleware_leaves_ranges_encoded_and_binary_alone(
    client: httpx.AsyncClient,
) -> None:
    headers = {"Accept-Encoding": "br, gzip"}
    text = await client.get("/text", headers=headers)
    assert text.headers["content-encoding"] == "br"
    assert text.text == "x" * 5000
    ranged = await client.get("/ranged", headers=headers)
    assert ranged.status_code == 206
    assert "content-encoding" not in ranged.headers
    assert ranged.content == b"x" * 100
    full_range = await client.get("/full-range", headers=headers)
    assert "content-encoding" not in full_range.headers
    rangeable = await client.get("/rangeable", headers=headers)
    assert "content-encoding" not in rangeable.headers
    assert rangeable.text == "x" * 5000
    encoded = await client.get("/encoded", headers=headers)
    assert encoded.headers["content-encoding"] == "gzip"  # the app's own, not twice
    assert encoded.text == "x" * 5000
    binary = await client.get("/binary", headers=headers)
    assert "content-encoding" not in binary.headers
    assert "vary" not in binary.headers
    streamed = await client.get("/streamed", headers={"Accept-Encoding": "gzip"})
    assert streamed.headers["content-encoding"] == "gzip"
    assert streamed.text == "x" * 25000
    head = await client.head("/text", headers=headers)
    assert "content-encoding" not in head.headers


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        ("", None),
        ("identity", None),
        ("gzip", "gzip"),
        ("br", "br"),
        ("gzip, br", "br"),
        ("br;q=0", None),
        ("br;q=0, *", "gzip"),
        ("*;q=0", None),
        ("gzip;q=bogus, br;q=0.5", "br"),
        ("BR", "br"),
    ],
)
def test_accept_encoding_negotiation(header: str, expected: str | None) -> None:
    assert choose_encoding(header) == expected
