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

from homeport.config import Settings
from homeport.kit.db import Database
from homeport.kit.security import PasswordHashing
from homeport.sync.collections import CollectionService
from homeport.sync.schemas import CollectionSpec
from homeport.tenants.service import TenantService
from tests.conftest import make_settings
from tests.live_server import LiveServer
from tests.records.conftest import ORDERS_SCHEMA
from tests.test_openapi_contract import _exercise_operation

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
            await CollectionService(session, settings.records_max_field_indexes).declare(
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


def _aim_at_orders(case: Any) -> None:
    """Mostly the real collection, so requests get past the 404 into the parsers."""
    if case.path_parameters and len(repr(case.query)) % 4:
        case.path_parameters["collection"] = "orders"


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
        _exercise_operation(
            live_server,
            operation,
            headers,
            statuses,
            examples=EXAMPLES_PER_OPERATION,
            prepare=_aim_at_orders,
        )
    assert not any(status >= 500 for status in statuses), statuses
    assert any(200 <= status < 300 for status in statuses), statuses
    assert 400 in statuses, statuses
