"""HTTP face of auth: login, refresh, logout, me, device sessions, API keys, invitations."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import Path, Request, Response, status
from fastapi.responses import JSONResponse

from homeport.auth.dependencies import AuthServiceDep, PrincipalDep
from homeport.auth.schemas import (
    ApiKeyCreate,
    ApiKeyCreated,
    ApiKeyList,
    ApiKeyOut,
    InvitationAccept,
    InvitationAccepted,
    LoginRequest,
    MeResponse,
    RefreshRequest,
    SessionList,
    SessionOut,
    TokenResponse,
)
from homeport.auth.service import IssuedTokens, LoginRefused
from homeport.kit.errors import ErrorCode
from homeport.kit.problems import problem_response, responses
from homeport.kit.routing import api_router
from homeport.models.auth import ApiKey
from homeport.state import SessionDep, StateDep
from homeport.tenants.service import TenantService

router = api_router(prefix="/api/v1", tags=["auth"])

ObjectId = Annotated[str, Path(min_length=1, max_length=64)]


def _tokens(result: IssuedTokens | LoginRefused, request: Request) -> TokenResponse | JSONResponse:
    if isinstance(result, LoginRefused):
        # Returned, not raised: the failure counter / revocation must commit.
        return problem_response(result.error, request)
    return TokenResponse(
        access_token=result.access_token,
        refresh_token=result.refresh_token,
        expires_in=result.expires_in,
        session_id=result.session_id,
        tenant_id=result.tenant_id,
    )


@router.post(
    "/auth/login",
    response_model=TokenResponse,
    responses=responses(ErrorCode.AUTH_004, ErrorCode.AUTH_005, ErrorCode.AUTH_007),
    summary="Log in on a device",
)
async def login(body: LoginRequest, request: Request, service: AuthServiceDep) -> Any:
    result = await service.login(
        email=body.email,
        password=body.password,
        device_id=body.device_id,
        tenant_slug=body.tenant,
        ip=request.client.host if request.client else None,
        user_agent=request.headers.get("user-agent"),
    )
    return _tokens(result, request)


@router.post(
    "/auth/refresh",
    response_model=TokenResponse,
    responses=responses(ErrorCode.AUTH_001, ErrorCode.AUTH_002, ErrorCode.AUTH_003),
    summary="Rotate the refresh token and get a new access token",
)
async def refresh(body: RefreshRequest, request: Request, service: AuthServiceDep) -> Any:
    return _tokens(await service.refresh(body.refresh_token), request)


@router.post(
    "/auth/logout",
    status_code=status.HTTP_204_NO_CONTENT,
    responses=responses(ErrorCode.AUTH_001),
    summary="End this device's session",
)
async def logout(principal: PrincipalDep, service: AuthServiceDep) -> Response:
    await service.logout(principal)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.get("/auth/me", response_model=MeResponse, responses=responses(ErrorCode.AUTH_001))
async def me(principal: PrincipalDep, service: AuthServiceDep) -> MeResponse:
    tenant, user = await service.describe(principal)
    return MeResponse(
        kind="user" if principal.is_user else "api_key",
        tenant_id=tenant.id,
        tenant_slug=tenant.slug,
        user_id=principal.user_id,
        email=user.email if user else None,
        display_name=user.display_name if user else None,
        role=principal.role.value if principal.role else None,
        is_platform_admin=principal.is_platform_admin,
        session_id=principal.session_id,
        device_id=principal.device_id,
        api_key_id=principal.api_key_id,
        scopes=sorted(principal.scopes),
    )


@router.get("/auth/sessions", response_model=SessionList, responses=responses(ErrorCode.AUTH_001))
async def list_sessions(principal: PrincipalDep, service: AuthServiceDep) -> SessionList:
    sessions = await service.list_sessions(principal)
    return SessionList(
        sessions=[
            SessionOut(
                id=item.id,
                device_id=item.device_id,
                user_agent=item.user_agent,
                ip_address=item.ip_address,
                created_at=item.created_at,
                last_seen_at=item.last_seen_at,
                expires_at=item.expires_at,
                current=item.id == principal.session_id,
            )
            for item in sessions
        ]
    )


@router.delete(
    "/auth/sessions/{session_id}",
    status_code=status.HTTP_204_NO_CONTENT,
    responses=responses(ErrorCode.AUTH_001, ErrorCode.NOT_FOUND),
    summary="Revoke one of your device sessions",
)
async def revoke_session(
    session_id: ObjectId, principal: PrincipalDep, service: AuthServiceDep
) -> Response:
    await service.revoke_session(principal, session_id)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


def _api_key_out(api_key: ApiKey) -> dict[str, Any]:
    return {
        "id": api_key.id,
        "name": api_key.name,
        "prefix": api_key.prefix,
        "scopes": list(api_key.scopes),
        "allowed_ips": list(api_key.allowed_ips),
        "created_at": api_key.created_at,
        "expires_at": api_key.expires_at,
        "last_used_at": api_key.last_used_at,
        "revoked_at": api_key.revoked_at,
    }


@router.post(
    "/api-keys",
    response_model=ApiKeyCreated,
    status_code=status.HTTP_201_CREATED,
    responses=responses(ErrorCode.AUTH_001, ErrorCode.AUTH_006),
    tags=["api-keys"],
    summary="Create an API key (the key is shown once)",
)
async def create_api_key(
    body: ApiKeyCreate, principal: PrincipalDep, service: AuthServiceDep
) -> ApiKeyCreated:
    api_key, key = await service.create_api_key(
        principal,
        name=body.name,
        scopes=body.scopes,
        expires_at=body.expires_at,
        allowed_ips=body.allowed_ips,
    )
    return ApiKeyCreated(key=key, **_api_key_out(api_key))


@router.get(
    "/api-keys",
    response_model=ApiKeyList,
    responses=responses(ErrorCode.AUTH_001, ErrorCode.AUTH_006),
    tags=["api-keys"],
)
async def list_api_keys(principal: PrincipalDep, service: AuthServiceDep) -> ApiKeyList:
    keys = await service.list_api_keys(principal)
    return ApiKeyList(api_keys=[ApiKeyOut(**_api_key_out(key)) for key in keys])


@router.delete(
    "/api-keys/{key_id}",
    response_model=ApiKeyOut,
    responses=responses(ErrorCode.AUTH_001, ErrorCode.AUTH_006, ErrorCode.NOT_FOUND),
    tags=["api-keys"],
    summary="Revoke an API key",
)
async def revoke_api_key(
    key_id: ObjectId, principal: PrincipalDep, service: AuthServiceDep
) -> ApiKeyOut:
    return ApiKeyOut(**_api_key_out(await service.revoke_api_key(principal, key_id)))


@router.post(
    "/auth/invitations/accept",
    response_model=InvitationAccepted,
    responses=responses(ErrorCode.AUTH_009),
    summary="Accept an invitation and set your password",
)
async def accept_invitation(
    body: InvitationAccept, state: StateDep, session: SessionDep
) -> InvitationAccepted:
    service = TenantService(session, state.passwords, state.settings.invitation_ttl_seconds)
    tenant, user = await service.accept_invitation(body.token, body.password, body.display_name)
    return InvitationAccepted(
        accepted=True, tenant_id=tenant.id, tenant_slug=tenant.slug, email=user.email
    )
