"""Jobs of the uploads domain: free a cancelled or expired upload's storage; expire uploads."""

from __future__ import annotations

from homeport.files.tasks import StorageOf
from homeport.kit.clock import utcnow
from homeport.kit.jobs import JobContext, JobRegistry
from homeport.uploads.repository import UploadRepository
from homeport.uploads.service import DISCARD_JOB, enqueue_discard

EXPIRE_JOB = "uploads.expire"
EXPIRE_BATCH = 500


def register(registry: JobRegistry, storage_of: StorageOf, cron: str) -> None:
    async def discard(context: JobContext) -> None:
        storage = storage_of()
        key = str(context.payload["key"])
        await storage.abort(key, str(context.payload.get("handle", "")))
        await storage.delete(key + ".tail")

    async def expire(context: JobContext) -> None:
        """Mark open uploads past their expiry expired and free their storage."""
        repository = UploadRepository(context.session)
        now = utcnow()
        for upload in await repository.expired_open(now, EXPIRE_BATCH):
            await repository.update(upload.tenant_id, upload.id, status="expired", updated_at=now)
            await repository.delete_parts(upload.tenant_id, upload.id)
            enqueue_discard(context.session, upload)

    registry.register(DISCARD_JOB, discard)
    registry.register(EXPIRE_JOB, expire)
    registry.schedule("uploads.expire", EXPIRE_JOB, cron)
