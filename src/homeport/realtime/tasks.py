"""Jobs of realtime: removing inbox messages that were acknowledged or expired."""

from __future__ import annotations

from datetime import timedelta

from homeport.kit.clock import utcnow
from homeport.kit.jobs import JobContext, JobRegistry
from homeport.kit.logging import get_logger
from homeport.realtime.inbox import InboxRepository

INBOX_CLEANUP_KIND = "realtime.inbox_cleanup"
log = get_logger("homeport.realtime.tasks")


async def cleanup_inbox(ctx: JobContext) -> None:
    """Delete messages acknowledged or expired more than a day ago."""
    removed = await InboxRepository(ctx.session).delete_finished(utcnow() - timedelta(days=1))
    log.info("inbox_cleanup", removed=removed)


def register(registry: JobRegistry, cron: str) -> None:
    registry.register(INBOX_CLEANUP_KIND, cleanup_inbox)
    registry.schedule("realtime.inbox_cleanup", INBOX_CLEANUP_KIND, cron)
