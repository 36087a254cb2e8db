"""Property-based contract test: schemathesis drives every operation of ``/openapi.json``.

The server is real (uvicorn on 127.0.0.1, on the test's database); requests are generated from the
schema, once without credentials and once as a tenant owner. Whatever the input, the server never
answers 5xx, every error is ``application/problem+json`` with the documented fields, and the
operations' successful answers match their documented schema.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import response_schema_conformance

from homeport.config import Settings
from homeport.sync.collections import CollectionService
from homeport.sync.schemas import CollectionSpec
from homeport.tenants.service import TenantService
from tests.conftest import make_settings
from tests.live_server import LiveServer

# tus PATCH bodies: raw bytes.
schemathesis.openapi.media_type("application/offset+octet-stream", st.binary(max_size=64))

EXAMPLES_PER_OPERATION = 40
# Without credentials almost every operation stops at authentication, whatever the input:
# fewer examples reach the same code (path and query parsing, the 401).
ANONYMOUS_EXAMPLES_PER_OPERATION = 15
OWNER_EMAIL = "owner@contract.example.com"
OWNER_PASSWORD = "contract-password-1"
PROBLEM_FIELDS = {"type", "title", "status", "detail", "code", "trace_id"}


async def _seed(settings: Settings) -> None:
    """A tenant with its owner (the authenticated pass logs in as them)."""
    from homeport.kit.db import Database
    from homeport.kit.security import PasswordHashing

    database = Database(settings.resolved_database_url)
    try:
        async with database.transaction() as session:
            tenant, _owner = await TenantService(
                session, PasswordHashing(1, 1024, 1)
            ).create_tenant_with_owner(
                "contract", "Contract", OWNER_EMAIL, OWNER_PASSWORD, platform_admin=True
            )
            # A collection, so generated pushes and pulls reach the sync engine's checks.
            await CollectionService(session, settings.records_max_field_indexes).declare(
                tenant.id,
                CollectionSpec.model_validate(
                    {
                        "name": "tasks",
                        "schema": {
                            "type": "object",
                            "properties": {
                                "title": {"type": "string"},
                                "done": {"type": "boolean"},
                            },
                        },
                        "read": "tenant",
                        "write": "tenant",
                        "conflict_policy": "field_merge",
                    }
                ),
            )
    finally:
        await database.dispose()


@pytest.fixture
def live_server(database_url: str, tmp_path: Path) -> Iterator[LiveServer]:
    settings = make_settings(database_url, tmp_path / "data")
    asyncio.run(_seed(settings))
    with LiveServer(settings) as server:
        yield server


def _owner_headers(base_url: str, device_id: str) -> dict[str, str]:
    answer = httpx.post(
        f"{base_url}/api/v1/auth/login",
        json={"email": OWNER_EMAIL, "password": OWNER_PASSWORD, "device_id": device_id},
    )
    assert answer.status_code == 200, answer.text
    return {"Authorization": f"Bearer {answer.json()['access_token']}"}


def _assert_problem(status: int, headers: dict[str, list[str]], content: bytes, where: str) -> None:
    content_type = (headers.get("content-type") or [""])[0]
    assert content_type.startswith("application/problem+json"), (
        f"{where}: {status} answered with {content_type!r}"
    )
    body: dict[str, Any] = json.loads(content)
    assert body.keys() >= PROBLEM_FIELDS, f"{where}: problem lacks {PROBLEM_FIELDS - body.keys()}"
    assert body["status"] == status, where
    assert (headers.get("x-trace-id") or [""])[0] == body["trace_id"], where
    assert "Traceback" not in content.decode("utf-8", "replace"), where


def _exercise_operation(
    server: LiveServer,
    operation: Any,
    headers: dict[str, str],
    statuses: dict[int, int],
    *,
    examples: int = EXAMPLES_PER_OPERATION,
    prepare: Callable[[Any], None] | None = None,
) -> None:
    """``prepare`` may adjust each generated case before it is sent (e.g. aim it at a real
    object so it gets past the 404)."""
    where = f"{operation.method.upper()} {operation.path}"

    @given(case=operation.as_strategy())
    @hypothesis_settings(
        max_examples=examples,
        deadline=None,
        derandomize=True,
        database=None,
        phases=[Phase.explicit, Phase.generate],
        suppress_health_check=list(HealthCheck),
    )
    def run(case: Any) -> None:
        if prepare is not None:
            prepare(case)
        response = case.call(base_url=server.base_url, headers=headers)
        statuses[response.status_code] = statuses.get(response.status_code, 0) + 1
        case.validate_response(response, checks=[not_a_server_error, response_schema_conformance])
        if response.status_code >= 400 and operation.method.upper() == "HEAD":
            # HEAD answers carry the problem's headers but, by HTTP, no body.
            content_type = (response.headers.get("content-type") or [""])[0]
            assert content_type.startswith("application/problem+json"), where
            assert response.content == b"", where
        elif response.status_code >= 400:
            _assert_problem(response.status_code, response.headers, response.content, where)

    run()


def _exercise(server: LiveServer, authenticated: bool) -> dict[int, int]:
    """Run every operation; returns how many answers each status got (for a sanity check)."""
    schema = schemathesis.openapi.from_url(f"{server.base_url}/openapi.json")
    statuses: dict[int, int] = {}
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) >= 15, "the schema lost its operations"
    for number, operation in enumerate(operations):
        # A fresh login per operation: logout and session deletion may revoke the previous one.
        if authenticated:
            headers = _owner_headers(server.base_url, f"contract-{number}")
            examples = EXAMPLES_PER_OPERATION
        else:
            headers, examples = {}, ANONYMOUS_EXAMPLES_PER_OPERATION
        _exercise_operation(server, operation, headers, statuses, examples=examples)
    return statuses


def test_anonymous_requests_never_fail_the_contract(live_server: LiveServer) -> None:
    statuses = _exercise(live_server, authenticated=False)
    assert {401, 422} <= statuses.keys(), statuses
    assert not any(status >= 500 for status in statuses), statuses


def test_authenticated_requests_never_fail_the_contract(live_server: LiveServer) -> None:
    statuses = _exercise(live_server, authenticated=True)
    assert any(200 <= status < 300 for status in statuses), statuses
    assert not any(status >= 500 for status in statuses), statuses
