"""Rules for tenants, members and roles."""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import timedelta

from sqlalchemy.ext.asyncio import AsyncSession

from homeport.auth.principal import Permission, Principal, Role
from homeport.auth.repository import AuthRepository
from homeport.kit.clock import utcnow
from homeport.kit.errors import ErrorCode, ProblemError, forbidden, not_found
from homeport.kit.ids import new_id
from homeport.kit.security import PasswordHashing, hash_token, new_secret
from homeport.models.tenants import Invitation, Membership, Tenant, User
from homeport.tenants.repository import TenantRepository


@dataclass(frozen=True)
class IssuedInvitation:
    token: str
    invitation: Invitation


@dataclass(frozen=True)
class AddedMember:
    membership: Membership
    user: User
    invitation: IssuedInvitation | None


class TenantService:
    def __init__(
        self,
        session: AsyncSession,
        passwords: PasswordHashing,
        invitation_ttl_seconds: int = 7 * 24 * 3600,
    ) -> None:
        self.session = session
        self.repository = TenantRepository(session)
        self.passwords = passwords
        self.invitation_ttl_seconds = invitation_ttl_seconds

    # Visibility: a tenant's objects exist only for its members and platform admins.

    async def visible_tenant(self, principal: Principal, tenant_id: str) -> Tenant:
        if principal.tenant_id != tenant_id and not principal.is_platform_admin:
            raise not_found("Tenant")
        tenant = await self.repository.get_tenant(tenant_id)
        if tenant is None:
            raise not_found("Tenant")
        return tenant

    async def _require(self, principal: Principal, tenant_id: str, permission: Permission) -> None:
        await self.visible_tenant(principal, tenant_id)
        if principal.is_platform_admin:
            return
        principal.require(permission)

    # Tenants

    async def create_tenant(
        self, slug: str, name: str, owner_email: str | None = None
    ) -> tuple[Tenant, AddedMember | None]:
        if await self.repository.get_tenant_by_slug(slug) is not None:
            raise ProblemError(ErrorCode.VALIDATION_002, f"A tenant with slug {slug!r} exists")
        tenant = Tenant(id=new_id(), slug=slug, name=name, created_at=utcnow())
        await self.repository.add_tenant(tenant)
        added = None
        if owner_email is not None:
            added = await self._add_member(tenant, owner_email, Role.OWNER, None, None, None)
        return tenant, added

    async def read_tenant(self, principal: Principal, tenant_id: str) -> Tenant:
        tenant = await self.visible_tenant(principal, tenant_id)
        if not principal.is_platform_admin:
            principal.require(Permission.TENANT_READ)
        return tenant

    async def list_tenants(self, principal: Principal) -> list[tuple[Tenant, str | None]]:
        if principal.is_platform_admin:
            return [(tenant, None) for tenant in await self.repository.list_tenants()]
        principal.require(Permission.TENANT_READ)
        if principal.user_id is None:
            tenant = await self.repository.get_tenant(principal.tenant_id)
            return [] if tenant is None else [(tenant, None)]
        return [
            (tenant, role)
            for tenant, role in await self.repository.tenants_of_user(principal.user_id)
        ]

    # Members

    async def list_members(
        self, principal: Principal, tenant_id: str
    ) -> list[tuple[Membership, User]]:
        await self._require(principal, tenant_id, Permission.MEMBERS_READ)
        return list(await self.repository.list_members(tenant_id))

    async def add_member(
        self,
        principal: Principal,
        tenant_id: str,
        email: str,
        role: Role,
        display_name: str | None,
        password: str | None,
    ) -> AddedMember:
        principal = await self._lock_members(principal, tenant_id)
        self._check_can_grant(principal, role)
        tenant = await self.visible_tenant(principal, tenant_id)
        return await self._add_member(
            tenant, email, role, display_name, password, principal.user_id
        )

    async def _add_member(
        self,
        tenant: Tenant,
        email: str,
        role: Role,
        display_name: str | None,
        password: str | None,
        created_by: str | None,
    ) -> AddedMember:
        user = await self.repository.get_user_by_email(email)
        if user is None:
            user = User(
                id=new_id(),
                email=email,
                display_name=display_name,
                password_hash=await self.passwords.hash(password) if password else None,
                is_platform_admin=False,
                created_at=utcnow(),
            )
            await self.repository.add_user(user)
        elif await self.repository.get_membership(tenant.id, user.id) is not None:
            raise ProblemError(ErrorCode.VALIDATION_002, f"{email} is already a member")
        membership = Membership(
            id=new_id(), tenant_id=tenant.id, user_id=user.id, role=role.value, created_at=utcnow()
        )
        await self.repository.add_membership(membership)
        invitation = None
        if user.password_hash is None:
            invitation = await self._invite(tenant.id, user.id, role, created_by)
        return AddedMember(membership=membership, user=user, invitation=invitation)

    async def _invite(
        self, tenant_id: str, user_id: str, role: Role, created_by: str | None
    ) -> IssuedInvitation:
        # A new invitation replaces the person's older ones to this tenant not accepted yet.
        await self.repository.cancel_invitations(tenant_id, user_id)
        token = f"hpi_{new_secret()}"
        now = utcnow()
        invitation = Invitation(
            id=new_id(),
            tenant_id=tenant_id,
            user_id=user_id,
            token_hash=hash_token(token),
            role=role.value,
            created_by=created_by,
            created_at=now,
            expires_at=now + timedelta(seconds=self.invitation_ttl_seconds),
        )
        await self.repository.add_invitation(invitation)
        return IssuedInvitation(token=token, invitation=invitation)

    async def change_role(
        self, principal: Principal, tenant_id: str, user_id: str, role: Role
    ) -> tuple[Membership, User]:
        principal = await self._lock_members(principal, tenant_id)
        membership, user = await self._member(tenant_id, user_id)
        current = Role(membership.role)
        self._check_can_grant(principal, current)
        self._check_can_grant(principal, role)
        if current is Role.OWNER and role is not Role.OWNER:
            await self._keep_an_owner(tenant_id)
        membership.role = role.value
        return membership, user

    async def remove_member(self, principal: Principal, tenant_id: str, user_id: str) -> None:
        principal = await self._lock_members(principal, tenant_id)
        membership, _user = await self._member(tenant_id, user_id)
        self._check_can_grant(principal, Role(membership.role))
        if membership.role == Role.OWNER.value:
            await self._keep_an_owner(tenant_id)
        await AuthRepository(self.session).revoke_device_sessions(
            tenant_id, user_id, None, utcnow(), "member_removed"
        )
        await self.repository.delete_membership(tenant_id, user_id)
        # An invitation of a removed member must not work again once they are re-added.
        await self.repository.cancel_invitations(tenant_id, user_id)

    async def _lock_members(self, principal: Principal, tenant_id: str) -> Principal:
        """The caller, allowed to change the tenant's members, with their role as it is now.

        Member changes of one tenant run one after the other: the tenant's row is locked
        (PostgreSQL; SQLite has one writer), then the caller's role is read again, because a
        change that held the lock before may have demoted or removed them. Without this, two
        owners demoting each other at once could both succeed and leave no owner.
        """
        await self._require(principal, tenant_id, Permission.MEMBERS_WRITE)
        await self.repository.lock_tenant(tenant_id)
        if principal.is_platform_admin or principal.user_id is None:
            return principal
        membership = await self.repository.get_membership(tenant_id, principal.user_id)
        if membership is None:
            # Removed meanwhile, their sessions with them: the answer their next request gets.
            raise ProblemError(ErrorCode.AUTH_001, "You are no longer a member of this tenant")
        caller = replace(principal, role=Role(membership.role))
        caller.require(Permission.MEMBERS_WRITE)
        return caller

    async def _member(self, tenant_id: str, user_id: str) -> tuple[Membership, User]:
        membership = await self.repository.get_membership(tenant_id, user_id)
        user = await self.repository.get_user(user_id) if membership else None
        if membership is None or user is None:
            raise not_found("Member")
        return membership, user

    async def _keep_an_owner(self, tenant_id: str) -> None:
        if await self.repository.count_owners(tenant_id) <= 1:
            raise ProblemError(ErrorCode.VALIDATION_003, "A tenant must keep at least one owner")

    @staticmethod
    def _check_can_grant(principal: Principal, role: Role) -> None:
        """Only owners (and platform admins) hand out or take away the owner role."""
        if principal.is_platform_admin or role is not Role.OWNER:
            return
        if principal.role is not Role.OWNER:
            raise forbidden("Only an owner can grant or change the owner role")

    # Invitations

    async def accept_invitation(
        self, token: str, password: str, display_name: str | None
    ) -> tuple[Tenant, User]:
        # Locked: of several accepts of one token at once, the first wins and the others,
        # waiting for it, then read it accepted.
        invitation = await self.repository.lock_invitation(hash_token(token))
        now = utcnow()
        if invitation is None or invitation.accepted_at is not None or invitation.expires_at <= now:
            raise ProblemError(ErrorCode.AUTH_009, "This invitation is not valid")
        user = await self.repository.get_user(invitation.user_id)
        tenant = await self.repository.get_tenant(invitation.tenant_id)
        membership = await self.repository.get_membership(invitation.tenant_id, invitation.user_id)
        if user is None or tenant is None or membership is None:
            raise ProblemError(ErrorCode.AUTH_009, "This invitation is not valid")
        if user.password_hash is None:
            user.password_hash = await self.passwords.hash(password)
        if display_name:
            user.display_name = display_name
        invitation.accepted_at = now
        return tenant, user

    # Bootstrap and CLI

    async def create_user(
        self, email: str, password: str | None, *, platform_admin: bool = False
    ) -> User:
        if await self.repository.get_user_by_email(email) is not None:
            raise ProblemError(ErrorCode.VALIDATION_002, f"A user {email} exists")
        user = User(
            id=new_id(),
            email=email,
            password_hash=await self.passwords.hash(password) if password else None,
            is_platform_admin=platform_admin,
            created_at=utcnow(),
        )
        await self.repository.add_user(user)
        return user

    async def create_tenant_with_owner(
        self, slug: str, name: str, email: str, password: str, *, platform_admin: bool
    ) -> tuple[Tenant, User]:
        """`homeport init` and first start: a tenant and its owner, refusing if either exists."""
        if await self.repository.get_tenant_by_slug(slug) is not None:
            raise ProblemError(ErrorCode.VALIDATION_002, f"Tenant {slug!r} already exists")
        user = await self.create_user(email, password, platform_admin=platform_admin)
        tenant, _ = await self.create_tenant(slug, name)
        await self.repository.add_membership(
            Membership(
                id=new_id(),
                tenant_id=tenant.id,
                user_id=user.id,
                role=Role.OWNER.value,
                created_at=utcnow(),
            )
        )
        return tenant, user
