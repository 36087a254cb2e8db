"""All tables on one metadata (what Alembic compares against)."""

from homeport.kit.db import Base
from homeport.models.auth import ApiKey, DeviceSession, RefreshToken
from homeport.models.jobs import Job, JobSchedule
from homeport.models.tenants import Invitation, LoginThrottle, Membership, Tenant, User

metadata = Base.metadata

__all__ = [
    "ApiKey",
    "Base",
    "DeviceSession",
    "Invitation",
    "Job",
    "JobSchedule",
    "LoginThrottle",
    "Membership",
    "RefreshToken",
    "Tenant",
    "User",
    "metadata",
]
