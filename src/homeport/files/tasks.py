"""Jobs of the files domain: image variants, blob collection, deleting stored objects.

Storage deletions run as their own jobs, enqueued in the transaction that made the bytes
unreferenced: if that transaction rolls back nothing is deleted, and a crash after the commit
only delays the deletion.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from homeport.files.images import ImageRejected, make_variants
from homeport.files.repository import FileRepository
from homeport.files.service import COLLECT_BLOB_JOB, DELETE_OBJECT_JOB, IMAGE_VARIANTS_JOB
from homeport.kit.jobs import JobContext, JobInput, JobRegistry, enqueue
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

    async def render_variants(job: JobInput) -> list[dict[str, Any]] | str:
        """Outside any transaction: decode, resize, encode and store the variants; returns
        their rows, or why the image could not be processed."""
        tenant_id = job.tenant_id
        assert tenant_id is not None
        sha256 = str(job.payload["sha256"])
        storage = storage_of()
        try:
            data = await storage.get(str(job.payload["key"]))
            variants = await asyncio.to_thread(make_variants, data, max_pixels=max_pixels)
        except (ImageRejected, ObjectMissing) as exc:
            return str(exc) or type(exc).__name__
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
        return rows

    async def image_variants(context: JobContext) -> None:
        tenant_id = context.tenant_id
        assert tenant_id is not None
        sha256 = str(context.payload["sha256"])
        repository = FileRepository(context.session)
        blob = await repository.get_blob(tenant_id, sha256, for_update=True)
        rendered = context.prepared
        if blob is None or blob.storage_key != context.payload["key"]:
            # The blob went away while the variants were made: their objects go too.
            for row in rendered if isinstance(rendered, list) else []:
                enqueue(
                    context.session,
                    DELETE_OBJECT_JOB,
                    {"key": row["storage_key"]},
                    tenant_id=tenant_id,
                )
            return
        if isinstance(rendered, str):
            log.info("image_variants_failed", sha256=sha256, reason=rendered)
            await repository.set_blob_image(tenant_id, sha256, status="failed")
            return
        await repository.replace_variants(tenant_id, sha256, rendered)
        largest = max(rendered, key=lambda row: int(row["width"]) * int(row["height"]))
        await repository.set_blob_image(
            tenant_id, sha256, status="ready", width=largest["width"], height=largest["height"]
        )

    registry.register(DELETE_OBJECT_JOB, delete_object)
    registry.register(COLLECT_BLOB_JOB, collect_blob)
    registry.register(IMAGE_VARIANTS_JOB, image_variants, prepare=render_variants)
