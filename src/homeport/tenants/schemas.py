"""Request and response bodies of the tenant and member endpoints."""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel

from homeport.auth.principal import Role
from homeport.auth.schemas import Email, Name, Password, Slug, StrictModel

DisplayName = Name


class TenantCreate(StrictModel):
    slug: Slug
    name: Name
    owner_email: Email | None = None


class TenantOut(BaseModel):
    id: str
    slug: str
    name: str
    created_at: datetime
    role: Role | None = None


class InvitationOut(BaseModel):
    token: str
    expires_at: datetime


class TenantCreated(TenantOut):
    invitation: InvitationOut | None = None


class TenantList(BaseModel):
    tenants: list[TenantOut]


class MemberAdd(StrictModel):
    email: Email
    role: Role = Role.MEMBER
    display_name: DisplayName | None = None
    password: Password | None = None


class MemberUpdate(StrictModel):
    role: Role


class MemberOut(BaseModel):
    user_id: str
    email: str
    display_name: str | None
    role: Role
    joined_at: datetime
    activated: bool


class MemberAdded(MemberOut):
    invitation: InvitationOut | None = None


class MemberList(BaseModel):
    members: list[MemberOut]
