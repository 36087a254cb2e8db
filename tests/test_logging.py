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


def test_standard_logging_lines_come_out_in_the_same_format(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """uvicorn's own lines and the libraries' warnings, one JSON object each, redacted too."""
    import logging

    configure_logging("INFO", json_output=True)
    configure_logging("INFO", json_output=True)  # again, as every app start does: one handler
    logging.getLogger("uvicorn.error").info("Uvicorn running on %s", "http://127.0.0.1:1")
    logging.getLogger("uvicorn.error").warning("Invalid HTTP request received.")
    logging.getLogger("some.library").info("chatter below WARNING stays out")
    logging.getLogger("some.library").warning("retrying", extra={"password": "hunter22"})
    try:
        raise RuntimeError("boom")
    except RuntimeError:
        logging.getLogger("some.library").exception("failed")
    lines = [json.loads(line) for line in capsys.readouterr().err.strip().splitlines()]
    events = [(line["logger"], line["level"], line["event"]) for line in lines]
    assert events == [
        ("uvicorn.error", "info", "Uvicorn running on http://127.0.0.1:1"),
        ("uvicorn.error", "warning", "Invalid HTTP request received."),
        ("some.library", "warning", "retrying"),
        ("some.library", "error", "failed"),
    ]
    assert "RuntimeError: boom" in lines[-1]["exception"]
    assert lines[2]["password"] == REDACTED  # extra fields are kept, and redacted
    assert "hunter22" not in json.dumps(lines)
