"""Liveness and readiness."""

from __future__ import annotations

import asyncio
from typing import Any

from fastapi import Request
from fastapi.responses import JSONResponse

from homeport import __version__
from homeport.kit.errors import ErrorCode
from homeport.kit.logging import get_logger
from homeport.kit.problems import render, responses
from homeport.kit.routing import api_router
from homeport.state import StateDep

router = api_router(tags=["health"])
log = get_logger("homeport.health")

CHECK_TIMEOUT_SECONDS = 2.0


@router.get("/health/live", summary="The process is up")
async def live() -> dict[str, str]:
    return {"status": "ok", "version": __version__}


async def _check(name: str, probe: Any) -> tuple[str, str]:
    try:
        await asyncio.wait_for(probe(), timeout=CHECK_TIMEOUT_SECONDS)
    except Exception as exc:
        log.warning("readiness_check_failed", check=name, error=type(exc).__name__)
        return name, "failed"
    return name, "ok"


@router.get(
    "/health/ready",
    summary="Ready to serve: database, file storage (and Redis, when configured) answer",
    responses=responses(ErrorCode.UNAVAILABLE),
)
async def ready(request: Request, state: StateDep) -> Any:
    probes: list[tuple[str, Any]] = [("database", state.database.ping)]
    if state.storage is not None:
        probes.append(("storage", state.storage.ping))
    if state.redis is not None:
        probes.append(("redis", state.redis.ping))
    results = dict(await asyncio.gather(*(_check(name, probe) for name, probe in probes)))
    failing = sorted(name for name, result in results.items() if result != "ok")
    if failing:
        return render(
            ErrorCode.UNAVAILABLE,
            f"Not ready: {', '.join(failing)} unavailable",
            request,
            extra={"checks": results},
        )
    return JSONResponse({"status": "ok", "checks": results})
