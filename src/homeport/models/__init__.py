"""All tables on one metadata (what Alembic compares against)."""

from homeport.kit.db import Base
from homeport.models.auth import ApiKey, DeviceSession, RefreshToken
from homeport.models.files import FileBlob, FileVariant, StoredFile, UploadPart, UploadSession
from homeport.models.jobs import Job, JobSchedule
from homeport.models.realtime import InboxMessage
from homeport.models.search import SearchDocument
from homeport.models.sync import (
    Collection,
    IdempotentPush,
    SchemaChange,
    SyncConflict,
    SyncEvent,
    SyncRecord,
    SyncState,
)
from homeport.models.tenants import Invitation, LoginThrottle, Membership, Tenant, User

metadata = Base.metadata

__all__ = [
    "ApiKey",
    "Base",
    "Collection",
    "DeviceSession",
    "FileBlob",
    "FileVariant",
    "IdempotentPush",
    "InboxMessage",
    "Invitation",
    "Job",
    "JobSchedule",
    "LoginThrottle",
    "Membership",
    "RefreshToken",
    "SchemaChange",
    "SearchDocument",
    "StoredFile",
    "SyncConflict",
    "SyncEvent",
    "SyncRecord",
    "SyncState",
    "Tenant",
    "UploadPart",
    "UploadSession",
    "User",
    "metadata",
]
