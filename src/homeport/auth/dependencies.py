"""FastAPI dependencies that turn a request's credentials into a :class:`Principal`."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy.ext.asyncio import AsyncSession

from homeport.auth.principal import Principal
from homeport.auth.service import AuthService, checked_access_token
from homeport.auth.tokens import API_KEY_MARK
from homeport.kit.errors import ErrorCode, ProblemError
from homeport.kit.security import hash_token
from homeport.state import AppState, SessionDep, StateDep, unit_of_work

_bearer = HTTPBearer(auto_error=False, description="Access token (JWT) or API key")
_api_key = APIKeyHeader(name="X-API-Key", auto_error=False, description="API key")


async def auth_service(state: StateDep, session: SessionDep) -> AuthService:
    return AuthService(session, state.settings, state.keyring, state.passwords)


AuthServiceDep = Annotated[AuthService, Depends(auth_service)]


async def get_principal(
    request: Request,
    state: StateDep,
    service: AuthServiceDep,
    bearer: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
    api_key: Annotated[str | None, Depends(_api_key)],
) -> Principal:
    return await _authenticate(request, state, service, bearer, api_key)


async def _authenticate(
    request: Request,
    state: AppState,
    service: AuthService,
    bearer: HTTPAuthorizationCredentials | None,
    api_key: str | None,
) -> Principal:
    client_ip = request.client.host if request.client else None
    if not api_key and bearer is not None and bearer.credentials.startswith(API_KEY_MARK):
        api_key = bearer.credentials
    if api_key:
        principal = await service.authenticate_api_key(api_key, client_ip)
        state.verified_api_keys.add(hash_token(api_key))
        return principal
    if bearer is None:
        raise _authentication_required()
    # The rate limiter, which runs first, verified the token already: the key ring's cache
    # answers this second check.
    return await service.authenticate_bearer(bearer.credentials)


PrincipalDep = Annotated[Principal, Depends(get_principal)]


def _authentication_required() -> ProblemError:
    return ProblemError(
        ErrorCode.AUTH_001, "Authentication required", headers={"WWW-Authenticate": "Bearer"}
    )


# A request's bearer token, API key and client address.
Identity = tuple[str | None, str | None, str | None]


@dataclass(frozen=True)
class Credentials:
    """A request's credentials, checked in a transaction the endpoint opens anyway: the upload
    hot paths (a chunk, a tus PATCH) then run one unit of work before the body instead of
    two. Nothing is trusted until :meth:`principal` returned."""

    request: Request
    state: AppState
    bearer: HTTPAuthorizationCredentials | None
    api_key: str | None

    @property
    def identity(self) -> Identity:
        """What the principal depends on: requests with the same identity are the same caller
        (a grouped write checks it once)."""
        client_ip = self.request.client.host if self.request.client else None
        return (self.bearer.credentials if self.bearer else None, self.api_key, client_ip)

    async def principal(self, session: AsyncSession) -> Principal:
        state = self.state
        service = AuthService(session, state.settings, state.keyring, state.passwords)
        return await _authenticate(self.request, state, service, self.bearer, self.api_key)


BearerDep = Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)]
ApiKeyDep = Annotated[str | None, Depends(_api_key)]


async def get_credentials(request: Request, bearer: BearerDep, api_key: ApiKeyDep) -> Credentials:
    # The state straight from the app, not through a dependency of its own: on the hot write
    # paths each dependency FastAPI solves costs more than what it computes.
    return Credentials(request, request.app.state.homeport, bearer, api_key)


CredentialsDep = Annotated[Credentials, Depends(get_credentials)]


async def get_checked_credentials(
    request: Request, bearer: BearerDep, api_key: ApiKeyDep
) -> Credentials:
    """Credentials that are present and, for an access token, signed, unexpired and of this
    server (no database yet; the session is checked with the work): a request without them
    gets its 401 before its body is read."""
    credentials = await get_credentials(request, bearer, api_key)
    if not api_key and bearer is None:
        raise _authentication_required()
    if not api_key and bearer is not None and not bearer.credentials.startswith(API_KEY_MARK):
        state = credentials.state
        checked_access_token(state.keyring, state.settings, bearer.credentials)
    return credentials


CheckedCredentialsDep = Annotated[Credentials, Depends(get_checked_credentials)]


async def get_principal_briefly(credentials: CredentialsDep) -> Principal:
    """Like :func:`get_principal` in a transaction of its own that ends at once, for
    endpoints that must not hold one while a large body streams in (uploads)."""
    async with unit_of_work(credentials.state) as session:
        return await credentials.principal(session)


BriefPrincipalDep = Annotated[Principal, Depends(get_principal_briefly)]


async def require_platform_admin(principal: PrincipalDep) -> Principal:
    if not principal.is_platform_admin:
        raise ProblemError(ErrorCode.AUTH_006, "Only a platform admin can do this")
    return principal


PlatformAdminDep = Annotated[Principal, Depends(require_platform_admin)]
