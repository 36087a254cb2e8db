"""All SQL of tenants, users, memberships and invitations."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import TypeVar

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from homeport.kit.tenancy import tenant_delete, tenant_select, unscoped_select
from homeport.models.tenants import Invitation, Membership, Tenant, User

_Locked = TypeVar("_Locked", Tenant, User)


class TenantRepository:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    # Tenants (platform-level)

    async def add_tenant(self, tenant: Tenant) -> None:
        self.session.add(tenant)
        await self.session.flush()

    async def get_tenant(self, tenant_id: str) -> Tenant | None:
        return await self.session.get(Tenant, tenant_id)

    async def lock_tenant(self, tenant_id: str) -> Tenant | None:
        """The tenant, its row locked until the transaction ends, so that member changes of
        one tenant run one after the other on PostgreSQL (SQLite has one writer anyway)."""
        return await self._locked(Tenant, tenant_id)

    async def get_tenant_by_slug(self, slug: str) -> Tenant | None:
        result = await self.session.execute(select(Tenant).where(Tenant.slug == slug))
        return result.scalar_one_or_none()

    async def list_tenants(self) -> Sequence[Tenant]:
        result = await self.session.execute(select(Tenant).order_by(Tenant.created_at))
        return result.scalars().all()

    async def count_tenants(self) -> int:
        result = await self.session.execute(select(func.count()).select_from(Tenant))
        return int(result.scalar_one())

    async def tenants_of_user(self, user_id: str) -> Sequence[tuple[Tenant, str]]:
        result = await self.session.execute(
            unscoped_select(Membership, reason="one person's memberships across tenants")
            .add_columns(Tenant)
            .join(Tenant, Membership.tenant_id == Tenant.id)
            .where(Membership.user_id == user_id)
            .order_by(Tenant.created_at)
        )
        return [(row[1], row[0].role) for row in result.all()]

    # Users (platform-level identities)

    async def add_user(self, user: User) -> None:
        self.session.add(user)
        await self.session.flush()

    async def get_user(self, user_id: str) -> User | None:
        return await self.session.get(User, user_id)

    async def lock_user(self, user_id: str) -> User | None:
        """The user read again, its row locked until the transaction ends (PostgreSQL), so
        that two logins of one person run one after the other."""
        return await self._locked(User, user_id)

    async def _locked(self, model: type[_Locked], row_id: str) -> _Locked | None:
        """The row read again and locked ``FOR NO KEY UPDATE``: rows that only refer to it are
        still written meanwhile."""
        result = await self.session.execute(
            select(model)
            .where(model.id == row_id)
            .with_for_update(key_share=True)
            .execution_options(populate_existing=True)
        )
        return result.scalar_one_or_none()

    async def get_user_by_email(self, email: str) -> User | None:
        result = await self.session.execute(select(User).where(User.email == email))
        return result.scalar_one_or_none()

    async def count_users(self) -> int:
        result = await self.session.execute(select(func.count()).select_from(User))
        return int(result.scalar_one())

    async def list_users(self) -> Sequence[User]:
        result = await self.session.execute(select(User).order_by(User.created_at))
        return result.scalars().all()

    # Memberships

    async def add_membership(self, membership: Membership) -> None:
        self.session.add(membership)
        await self.session.flush()

    async def get_membership(self, tenant_id: str, user_id: str) -> Membership | None:
        result = await self.session.execute(
            tenant_select(Membership, tenant_id).where(Membership.user_id == user_id)
        )
        return result.scalar_one_or_none()

    async def list_members(self, tenant_id: str) -> Sequence[tuple[Membership, User]]:
        result = await self.session.execute(
            tenant_select(Membership, tenant_id)
            .add_columns(User)
            .join(User, User.id == Membership.user_id)
            .order_by(Membership.created_at, User.email)
        )
        return [(row[0], row[1]) for row in result.all()]

    async def count_owners(self, tenant_id: str) -> int:
        result = await self.session.execute(
            tenant_select(Membership, tenant_id)
            .where(Membership.role == "owner")
            .with_only_columns(func.count())
        )
        return int(result.scalar_one())

    async def delete_membership(self, tenant_id: str, user_id: str) -> None:
        await self.session.execute(
            tenant_delete(Membership, tenant_id).where(Membership.user_id == user_id)
        )

    # Invitations

    async def add_invitation(self, invitation: Invitation) -> None:
        self.session.add(invitation)

    async def lock_invitation(self, token_hash: str) -> Invitation | None:
        """The invitation of the token, its row locked until the transaction ends
        (PostgreSQL): a second accept of the same token waits, then reads it accepted."""
        result = await self.session.execute(
            unscoped_select(Invitation, reason="the token itself identifies its tenant")
            .where(Invitation.token_hash == token_hash)
            .with_for_update()
            .execution_options(populate_existing=True)
        )
        return result.scalar_one_or_none()

    async def cancel_invitations(self, tenant_id: str, user_id: str) -> int:
        """Delete the person's invitations to the tenant that were not accepted yet."""
        result = await self.session.execute(
            tenant_delete(Invitation, tenant_id).where(
                Invitation.user_id == user_id, Invitation.accepted_at.is_(None)
            )
        )
        return int(result.rowcount)  # type: ignore[attr-defined]

    async def pending_invitations(self, tenant_id: str, now: datetime) -> Sequence[Invitation]:
        result = await self.session.execute(
            tenant_select(Invitation, tenant_id).where(
                Invitation.accepted_at.is_(None), Invitation.expires_at > now
            )
        )
        return result.scalars().all()
