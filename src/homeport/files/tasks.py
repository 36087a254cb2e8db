"""Jobs of the files domain: image variants, blob collection, deleting stored objects.

Storage deletions run as their own jobs, enqueued in the transaction that made the bytes
unreferenced: if that transaction rolls back nothing is deleted, and a crash after the commit
only delays the deletion.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from homeport.files.images import ImageRejected, make_variants
from homeport.files.repository import FileRepository
from homeport.files.service import COLLECT_BLOB_JOB, DELETE_OBJECT_JOB, IMAGE_VARIANTS_JOB
from homeport.kit.jobs import JobContext, JobRegistry, enqueue
from homeport.kit.logging import get_logger
from homeport.kit.storage import ObjectMissing, Storage

log = get_logger("homeport.files")

StorageOf = Callable[[], Storage]


def variant_key(tenant_id: str, sha256: str, name: str, image_format: str) -> str:
    return f"t/{tenant_id}/v/{sha256}/{name}.{image_format}"


def register(registry: JobRegistry, storage_of: StorageOf, max_pixels: int) -> None:
    async def delete_object(context: JobContext) -> None:
        await storage_of().delete(str(context.payload["key"]))

    async def collect_blob(context: JobContext) -> None:
        """Delete a blob nobody references any more (and its variants)."""
        tenant_id = context.tenant_id
        assert tenant_id is not None
        sha256 = str(context.payload["sha256"])
        repository = FileRepository(context.session)
        blob = await repository.get_blob(tenant_id, sha256, for_update=True)
        if blob is None or await repository.count_files_of_blob(tenant_id, sha256) > 0:
            return
        keys = [blob.storage_key] + [
            v.storage_key for v in await repository.variants(tenant_id, sha256)
        ]
        await repository.delete_variants(tenant_id, sha256)
        await repository.delete_blob(tenant_id, sha256)
        for key in keys:
            enqueue(context.session, DELETE_OBJECT_JOB, {"key": key}, tenant_id=tenant_id)

    async def image_variants(context: JobContext) -> None:
        tenant_id = context.tenant_id
        assert tenant_id is not None
        sha256 = str(context.payload["sha256"])
        repository = FileRepository(context.session)
        blob = await repository.get_blob(tenant_id, sha256)
        if blob is None:
            return
        storage = storage_of()
        try:
            data = await storage.get(blob.storage_key)
            variants = await asyncio.to_thread(make_variants, data, max_pixels=max_pixels)
        except (ImageRejected, ObjectMissing) as exc:
            log.info("image_variants_failed", sha256=sha256, reason=str(exc))
            await repository.set_blob_image(tenant_id, sha256, status="failed")
            return
        rows = []
        for variant in variants:
            key = variant_key(tenant_id, sha256, variant.name, variant.format)
            await storage.put(key, variant.data, variant.mime_type)
            rows.append(
                {
                    "tenant_id": tenant_id,
                    "sha256": sha256,
                    "name": variant.name,
                    "format": variant.format,
                    "storage_key": key,
                    "mime_type": variant.mime_type,
                    "width": variant.width,
                    "height": variant.height,
                    "size": len(variant.data),
                }
            )
        await repository.replace_variants(tenant_id, sha256, rows)
        largest = max(variants, key=lambda variant: variant.width * variant.height)
        await repository.set_blob_image(
            tenant_id, sha256, status="ready", width=largest.width, height=largest.height
        )

    registry.register(DELETE_OBJECT_JOB, delete_object)
    registry.register(COLLECT_BLOB_JOB, collect_blob)
    registry.register(IMAGE_VARIANTS_JOB, image_variants)
