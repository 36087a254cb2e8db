"""Jobs of sync: tombstone compaction and the expiry of stored push answers."""

from __future__ import annotations

from datetime import timedelta

from homeport.config import Settings
from homeport.kit.clock import utcnow
from homeport.kit.jobs import JobContext, JobHandler, JobRegistry
from homeport.kit.logging import get_logger
from homeport.sync.repository import SyncRepository

COMPACTION_KIND = "sync.compact"
log = get_logger("homeport.sync.tasks")


def compaction_job(retention_days: int) -> JobHandler:
    async def compact(ctx: JobContext) -> None:
        """Remove tombstones older than the retention; cursors from before them get 410."""
        repository = SyncRepository(ctx.session)
        now = utcnow()
        removed = await repository.compact_tombstones(now - timedelta(days=retention_days))
        expired = await repository.delete_expired_idempotency(now)
        log.info("sync_compaction", tombstones=removed, idempotency_answers=expired)

    return compact


def register(registry: JobRegistry, settings: Settings) -> None:
    registry.register(COMPACTION_KIND, compaction_job(settings.sync_tombstone_retention_days))
    registry.schedule("sync.compact", COMPACTION_KIND, settings.sync_compaction_cron)
