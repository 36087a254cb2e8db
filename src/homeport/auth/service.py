"""Rules for logging in, device sessions, token rotation and API keys."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from ipaddress import ip_address, ip_network

from sqlalchemy.ext.asyncio import AsyncSession

from homeport.auth.principal import API_KEY_SCOPES, Permission, Principal, Role
from homeport.auth.repository import AuthRepository, SessionCredentials
from homeport.auth.tokens import (
    API_KEY_MARK,
    REFRESH_MARK,
    AccessClaims,
    issue_access_token,
    read_access_token,
)
from homeport.config import Settings
from homeport.kit.clock import utcnow
from homeport.kit.errors import ErrorCode, ProblemError, not_found
from homeport.kit.ids import new_id
from homeport.kit.security import (
    KeyRing,
    PasswordHashing,
    TokenError,
    constant_time_equal,
    hash_token,
    new_secret,
)
from homeport.models.auth import ApiKey, DeviceSession, RefreshToken
from homeport.models.tenants import Tenant, User
from homeport.tenants.repository import TenantRepository

API_KEY_TOUCH_INTERVAL = timedelta(minutes=1)


@dataclass(frozen=True)
class IssuedTokens:
    access_token: str
    refresh_token: str
    expires_in: int
    session_id: str
    tenant_id: str


@dataclass(frozen=True)
class LoginRefused:
    """A refusal that must still commit (the failure counter, a revoked session)."""

    error: ProblemError


class AuthService:
    def __init__(
        self,
        session: AsyncSession,
        settings: Settings,
        keyring: KeyRing,
        passwords: PasswordHashing,
    ) -> None:
        self.session = session
        self.settings = settings
        self.keyring = keyring
        self.passwords = passwords
        self.repository = AuthRepository(session)
        self.tenants = TenantRepository(session)

    # Login

    @staticmethod
    def _email_key(email: str) -> str:
        return hashlib.sha256(email.encode("utf-8")).hexdigest()

    async def login(
        self,
        *,
        email: str,
        password: str,
        device_id: str,
        tenant_slug: str | None,
        ip: str | None,
        user_agent: str | None,
    ) -> IssuedTokens | LoginRefused:
        now = utcnow()
        email_key = self._email_key(email)
        throttle = await self.repository.get_throttle(email_key)
        if throttle is not None and throttle.locked_until and throttle.locked_until > now:
            retry_after = int((throttle.locked_until - now).total_seconds()) + 1
            raise ProblemError(
                ErrorCode.AUTH_005,
                "Too many failed logins. Try again later.",
                headers={"Retry-After": str(retry_after)},
            )
        user = await self.tenants.get_user_by_email(email)
        password_ok = await self.passwords.verify(user.password_hash if user else None, password)
        if user is None or not password_ok or user.disabled_at is not None:
            return await self._refuse(email_key, now)
        tenant, role = await self._tenant_for_login(user, tenant_slug)
        if tenant is None or role is None:
            return await self._refuse(email_key, now)
        await self.repository.clear_throttle(email_key)
        # One live session per device: logging in again replaces the old one. Logins of one
        # person queue on their user row (PostgreSQL; SQLite has one writer), so each one
        # sees, and ends, the session the one before it made.
        await self.tenants.lock_user(user.id)
        if user.password_hash and self.passwords.needs_rehash(user.password_hash):
            user.password_hash = await self.passwords.hash(password)
        await self.repository.revoke_device_sessions(tenant.id, user.id, device_id, now, "replaced")
        device_session = DeviceSession(
            id=new_id(),
            tenant_id=tenant.id,
            user_id=user.id,
            device_id=device_id,
            user_agent=(user_agent or "")[:400] or None,
            ip_address=ip,
            created_at=now,
            last_seen_at=now,
            expires_at=now + timedelta(seconds=self.settings.refresh_token_ttl_seconds),
        )
        await self.repository.add_session(device_session)
        return await self._issue(device_session, role, now)

    async def _refuse(self, email_key: str, now: datetime) -> LoginRefused:
        window = timedelta(seconds=self.settings.login_lockout_seconds)
        failures = await self.repository.record_failed_login(email_key, now, now - window)
        if failures >= self.settings.login_max_failures:
            await self.repository.lock_login(email_key, now + window)
        return LoginRefused(ProblemError(ErrorCode.AUTH_004, "Wrong email or password"))

    async def _tenant_for_login(
        self, user: User, tenant_slug: str | None
    ) -> tuple[Tenant | None, str | None]:
        memberships = await self.tenants.tenants_of_user(user.id)
        if tenant_slug is not None:
            for tenant, role in memberships:
                if tenant.slug == tenant_slug:
                    return tenant, role
            return None, None
        if len(memberships) == 1:
            return memberships[0]
        if not memberships:
            return None, None
        raise ProblemError(
            ErrorCode.AUTH_007,
            "This account belongs to several tenants; say which one with 'tenant'",
            extra={"tenants": [tenant.slug for tenant, _ in memberships]},
        )

    async def _issue(self, device_session: DeviceSession, role: str, now: datetime) -> IssuedTokens:
        refresh_token = f"{REFRESH_MARK}{new_secret()}"
        await self.repository.add_refresh_token(
            RefreshToken(
                id=new_id(),
                tenant_id=device_session.tenant_id,
                session_id=device_session.id,
                token_hash=hash_token(refresh_token),
                created_at=now,
                expires_at=device_session.expires_at,
            )
        )
        access_token = issue_access_token(
            self.keyring,
            issuer=self.settings.jwt_issuer,
            ttl_seconds=self.settings.access_token_ttl_seconds,
            now=now,
            user_id=device_session.user_id,
            tenant_id=device_session.tenant_id,
            session_id=device_session.id,
            device_id=device_session.device_id,
            role=role,
        )
        return IssuedTokens(
            access_token=access_token,
            refresh_token=refresh_token,
            expires_in=self.settings.access_token_ttl_seconds,
            session_id=device_session.id,
            tenant_id=device_session.tenant_id,
        )

    # Refresh with rotation and reuse detection

    async def refresh(self, refresh_token: str) -> IssuedTokens | LoginRefused:
        now = utcnow()
        stored = await self.repository.find_refresh_token(hash_token(refresh_token))
        if stored is None:
            raise ProblemError(ErrorCode.AUTH_001, "Unknown refresh token")
        found = await self.repository.get_session_with_role(stored.tenant_id, stored.session_id)
        if found is None:
            raise ProblemError(ErrorCode.AUTH_001, "The session of this token has ended")
        device_session, role = found
        if device_session.revoked_at is not None:
            raise ProblemError(ErrorCode.AUTH_001, "The session of this token was revoked")
        reused = stored.used_at is not None or not await self.repository.mark_refresh_token_used(
            stored.tenant_id, stored.id, now
        )
        if reused:
            # A used token came back: someone holds a copy. End the whole session.
            await self.repository.revoke_session(
                device_session.tenant_id, device_session.id, now, "refresh_reuse"
            )
            return LoginRefused(
                ProblemError(
                    ErrorCode.AUTH_003,
                    "This refresh token was already used; the session has been revoked",
                )
            )
        if stored.expires_at <= now or device_session.expires_at <= now:
            raise ProblemError(ErrorCode.AUTH_002, "The refresh token has expired")
        device_session.last_seen_at = now
        return await self._issue(device_session, role, now)

    async def logout(self, principal: Principal) -> None:
        if principal.session_id is None:
            raise ProblemError(ErrorCode.VALIDATION_003, "API keys have no session to end")
        await self.repository.revoke_session(
            principal.tenant_id, principal.session_id, utcnow(), "logout"
        )

    # Authentication of requests

    async def authenticate_bearer(self, token: str) -> Principal:
        claims = checked_access_token(self.keyring, self.settings, token)
        found = await self.repository.find_session_credentials(claims.tenant_id, claims.session_id)
        return _session_principal(claims, found)

    async def authenticate_bearers(self, tokens: Sequence[str]) -> list[Principal | ProblemError]:
        """Each access token's principal or its 401 problem, with one session query per
        tenant for all of them (a group of writes of many callers)."""
        checked: list[AccessClaims | ProblemError] = []
        sessions: dict[str, list[str]] = {}
        for token in tokens:
            try:
                claims = checked_access_token(self.keyring, self.settings, token)
            except ProblemError as exc:
                checked.append(exc)
                continue
            checked.append(claims)
            sessions.setdefault(claims.tenant_id, []).append(claims.session_id)
        found: dict[tuple[str, str], SessionCredentials] = {}
        for tenant_id, session_ids in sessions.items():
            rows = await self.repository.find_sessions_credentials(tenant_id, session_ids)
            found.update(((tenant_id, session_id), row) for session_id, row in rows.items())
        answers: list[Principal | ProblemError] = []
        for entry in checked:
            if isinstance(entry, ProblemError):
                answers.append(entry)
                continue
            try:
                row = found.get((entry.tenant_id, entry.session_id))
                answers.append(_session_principal(entry, row))
            except ProblemError as exc:
                answers.append(exc)
        return answers

    async def authenticate_api_key(self, key: str, client_ip: str | None) -> Principal:
        prefix, _, secret = key.removeprefix(API_KEY_MARK).partition("_")
        api_key = await self.repository.find_api_key_by_prefix(prefix) if secret else None
        if api_key is None or not constant_time_equal(api_key.key_hash, hash_token(key)):
            raise ProblemError(ErrorCode.AUTH_001, "Invalid API key")
        now = utcnow()
        if api_key.revoked_at is not None:
            raise ProblemError(ErrorCode.AUTH_001, "API key revoked")
        if api_key.expires_at is not None and api_key.expires_at <= now:
            raise ProblemError(ErrorCode.AUTH_002, "API key expired")
        if api_key.allowed_ips and not _ip_allowed(client_ip, api_key.allowed_ips):
            raise ProblemError(ErrorCode.AUTH_008, "This API key is not allowed from your address")
        if api_key.last_used_at is None or api_key.last_used_at < now - API_KEY_TOUCH_INTERVAL:
            await self.repository.touch_api_key(api_key.tenant_id, api_key.id, now)
        return Principal(
            kind="api_key",
            tenant_id=api_key.tenant_id,
            api_key_id=api_key.id,
            scopes=frozenset(api_key.scopes),
        )

    # Sessions

    async def list_sessions(self, principal: Principal) -> list[DeviceSession]:
        user_id = self._user_of(principal)
        return list(await self.repository.active_sessions(principal.tenant_id, user_id, utcnow()))

    async def revoke_session(self, principal: Principal, session_id: str) -> None:
        user_id = self._user_of(principal)
        device_session = await self.repository.get_session(principal.tenant_id, session_id)
        if device_session is None or device_session.user_id != user_id:
            raise not_found("Session")
        await self.repository.revoke_session(principal.tenant_id, session_id, utcnow(), "revoked")

    @staticmethod
    def _user_of(principal: Principal) -> str:
        if principal.user_id is None:
            raise ProblemError(ErrorCode.VALIDATION_003, "API keys have no device sessions")
        return principal.user_id

    # API keys

    async def create_api_key(
        self,
        principal: Principal,
        *,
        name: str,
        scopes: list[str],
        expires_at: datetime | None,
        allowed_ips: list[str],
    ) -> tuple[ApiKey, str]:
        self._require_people(principal)
        unknown = sorted(set(scopes) - {scope.value for scope in API_KEY_SCOPES})
        if unknown:
            raise ProblemError(
                ErrorCode.VALIDATION_001,
                f"Unknown scopes: {', '.join(unknown)}",
                extra={
                    "errors": [
                        {"field": "scopes", "message": f"unknown scope {s!r}"} for s in unknown
                    ],
                    "allowed_scopes": sorted(scope.value for scope in API_KEY_SCOPES),
                },
            )
        now = utcnow()
        if expires_at is not None and expires_at <= now:
            raise ProblemError(
                ErrorCode.VALIDATION_001,
                "expires_at must be in the future",
                extra={"errors": [{"field": "expires_at", "message": "must be in the future"}]},
            )
        prefix = new_secret(6).replace("-", "x").replace("_", "x")
        key = f"{API_KEY_MARK}{prefix}_{new_secret()}"
        api_key = ApiKey(
            id=new_id(),
            tenant_id=principal.tenant_id,
            name=name,
            prefix=prefix,
            key_hash=hash_token(key),
            scopes=sorted(set(scopes)),
            allowed_ips=allowed_ips,
            created_by=principal.user_id,
            created_at=now,
            expires_at=expires_at,
        )
        await self.repository.add_api_key(api_key)
        return api_key, key

    async def list_api_keys(self, principal: Principal) -> list[ApiKey]:
        self._require_people(principal)
        return list(await self.repository.list_api_keys(principal.tenant_id))

    async def revoke_api_key(self, principal: Principal, key_id: str) -> ApiKey:
        self._require_people(principal)
        api_key = await self.repository.get_api_key(principal.tenant_id, key_id)
        if api_key is None:
            raise not_found("API key")
        if api_key.revoked_at is None:
            api_key.revoked_at = utcnow()
        return api_key

    @staticmethod
    def _require_people(principal: Principal) -> None:
        if not principal.is_user:
            raise ProblemError(ErrorCode.AUTH_006, "API keys cannot manage API keys")
        principal.require(Permission.API_KEYS_MANAGE)

    async def describe(self, principal: Principal) -> tuple[Tenant, User | None]:
        tenant = await self.tenants.get_tenant(principal.tenant_id)
        if tenant is None:
            raise not_found("Tenant")
        user = await self.tenants.get_user(principal.user_id) if principal.user_id else None
        return tenant, user


def _session_principal(claims: AccessClaims, found: SessionCredentials | None) -> Principal:
    """The caller an access token names, if its session (read from the database now) still
    stands; else the 401 problem."""
    if found is None:
        raise ProblemError(ErrorCode.AUTH_001, "Session not found")
    if found.revoked_at is not None:
        raise ProblemError(ErrorCode.AUTH_001, "Session revoked")
    if found.expires_at <= utcnow():
        raise ProblemError(ErrorCode.AUTH_002, "Session expired")
    if found.user_id != claims.user_id or found.device_id != claims.device_id:
        raise ProblemError(ErrorCode.AUTH_001, "Token does not match its session")
    if found.user_disabled_at is not None:
        raise ProblemError(ErrorCode.AUTH_001, "Account disabled")
    return Principal(
        kind="user",
        tenant_id=claims.tenant_id,
        user_id=claims.user_id,
        role=Role(found.role),
        session_id=claims.session_id,
        device_id=claims.device_id,
        is_platform_admin=found.is_platform_admin,
    )


def checked_access_token(keyring: KeyRing, settings: Settings, token: str) -> AccessClaims:
    """The claims of a signed, unexpired access token of this server (its session is not
    checked here); else the 401 problem."""
    try:
        return read_access_token(keyring, token, issuer=settings.jwt_issuer)
    except TokenError as exc:
        code = ErrorCode.AUTH_002 if exc.expired else ErrorCode.AUTH_001
        raise ProblemError(code, exc.reason) from exc


def _ip_allowed(client_ip: str | None, allowed: list[str]) -> bool:
    if client_ip is None:
        return False
    try:
        address = ip_address(client_ip)
    except ValueError:
        return False
    return any(address in ip_network(network, strict=False) for network in allowed)
