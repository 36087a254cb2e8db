"""FastAPI dependencies that turn a request's credentials into a :class:`Principal`."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy.ext.asyncio import AsyncSession

from homeport.auth.principal import Principal
from homeport.auth.service import AuthService, checked_access_token
from homeport.auth.tokens import API_KEY_MARK, AccessClaims
from homeport.kit.errors import ErrorCode, ProblemError
from homeport.kit.security import hash_token
from homeport.state import AppState, SessionDep, StateDep, unit_of_work

_bearer = HTTPBearer(auto_error=False, description="Access token (JWT) or API key")
_api_key = APIKeyHeader(name="X-API-Key", auto_error=False, description="API key")


async def auth_service(state: StateDep, session: SessionDep) -> AuthService:
    return _auth_service(state, session)


AuthServiceDep = Annotated[AuthService, Depends(auth_service)]


async def get_principal(
    request: Request,
    state: StateDep,
    service: AuthServiceDep,
    bearer: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
    api_key: Annotated[str | None, Depends(_api_key)],
) -> Principal:
    return await _authenticate(Credentials(request, state, bearer, api_key), service)


async def _authenticate(credentials: Credentials, service: AuthService) -> Principal:
    api_key = credentials.presented_api_key
    if api_key is not None:
        principal = await service.authenticate_api_key(api_key, credentials.client_ip)
        credentials.state.verified_api_keys.add(hash_token(api_key))
        return principal
    token = credentials.access_token
    if token is None:
        raise _authentication_required()
    # The rate limiter, which runs first, verified the token already: the key ring's cache
    # answers this second check.
    return await service.authenticate_bearer(token)


PrincipalDep = Annotated[Principal, Depends(get_principal)]


def _authentication_required() -> ProblemError:
    return ProblemError(
        ErrorCode.AUTH_001, "Authentication required", headers={"WWW-Authenticate": "Bearer"}
    )


@dataclass(frozen=True)
class Credentials:
    """A request's credentials, checked in a transaction the endpoint opens anyway: the upload
    hot paths (a chunk, a tus PATCH) then run one unit of work before the body instead of
    two, and grouped writes check many at once. Nothing is trusted until a principal is
    returned."""

    request: Request
    state: AppState
    bearer: HTTPAuthorizationCredentials | None
    api_key: str | None

    @property
    def presented_api_key(self) -> str | None:
        """The API key, from ``X-API-Key`` or sent as the bearer token."""
        if self.api_key:
            return self.api_key
        if self.bearer is not None and self.bearer.credentials.startswith(API_KEY_MARK):
            return self.bearer.credentials
        return None

    @property
    def access_token(self) -> str | None:
        """The bearer token when it is an access token (no API key was presented)."""
        if self.bearer is None or self.presented_api_key is not None:
            return None
        return self.bearer.credentials

    def access_claims(self) -> AccessClaims | None:
        """The access token's claims when it is a signed, unexpired token of this server, else
        None. Its session is not checked: nothing may be trusted on these alone until
        :meth:`principal` has answered (a REST chunk or tus PATCH checks only cached, never
        changing facts with them before a body it then records in one transaction)."""
        token = self.access_token
        if token is None:
            return None
        try:
            return checked_access_token(self.state.keyring, self.state.settings, token)
        except ProblemError:
            return None

    @property
    def client_ip(self) -> str | None:
        return self.request.client.host if self.request.client else None

    async def principal(self, session: AsyncSession) -> Principal:
        return await _authenticate(self, _auth_service(self.state, session))


def _auth_service(state: AppState, session: AsyncSession) -> AuthService:
    return AuthService(session, state.settings, state.keyring, state.passwords)


async def authenticate_all(
    requests: Sequence[Credentials], session: AsyncSession
) -> list[Principal | ProblemError]:
    """Each request's principal or its problem, in ``session``: the access tokens' sessions
    are checked in one query per tenant, each distinct token once."""
    if not requests:
        return []
    service = _auth_service(requests[0].state, session)
    tokens = list(dict.fromkeys(c.access_token for c in requests if c.access_token is not None))
    by_token = dict(zip(tokens, await service.authenticate_bearers(tokens), strict=True))
    answers: list[Principal | ProblemError] = []
    for credentials in requests:
        token = credentials.access_token
        if token is not None:
            answers.append(by_token[token])
            continue
        try:  # an API key (rare on these paths), or nothing: one by one
            answers.append(await _authenticate(credentials, service))
        except ProblemError as exc:
            answers.append(exc)
    return answers


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
    if credentials.presented_api_key is None:
        token = credentials.access_token
        if token is None:
            raise _authentication_required()
        state = credentials.state
        checked_access_token(state.keyring, state.settings, token)
    return credentials


CheckedCredentialsDep = Annotated[Credentials, Depends(get_checked_credentials)]


async def read_credentials(request: Request) -> Credentials:
    """What :data:`CredentialsDep` gives, for a direct route (``kit.direct``)."""
    return await get_credentials(request, await _bearer(request), await _api_key(request))


async def read_checked_credentials(request: Request) -> Credentials:
    """What :data:`CheckedCredentialsDep` gives, for a direct route (``kit.direct``): the same
    callables FastAPI would solve, called in the same order."""
    return await get_checked_credentials(request, await _bearer(request), await _api_key(request))


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
