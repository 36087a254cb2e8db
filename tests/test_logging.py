"""Logs are structured JSON with the trace id, and never carry secrets."""

from __future__ import annotations

import json

import pytest

from homeport.kit.logging import REDACTED, configure_logging, get_logger
from tests.conftest import Harness


async def test_request_logs_have_trace_id_and_no_secrets(
    harness: Harness, capsys: pytest.CaptureFixture[str]
) -> None:
    tenant = await harness.create_tenant("acme")
    tokens = await harness.login(tenant.owner_email, tenant.owner_password)
    await harness.client.get(
        "/api/v1/auth/me?token=" + tokens["access_token"],
        headers={"Authorization": f"Bearer {tokens['access_token']}"},
    )
    await harness.client.post(
        "/api/v1/auth/refresh", json={"refresh_token": tokens["refresh_token"]}
    )
    await harness.client.post(
        "/api/v1/auth/refresh", json={"refresh_token": tokens["refresh_token"]}
    )
    output = capsys.readouterr().err
    lines = [json.loads(line) for line in output.splitlines() if line.startswith("{")]
    requests = [line for line in lines if line.get("event") == "request"]
    assert len(requests) >= 4
    assert all(line["trace_id"] for line in requests)
    assert {line["path"] for line in requests} >= {"/api/v1/auth/login", "/api/v1/auth/me"}
    for secret in (tenant.owner_password, tokens["access_token"], tokens["refresh_token"]):
        assert secret not in output


def test_secret_keys_are_redacted(capsys: pytest.CaptureFixture[str]) -> None:
    configure_logging("INFO", json_output=True)
    get_logger("t").info(
        "event", password="hunter22", nested={"api_key": "k", "ok": 1}, authorization="Bearer x"
    )
    line = json.loads(capsys.readouterr().err.strip().splitlines()[-1])
    assert line["password"] == REDACTED
    assert line["authorization"] == REDACTED
    assert line["nested"] == {"api_key": REDACTED, "ok": 1}
