"""Schemathesis over the records endpoints on a real server: never a 5xx, errors are
problem+json, successful answers match the documented schemas."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given
from hypothesis import settings as hypothesis_settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import response_schema_conformance

from homeport.config import Settings
from homeport.kit.db import Database
from homeport.kit.security import PasswordHashing
from homeport.sync.collections import CollectionService
from homeport.sync.schemas import CollectionSpec
from homeport.tenants.service import TenantService
from tests.conftest import make_settings
from tests.live_server import LiveServer
from tests.records.conftest import ORDERS_SCHEMA
from tests.test_openapi_contract import _assert_problem

EXAMPLES_PER_OPERATION = 60
EMAIL = "owner@records.example.com"
PASSWORD = "records-password-1"


async def _seed(settings: Settings) -> None:
    database = Database(settings.resolved_database_url)
    try:
        async with database.transaction() as session:
            tenant, _owner = await TenantService(
                session, PasswordHashing(1, 1024, 1)
            ).create_tenant_with_owner("records", "Records", EMAIL, PASSWORD, platform_admin=False)
            await CollectionService(session).declare(
                tenant.id,
                CollectionSpec.model_validate(
                    {
                        "name": "orders",
                        "schema": ORDERS_SCHEMA,
                        "read": "tenant",
                        "write": "tenant",
                        "sortable": ["priority", "title"],
                        "indexes": ["status"],
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


def _headers(base_url: str) -> dict[str, str]:
    answer = httpx.post(
        f"{base_url}/api/v1/auth/login",
        json={"email": EMAIL, "password": PASSWORD, "device_id": "contract"},
    )
    assert answer.status_code == 200, answer.text
    return {"Authorization": f"Bearer {answer.json()['access_token']}"}


def _exercise(base: str, operation: Any, headers: dict[str, str], statuses: dict[int, int]) -> None:
    where = f"{operation.method.upper()} {operation.path}"

    @given(case=operation.as_strategy())
    @hypothesis_settings(
        max_examples=EXAMPLES_PER_OPERATION,
        deadline=None,
        derandomize=True,
        database=None,
        phases=[Phase.explicit, Phase.generate],
        suppress_health_check=list(HealthCheck),
    )
    def run(case: Any) -> None:
        # Mostly the real collection, so requests get past the 404 into the parsers.
        if case.path_parameters and len(repr(case.query)) % 4:
            case.path_parameters["collection"] = "orders"
        response = case.call(base_url=base, headers=headers)
        statuses[response.status_code] = statuses.get(response.status_code, 0) + 1
        case.validate_response(response, checks=[not_a_server_error, response_schema_conformance])
        if response.status_code >= 400:
            _assert_problem(response.status_code, response.headers, response.content, where)

    run()


def test_records_endpoints_never_answer_5xx(live_server: LiveServer) -> None:
    base = live_server.base_url
    headers = _headers(base)
    # A few records, so reads and writes of generated ids sometimes hit one.
    for record_id in ("0", "a", "o1"):
        httpx.post(
            f"{base}/api/v1/collections/orders/records",
            json={"id": record_id, "title": "seed", "status": "open", "priority": 1},
            headers=headers,
        )
    schema = schemathesis.openapi.from_url(f"{base}/openapi.json")
    operations = [
        result.ok() for result in schema.get_all_operations() if "/records" in result.ok().path
    ]
    assert len(operations) == 7, [operation.path for operation in operations]
    statuses: dict[int, int] = {}
    for operation in operations:
        _exercise(base, operation, headers, statuses)
    assert not any(status >= 500 for status in statuses), statuses
    assert any(200 <= status < 300 for status in statuses), statuses
    assert 400 in statuses, statuses
