from __future__ import annotations

from pathlib import Path

from tests.conftest import Harness, make_settings, start_harness, stop_harness


async def test_live_answers_with_version(harness: Harness) -> None:
    response = await harness.client.get("/health/live")
    assert response.status_code == 200
    assert response.json()["status"] == "ok"


async def test_ready_checks_the_database(harness: Harness) -> None:
    response = await harness.client.get("/health/ready")
    assert response.status_code == 200
    assert response.json()["checks"] == {"database": "ok", "storage": "ok"}


async def test_ready_names_the_storage_when_it_is_gone(harness: Harness) -> None:
    import shutil

    shutil.rmtree(harness.settings.resolved_storage_dir)
    response = await harness.client.get("/health/ready")
    assert response.status_code == 503
    body = response.json()
    assert body["code"] == "UNAVAILABLE"
    assert body["checks"] == {"database": "ok", "storage": "failed"}


async def test_ready_names_redis_when_it_is_down(database_url: str, tmp_path: Path) -> None:
    settings = make_settings(
        database_url,
        tmp_path / "data",
        redis_url="redis://127.0.0.1:1/0",
        rate_limit_enabled=False,
    )
    running, lifespan = await start_harness(settings)
    try:
        response = await running.client.get("/health/ready")
    finally:
        await stop_harness(running, lifespan)
    assert response.status_code == 503
    assert response.headers["content-type"] == "application/problem+json"
    body = response.json()
    assert body["code"] == "UNAVAILABLE"
    assert body["checks"] == {"database": "ok", "redis": "failed", "storage": "ok"}
    assert "redis" in body["detail"]
    assert body["instance"] == "/health/ready"


async def test_ready_with_real_redis(database_url: str, redis_url: str, tmp_path: Path) -> None:
    settings = make_settings(database_url, tmp_path / "data", redis_url=redis_url)
    running, lifespan = await start_harness(settings)
    try:
        response = await running.client.get("/health/ready")
    finally:
        await stop_harness(running, lifespan)
    assert response.status_code == 200
    assert response.json()["checks"] == {"database": "ok", "redis": "ok", "storage": "ok"}
