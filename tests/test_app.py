"""Protocol hygiene of the app as a whole: OpenAPI, Swagger UI, CORS, gzip, settings."""

from __future__ import annotations

from pathlib import Path

import pytest

from homeport.config import Settings
from tests.conftest import Harness, make_settings, start_harness, stop_harness


async def test_openapi_and_swagger_ui(harness: Harness) -> None:
    spec = await harness.client.get("/openapi.json")
    assert spec.status_code == 200
    paths = spec.json()["paths"]
    assert {"/api/v1/auth/login", "/api/v1/auth/refresh", "/health/ready"} <= paths.keys()
    login_errors = paths["/api/v1/auth/login"]["post"]["responses"]
    assert {"401", "422", "429"} <= login_errors.keys()
    ui = await harness.client.get("/api-docs")
    assert ui.status_code == 200
    assert "swagger" in ui.text.lower()


async def test_large_answers_are_gzipped(harness: Harness) -> None:
    response = await harness.client.get("/openapi.json", headers={"Accept-Encoding": "gzip"})
    assert response.headers["content-encoding"] == "gzip"
    small = await harness.client.get("/health/live", headers={"Accept-Encoding": "gzip"})
    assert "content-encoding" not in small.headers


async def test_cors_follows_settings(database_url: str, tmp_path: Path) -> None:
    settings = make_settings(
        database_url, tmp_path / "d", cors_origins="https://app.example.com, https://b.example.com"
    )
    assert settings.cors_origins == ["https://app.example.com", "https://b.example.com"]
    running, lifespan = await start_harness(settings)
    try:
        preflight = await running.client.options(
            "/api/v1/auth/login",
            headers={
                "Origin": "https://app.example.com",
                "Access-Control-Request-Method": "POST",
                "Access-Control-Request-Headers": "content-type",
            },
        )
        foreign = await running.client.get(
            "/health/live", headers={"Origin": "https://evil.example.com"}
        )
    finally:
        await stop_harness(running, lifespan)
    assert preflight.status_code == 200
    assert preflight.headers["access-control-allow-origin"] == "https://app.example.com"
    assert "access-control-allow-origin" not in foreign.headers


async def test_no_cors_headers_by_default(harness: Harness) -> None:
    response = await harness.client.get(
        "/health/live", headers={"Origin": "https://app.example.com"}
    )
    assert "access-control-allow-origin" not in response.headers


def test_settings_from_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("HOMEPORT_DATA_DIR", str(tmp_path / "x"))
    monkeypatch.setenv("HOMEPORT_ACCESS_TOKEN_TTL_SECONDS", "60")
    monkeypatch.setenv("HOMEPORT_CORS_ORIGINS", '["https://a.example.com"]')
    settings = Settings(_env_file=None)  # type: ignore[call-arg]
    assert settings.data_dir == tmp_path / "x"
    assert settings.access_token_ttl_seconds == 60
    assert settings.cors_origins == ["https://a.example.com"]
    assert settings.resolved_database_url.endswith("/x/homeport.db")
    assert settings.is_sqlite


async def test_secrets_are_generated_once_and_private(harness: Harness) -> None:
    secrets_file = harness.settings.data_dir / "secrets.json"
    assert secrets_file.exists()
    assert secrets_file.stat().st_mode & 0o077 == 0
    first = secrets_file.read_text()
    running, lifespan = await start_harness(harness.settings)
    try:
        assert running.state.keyring == harness.state.keyring
    finally:
        await stop_harness(running, lifespan)
    assert secrets_file.read_text() == first


async def test_secrets_from_settings_need_no_file(database_url: str, tmp_path: Path) -> None:
    settings = make_settings(
        database_url,
        tmp_path / "d",
        secret_key="s" * 40,
        jwt_keys='{"k1": "' + "a" * 64 + '", "k2": "' + "b" * 64 + '"}',
        jwt_active_kid="k2",
    )
    running, lifespan = await start_harness(settings)
    try:
        assert running.state.keyring.active_kid == "k2"
        assert set(running.state.keyring.keys) == {"k1", "k2"}
    finally:
        await stop_harness(running, lifespan)
    assert not (tmp_path / "d" / "secrets.json").exists()
