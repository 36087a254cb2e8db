"""Request and response bodies of the tenant and member endpoints."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from pydantic import BaseModel, StringConstraints

from homeport.auth.principal import Role
from homeport.auth.schemas import Email, Password, Slug, StrictModel

DisplayName = Annotated[str, StringConstraints(min_length=1, max_length=200)]


class TenantCreate(StrictModel):
    slug: Slug
    name: Annotated[str, StringConstraints(min_length=1, max_length=200)]
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
