"""A NUL character in the path or a query parameter is a 400 naming it, on both databases.

PostgreSQL refuses text holding a NUL: before the guard, a record, upload, tus or file id
with ``%00`` was a 500 there (and the connection dropped), where SQLite answered a 404."""

from __future__ import annotations

import pytest

from tests.conftest import Harness

PATHS = [
    "/api/v1/collections/orders/records/r1%00",
    "/api/v1/uploads/%00/status",
    "/api/v1/tus/%00",
    "/api/v1/files/a%00b",
    "/api/v1/collections/or%00ders/records",
]


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("method", ["GET", "HEAD", "PATCH", "DELETE"])
async def test_a_nul_in_the_path_is_a_400_naming_the_path(
    harness: Harness, path: str, method: str
) -> None:
    headers = {
        **await harness.owner_headers(await harness.create_tenant("acme")),
        "Tus-Resumable": "1.0.0",
    }
    answer = await harness.client.request(method, path, headers=headers)
    assert answer.status_code == 400, answer.text
    if method != "HEAD":
        body = answer.json()
        assert (body["code"], body["parameter"]) == ("VALIDATION_004", "path")
        assert "\x00" not in body["instance"]
    assert answer.headers["content-type"].startswith("application/problem+json")
    assert answer.headers["API-Version"] == "1"


@pytest.mark.parametrize(
    ("query", "parameter"),
    [
        ("q=pump%00", "q"),
        ("limit=10&filter%5Bstatus%5D=open%00", "filter[status]"),
        ("cursor=%00", "cursor"),
        ("fields=id&%00=1", "query"),
    ],
)
async def test_a_nul_in_a_query_parameter_is_a_400_naming_it(
    harness: Harness, query: str, parameter: str
) -> None:
    headers = await harness.owner_headers(await harness.create_tenant("acme"))
    for path in ("/api/v1/collections/orders/records", "/api/v1/search"):
        answer = await harness.client.get(f"{path}?{query}", headers=headers)
        assert answer.status_code == 400, answer.text
        assert (answer.json()["code"], answer.json()["parameter"]) == ("VALIDATION_004", parameter)


async def test_requests_without_a_nul_pass_untouched(harness: Harness) -> None:
    headers = await harness.owner_headers(await harness.create_tenant("acme"))
    # %2500 is a literal "%00" in the value, not a NUL.
    answer = await harness.client.get("/api/v1/collections/orders/records?q=%2500", headers=headers)
    assert answer.status_code == 404, answer.text
    assert answer.json()["code"] == "NOT_FOUND"
