"""Who is calling, and what roles and scopes allow."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field

from homeport.kit.errors import forbidden


class Role(enum.StrEnum):
    OWNER = "owner"
    ADMIN = "admin"
    MANAGER = "manager"
    MEMBER = "member"

    @property
    def rank(self) -> int:
        return _RANK[self]


_RANK = {Role.MEMBER: 1, Role.MANAGER: 2, Role.ADMIN: 3, Role.OWNER: 4}


class Permission(enum.StrEnum):
    """What an API key scope grants; a user's role implies a set of these."""

    TENANT_READ = "tenant:read"
    MEMBERS_READ = "members:read"
    MEMBERS_WRITE = "members:write"
    API_KEYS_MANAGE = "api_keys:manage"
    COLLECTIONS_READ = "collections:read"
    COLLECTIONS_WRITE = "collections:write"
    CONFLICTS_READ = "conflicts:read"
    CONFLICTS_WRITE = "conflicts:write"
    FILES_READ = "files:read"
    FILES_WRITE = "files:write"


# The lowest role that holds each permission.
_MINIMUM_ROLE = {
    Permission.TENANT_READ: Role.MEMBER,
    Permission.MEMBERS_READ: Role.MANAGER,
    Permission.MEMBERS_WRITE: Role.ADMIN,
    Permission.API_KEYS_MANAGE: Role.ADMIN,
    Permission.COLLECTIONS_READ: Role.MEMBER,
    Permission.COLLECTIONS_WRITE: Role.ADMIN,
    Permission.CONFLICTS_READ: Role.MANAGER,
    Permission.CONFLICTS_WRITE: Role.MANAGER,
    Permission.FILES_READ: Role.MEMBER,
    Permission.FILES_WRITE: Role.MEMBER,
}

# Scopes an API key may carry. Managing API keys stays with people.
API_KEY_SCOPES = frozenset(
    {
        Permission.TENANT_READ,
        Permission.MEMBERS_READ,
        Permission.MEMBERS_WRITE,
        Permission.COLLECTIONS_READ,
        Permission.COLLECTIONS_WRITE,
        Permission.CONFLICTS_READ,
        Permission.CONFLICTS_WRITE,
        Permission.FILES_READ,
        Permission.FILES_WRITE,
    }
)


@dataclass(frozen=True)
class Principal:
    kind: str  # "user" | "api_key"
    tenant_id: str
    user_id: str | None = None
    role: Role | None = None
    session_id: str | None = None
    device_id: str | None = None
    api_key_id: str | None = None
    scopes: frozenset[str] = field(default_factory=frozenset)
    is_platform_admin: bool = False

    @property
    def is_user(self) -> bool:
        return self.kind == "user"

    def can(self, permission: Permission) -> bool:
        if self.kind == "api_key":
            return permission.value in self.scopes
        return self.role is not None and self.role.rank >= _MINIMUM_ROLE[permission].rank

    def require(self, permission: Permission) -> None:
        if not self.can(permission):
            raise forbidden(f"This needs the {permission.value!r} permission")
