"""The error shape is part of the API: these tests lock it."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path

from homeport.kit.errors import ErrorCode
from homeport.kit.problems import ProblemResponse
from tests.conftest import Harness, make_settings, start_harness, stop_harness

PROBLEM_KEYS = {"type", "title", "status", "detail", "code", "trace_id"}


def test_catalogue_holds_the_design_codes() -> None:
    names = {code.name for code in ErrorCode}
    required = {f"SYNC_00{i}" for i in range(1, 7)} | {
        "UPLOAD_001",
        "UPLOAD_002",
        "UPLOAD_003",
        "AUTH_001",
        "AUTH_002",
        "RATE_001",
        "NOT_FOUND",
    }
    assert required <= names
    assert ErrorCode.SYNC_006.status == 410
    assert ErrorCode.RATE_001.status == 429
    assert ErrorCode.UPLOAD_002.status == 422
    assert all(400 <= code.status < 600 for code in ErrorCode)


async def test_not_found_route_is_problem_json(harness: Harness) -> None:
    response = await harness.client.get(
        "/api/v1/nothing-here", headers={"X-Request-ID": "req-12345678"}
    )
    assert response.status_code == 404
    assert response.headers["content-type"] == "application/problem+json"
    body = response.json()
    assert body.keys() >= PROBLEM_KEYS
    assert body == {
        "type": "https://homeport.dev/problems/not-found",
        "title": "Not found",
        "status": 404,
        "detail": "Not Found",
        "code": "NOT_FOUND",
        "trace_id": "req-12345678",
        "instance": "/api/v1/nothing-here",
    }
    assert response.headers["X-Trace-Id"] == "req-12345678"


async def test_unsafe_request_id_is_replaced(harness: Harness) -> None:
    response = await harness.client.get("/api/v1/nothing", headers={"X-Request-ID": "<script>"})
    assert response.json()["trace_id"] != "<script>"
    assert response.headers["X-Trace-Id"] == response.json()["trace_id"]


async def test_method_not_allowed(harness: Harness) -> None:
    response = await harness.client.put("/api/v1/auth/login", json={})
    assert response.status_code == 405
    assert response.json()["code"] == "METHOD_NOT_ALLOWED"


async def test_validation_errors_list_every_field(harness: Harness) -> None:
    response = await harness.client.post("/api/v1/auth/login", json={"email": 5})
    body = response.json()
    assert response.status_code == 422
    assert body["code"] == "VALIDATION_001"
    assert {error["field"] for error in body["errors"]} == {"email", "password", "device_id"}
    assert all(error["message"] for error in body["errors"])


async def test_malformed_json_is_a_validation_problem(harness: Harness) -> None:
    response = await harness.client.post(
        "/api/v1/auth/login", content=b"{not json", headers={"Content-Type": "application/json"}
    )
    assert response.status_code == 422
    assert response.json()["code"] == "VALIDATION_001"


async def test_oversized_body_is_413(database_url: str, tmp_path: Path) -> None:
    settings = make_settings(database_url, tmp_path / "d", max_request_body_bytes=1024)
    running, lifespan = await start_harness(settings)

    async def chunked() -> AsyncIterator[bytes]:
        yield b'{"email": "'
        for _ in range(8):
            yield b"a" * 512
        yield b'"}'

    try:
        declared = await running.client.post(
            "/api/v1/auth/login",
            content=b'{"email": "' + b"a" * 4096 + b'"}',
            headers={"Content-Type": "application/json"},
        )
        # No length given: the limit trips while the body parser reads; still a 413.
        streamed = await running.client.post(
            "/api/v1/auth/login", content=chunked(), headers={"Content-Type": "application/json"}
        )
    finally:
        await stop_harness(running, lifespan)
    assert "content-length" not in streamed.request.headers
    for response in (declared, streamed):
        assert response.status_code == 413
        assert response.json()["code"] == "PAYLOAD_TOO_LARGE"
        assert response.headers["content-type"] == "application/problem+json"


async def test_unexpected_errors_leak_nothing(database_url: str, tmp_path: Path) -> None:
    settings = make_settings(database_url, tmp_path / "d")
    running, lifespan = await start_harness(settings)

    async def boom() -> None:
        raise RuntimeError("SELECT secret FROM users -- internal detail")

    running.app.add_api_route("/boom", boom)
    try:
        response = await running.client.get("/boom")
    finally:
        await stop_harness(running, lifespan)
    assert response.status_code == 500
    body = response.json()
    assert body["code"] == "INTERNAL"
    assert "SELECT" not in response.text
    assert "Traceback" not in response.text
    assert "RuntimeError" not in response.text
    assert body["trace_id"] == response.headers["X-Trace-Id"]


def test_a_problem_naming_a_lone_surrogate_is_still_sent() -> None:
    # A detail may repeat the request's text; a lone surrogate there has no UTF-8.
    response = ProblemResponse({"detail": "unknown scope '\ud800'"}, status_code=422)
    assert json.loads(response.body) == {"detail": "unknown scope '\ud800'"}
    assert b"\\ud800" in response.body
