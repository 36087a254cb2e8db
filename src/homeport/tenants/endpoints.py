"""HTTP face of tenants and members."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Path, Response, status

from homeport.auth.dependencies import PlatformAdminDep, PrincipalDep
from homeport.kit.errors import ErrorCode
from homeport.kit.problems import responses
from homeport.kit.routing import api_router
from homeport.models.tenants import Membership, User
from homeport.state import SessionDep, StateDep
from homeport.tenants.schemas import (
    InvitationOut,
    MemberAdd,
    MemberAdded,
    MemberList,
    MemberOut,
    MemberUpdate,
    TenantCreate,
    TenantCreated,
    TenantList,
    TenantOut,
)
from homeport.tenants.service import IssuedInvitation, TenantService

router = api_router(prefix="/api/v1/tenants", tags=["tenants"])

TenantId = Annotated[str, Path(min_length=1, max_length=64)]
UserId = Annotated[str, Path(min_length=1, max_length=64)]


async def tenant_service(state: StateDep, session: SessionDep) -> TenantService:
    return TenantService(session, state.passwords, state.settings.invitation_ttl_seconds)


ServiceDep = Annotated[TenantService, Depends(tenant_service)]


def _member_out(membership: Membership, user: User) -> MemberOut:
    return MemberOut(
        user_id=user.id,
        email=user.email,
        display_name=user.display_name,
        role=membership.role,
        joined_at=membership.created_at,
        activated=user.password_hash is not None,
    )


def _invitation_out(issued: IssuedInvitation | None) -> InvitationOut | None:
    if issued is None:
        return None
    return InvitationOut(token=issued.token, expires_at=issued.invitation.expires_at)


@router.post(
    "",
    response_model=TenantCreated,
    status_code=status.HTTP_201_CREATED,
    responses=responses(ErrorCode.AUTH_001, ErrorCode.AUTH_006, ErrorCode.VALIDATION_002),
    summary="Create a tenant (platform admin)",
)
async def create_tenant(
    body: TenantCreate, _admin: PlatformAdminDep, service: ServiceDep
) -> TenantCreated:
    tenant, added = await service.create_tenant(body.slug, body.name, body.owner_email)
    return TenantCreated(
        id=tenant.id,
        slug=tenant.slug,
        name=tenant.name,
        created_at=tenant.created_at,
        invitation=_invitation_out(added.invitation if added else None),
    )


@router.get("", response_model=TenantList, responses=responses(ErrorCode.AUTH_001))
async def list_tenants(principal: PrincipalDep, service: ServiceDep) -> TenantList:
    rows = await service.list_tenants(principal)
    return TenantList(
        tenants=[
            TenantOut(
                id=tenant.id,
                slug=tenant.slug,
                name=tenant.name,
                created_at=tenant.created_at,
                role=role,
            )
            for tenant, role in rows
        ]
    )


@router.get(
    "/{tenant_id}",
    response_model=TenantOut,
    responses=responses(ErrorCode.AUTH_001, ErrorCode.NOT_FOUND),
)
async def get_tenant(
    tenant_id: TenantId, principal: PrincipalDep, service: ServiceDep
) -> TenantOut:
    tenant = await service.read_tenant(principal, tenant_id)
    return TenantOut(id=tenant.id, slug=tenant.slug, name=tenant.name, created_at=tenant.created_at)


@router.get(
    "/{tenant_id}/members",
    response_model=MemberList,
    responses=responses(ErrorCode.AUTH_001, ErrorCode.AUTH_006, ErrorCode.NOT_FOUND),
)
async def list_members(
    tenant_id: TenantId, principal: PrincipalDep, service: ServiceDep
) -> MemberList:
    rows = await service.list_members(principal, tenant_id)
    return MemberList(members=[_member_out(membership, user) for membership, user in rows])


@router.post(
    "/{tenant_id}/members",
    response_model=MemberAdded,
    status_code=status.HTTP_201_CREATED,
    responses=responses(
        ErrorCode.AUTH_001, ErrorCode.AUTH_006, ErrorCode.NOT_FOUND, ErrorCode.VALIDATION_002
    ),
    summary="Add a member; a new person gets an invitation token to set a password",
)
async def add_member(
    tenant_id: TenantId, body: MemberAdd, principal: PrincipalDep, service: ServiceDep
) -> MemberAdded:
    added = await service.add_member(
        principal, tenant_id, body.email, body.role, body.display_name, body.password
    )
    base = _member_out(added.membership, added.user)
    return MemberAdded(**base.model_dump(), invitation=_invitation_out(added.invitation))


@router.patch(
    "/{tenant_id}/members/{user_id}",
    response_model=MemberOut,
    responses=responses(
        ErrorCode.AUTH_001, ErrorCode.AUTH_006, ErrorCode.NOT_FOUND, ErrorCode.VALIDATION_003
    ),
    summary="Change a member's role",
)
async def change_role(
    tenant_id: TenantId,
    user_id: UserId,
    body: MemberUpdate,
    principal: PrincipalDep,
    service: ServiceDep,
) -> MemberOut:
    membership, user = await service.change_role(principal, tenant_id, user_id, body.role)
    return _member_out(membership, user)


@router.delete(
    "/{tenant_id}/members/{user_id}",
    status_code=status.HTTP_204_NO_CONTENT,
    responses=responses(
        ErrorCode.AUTH_001, ErrorCode.AUTH_006, ErrorCode.NOT_FOUND, ErrorCode.VALIDATION_003
    ),
    summary="Remove a member (their device sessions in this tenant end)",
)
async def remove_member(
    tenant_id: TenantId, user_id: UserId, principal: PrincipalDep, service: ServiceDep
) -> Response:
    await service.remove_member(principal, tenant_id, user_id)
    return Response(status_code=status.HTTP_204_NO_CONTENT)
