"""Forwarded headers count only when the TCP peer is a trusted proxy."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from homeport.kit.http import ForwardedHeadersMiddleware
from tests.conftest import make_settings, running_harness
from tests.kit.test_ratelimit import client_from
from tests.uploads.test_tus_protocol import tus_for

FORWARDED = {
    "X-Forwarded-Proto": "https",
    "X-Forwarded-Host": "files.example.com",
    "X-Forwarded-Prefix": "/homeport",
}


@pytest.mark.parametrize(("peer", "believed"), [("10.0.0.1", True), ("198.51.100.9", False)])
async def test_links_follow_forwarded_headers_only_from_a_trusted_peer(
    database_url: str, tmp_path: Path, peer: str, believed: bool
) -> None:
    settings = make_settings(database_url, tmp_path / "data", trusted_proxies=["10.0.0.0/8"])
    async with running_harness(settings) as harness:
        tus = await tus_for(harness)
        client = client_from(harness, peer)
        try:
            created = await client.post(
                "/api/v1/tus/",
                headers={
                    **tus.headers,
                    **FORWARDED,
                    "Tus-Resumable": "1.0.0",
                    "Upload-Length": "10",
                },
            )
        finally:
            await client.aclose()
    assert created.status_code == 201, created.text
    expected = "https://files.example.com/homeport" if believed else "http://homeport.test"
    assert created.headers["Location"].startswith(f"{expected}/api/v1/tus/")


async def _scope_after(middleware_trusts: list[str], scope: dict[str, Any]) -> dict[str, Any]:
    seen: dict[str, Any] = {}

    async def app(inner: dict[str, Any], receive: Any, send: Any) -> None:
        seen.update(inner)

    await ForwardedHeadersMiddleware(app, trusted=middleware_trusts)(scope, None, None)  # type: ignore[arg-type]
    return seen


async def test_client_address_and_scheme_come_from_the_trusted_proxy_only() -> None:
    headers = [
        (b"x-forwarded-for", b"203.0.113.7, 10.0.0.2"),
        (b"x-forwarded-proto", b"https"),
    ]
    behind = await _scope_after(
        ["10.0.0.0/8"],
        {"type": "http", "client": ("10.0.0.1", 1), "scheme": "http", "headers": headers},
    )
    # The last hop that is not one of our proxies is the client.
    assert behind["client"] == ("203.0.113.7", 0)
    assert behind["scheme"] == "https"
    direct = await _scope_after(
        ["10.0.0.0/8"],
        {"type": "http", "client": ("192.0.2.1", 1), "scheme": "http", "headers": headers},
    )
    assert direct["client"] == ("192.0.2.1", 1)
    assert direct["scheme"] == "http"
    assert "state" not in direct
