"""File objects: adopting finished uploads (with per-tenant dedupe), access rules, signed
download URLs, deletion. Storage I/O of deletions runs in jobs after the commit."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy.ext.asyncio import AsyncSession

from homeport.auth.principal import Permission, Principal, Role
from homeport.config import Settings
from homeport.files.repository import FileRepository
from homeport.files.signing import signature_valid
from homeport.kit.clock import utcnow
from homeport.kit.errors import ErrorCode, ProblemError, forbidden, not_found
from homeport.kit.ids import new_id
from homeport.kit.jobs import enqueue
from homeport.models.files import FileBlob, FileVariant, StoredFile

ACCESS_OWNER = "owner"
ACCESS_TENANT = "tenant"
ACCESS_RULES = (ACCESS_OWNER, ACCESS_TENANT)
DELETE_OBJECT_JOB = "files.delete_object"
COLLECT_BLOB_JOB = "files.collect_blob"
IMAGE_VARIANTS_JOB = "files.image_variants"
# Types the image job makes variants of (a subset of what Pillow reads).
VARIANT_SOURCE_TYPES = frozenset(
    {"image/jpeg", "image/png", "image/webp", "image/gif", "image/heic", "image/heif"}
)


@dataclass(frozen=True)
class Owner:
    """Who a file or an upload belongs to: the user, or the API key, and the device."""

    actor_id: str
    device_id: str | None
    is_user: bool

    @classmethod
    def of(cls, principal: Principal) -> Owner:
        actor = principal.user_id or principal.api_key_id
        assert actor is not None
        return cls(actor_id=actor, device_id=principal.device_id, is_user=principal.is_user)


@dataclass(frozen=True)
class Content:
    """Bytes that are stored and verified, ready to become a file."""

    storage_key: str
    size: int
    sha256: str
    mime_type: str
    # An image's size after orientation, when it was decoded on the way in.
    width: int | None = None
    height: int | None = None


@dataclass(frozen=True)
class FileView:
    file: StoredFile
    blob: FileBlob
    variants: list[FileVariant]


@dataclass(frozen=True)
class Download:
    storage_key: str
    size: int
    mime_type: str
    filename: str
    etag: str
    expires: int


def _may_read(principal: Principal, stored: StoredFile) -> bool:
    if principal.tenant_id != stored.tenant_id or not principal.can(Permission.FILES_READ):
        return False
    if principal.kind == "api_key" or stored.access == ACCESS_TENANT:
        return True
    if stored.owner_id == principal.user_id:
        return True
    return principal.role is not None and principal.role.rank >= Role.ADMIN.rank


def _may_delete(principal: Principal, stored: StoredFile) -> bool:
    if not principal.can(Permission.FILES_WRITE):
        return False
    if principal.kind == "api_key":
        return True
    if stored.owner_id == principal.user_id:
        return True
    return principal.role is not None and principal.role.rank >= Role.ADMIN.rank


class FileService:
    def __init__(self, session: AsyncSession, settings: Settings, secret_key: str) -> None:
        self.session = session
        self.settings = settings
        self.secret_key = secret_key
        self.repository = FileRepository(session)

    async def adopt(
        self,
        tenant_id: str,
        owner: Owner,
        content: Content,
        *,
        filename: str,
        access: str,
        upload_id: str | None,
    ) -> tuple[StoredFile, bool]:
        """Make verified bytes a file; also says whether they were a duplicate. When the
        tenant already stores these bytes the new copy is deleted (after commit) and the file
        links the existing blob."""
        now = utcnow()
        wants_variants = content.mime_type in VARIANT_SOURCE_TYPES
        blob = await self.repository.insert_blob_unless_present(
            {
                "tenant_id": tenant_id,
                "sha256": content.sha256,
                "storage_key": content.storage_key,
                "size": content.size,
                "mime_type": content.mime_type,
                "variants_status": "pending" if wants_variants else None,
                "width": content.width,
                "height": content.height,
                "created_at": now,
            }
        )
        deduplicated = blob.storage_key != content.storage_key
        if deduplicated:
            enqueue(
                self.session, DELETE_OBJECT_JOB, {"key": content.storage_key}, tenant_id=tenant_id
            )
        elif wants_variants:
            enqueue(
                self.session,
                IMAGE_VARIANTS_JOB,
                {"sha256": content.sha256, "key": content.storage_key},
                tenant_id=tenant_id,
                dedupe_key=f"variants:{tenant_id}:{content.sha256}",
            )
        stored = StoredFile(
            id=new_id(),
            tenant_id=tenant_id,
            owner_id=owner.actor_id,
            device_id=owner.device_id,
            filename=filename,
            mime_type=blob.mime_type,
            size=blob.size,
            sha256=blob.sha256,
            access=access,
            upload_id=upload_id,
            created_at=now,
        )
        self.repository.add_file(stored)
        return stored, deduplicated

    async def view(self, principal: Principal, file_id: str) -> FileView:
        stored = await self.repository.get_file(principal.tenant_id, file_id)
        if stored is None or not _may_read(principal, stored):
            raise not_found("File")
        return await self.view_of(stored)

    async def view_of(self, stored: StoredFile) -> FileView:
        blob = await self.repository.get_blob(stored.tenant_id, stored.sha256)
        assert blob is not None
        variants = list(await self.repository.variants(stored.tenant_id, stored.sha256))
        return FileView(file=stored, blob=blob, variants=variants)

    async def list_files(
        self, principal: Principal, *, after: str | None, limit: int
    ) -> list[StoredFile]:
        principal.require(Permission.FILES_READ)
        sees_all = principal.kind == "api_key" or (
            principal.role is not None and principal.role.rank >= Role.ADMIN.rank
        )
        return list(
            await self.repository.list_files(
                principal.tenant_id,
                owner_id=None if sees_all else principal.user_id,
                after=after,
                limit=limit,
            )
        )

    async def delete(self, principal: Principal, file_id: str) -> None:
        stored = await self.repository.get_file(principal.tenant_id, file_id)
        if stored is None or not _may_read(principal, stored):
            raise not_found("File")
        if not _may_delete(principal, stored):
            raise forbidden("Only the file's owner or an admin can delete it")
        await self.repository.delete_file(principal.tenant_id, file_id)
        enqueue(
            self.session,
            COLLECT_BLOB_JOB,
            {"sha256": stored.sha256},
            tenant_id=principal.tenant_id,
        )

    async def download(self, file_id: str, variant: str, expires: int, signature: str) -> Download:
        if not signature_valid(self.secret_key, file_id, variant, expires, signature, utcnow()):
            if expires < int(utcnow().timestamp()):
                raise ProblemError(ErrorCode.AUTH_002, "This download link has expired")
            raise ProblemError(ErrorCode.AUTH_006, "Invalid download signature")
        stored = await self.repository.find_file_for_download(file_id)
        if stored is None:
            raise not_found("File")
        filename = stored.filename
        if not variant:
            blob = await self.repository.get_blob(stored.tenant_id, stored.sha256)
            assert blob is not None
            return Download(
                storage_key=blob.storage_key,
                size=blob.size,
                mime_type=blob.mime_type,
                filename=filename,
                etag=blob.sha256,
                expires=expires,
            )
        name, _, image_format = variant.partition(".")
        found = await self.repository.get_variant(
            stored.tenant_id, stored.sha256, name, image_format
        )
        if found is None:
            raise not_found("Variant")
        stem = filename.rsplit(".", 1)[0] if "." in filename else filename
        return Download(
            storage_key=found.storage_key,
            size=found.size,
            mime_type=found.mime_type,
            filename=f"{stem}-{name}.{'jpg' if image_format == 'jpeg' else image_format}",
            etag=f"{stored.sha256[:32]}-{name}-{image_format}",
            expires=expires,
        )
