"""Jobs of the auth domain."""

from __future__ import annotations

from datetime import timedelta

from homeport.auth.repository import AuthRepository
from homeport.kit.clock import utcnow
from homeport.kit.jobs import JobContext, JobRegistry
from homeport.kit.logging import get_logger

CLEANUP_KIND = "auth.cleanup_expired"
log = get_logger("homeport.auth.tasks")


async def cleanup_expired(ctx: JobContext) -> None:
    """Delete sessions expired or revoked more than a day ago, expired refresh tokens, and
    login throttles that no longer lock anything."""
    repository = AuthRepository(ctx.session)
    now = utcnow()
    grace = now - timedelta(days=1)
    removed = {
        "refresh_tokens": await repository.delete_dead_refresh_tokens(grace),
        "sessions": await repository.delete_expired_sessions(grace),
        "login_throttles": await repository.delete_stale_throttles(now - timedelta(hours=1)),
    }
    log.info("auth_cleanup", **removed)


def register(registry: JobRegistry, cleanup_cron: str) -> None:
    registry.register(CLEANUP_KIND, cleanup_expired)
    registry.schedule("auth.cleanup_expired", CLEANUP_KIND, cleanup_cron)
