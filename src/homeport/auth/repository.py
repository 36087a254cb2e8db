"""All SQL of the auth domain: device sessions, refresh tokens, API keys, login throttles."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import bindparam, case, delete
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.ext.asyncio import AsyncSession

from homeport.kit.db import one_of
from homeport.kit.tenancy import (
    tenant_delete,
    tenant_select,
    tenant_select_columns,
    tenant_update,
    unscoped_delete,
    unscoped_select,
)
from homeport.models.auth import ApiKey, DeviceSession, RefreshToken
from homeport.models.tenants import LoginThrottle, Membership, User


@dataclass(frozen=True)
class SessionCredentials:
    session_id: str
    user_id: str
    device_id: str
    revoked_at: datetime | None
    expires_at: datetime
    role: str
    user_disabled_at: datetime | None
    is_platform_admin: bool


# Built once: constructing this join on every request cost more than running it (py-spy, W0).
# By one session id (every request), or by a list of them (grouped writes).
def _session_credentials(session_match: Any) -> Any:
    return (
        tenant_select_columns(
            DeviceSession,
            bindparam("tenant_id"),
            DeviceSession.id,
            DeviceSession.user_id,
            DeviceSession.device_id,
            DeviceSession.revoked_at,
            DeviceSession.expires_at,
            Membership.role,
            User.disabled_at,
            User.is_platform_admin,
        )
        .join(
            Membership,
            (Membership.tenant_id == DeviceSession.tenant_id)
            & (Membership.user_id == DeviceSession.user_id),
        )
        .join(User, User.id == DeviceSession.user_id)
        .where(session_match)
    )


_SESSION_CREDENTIALS = _session_credentials(DeviceSession.id == bindparam("session_id"))
_SESSIONS_CREDENTIALS = {
    dialect: _session_credentials(match)
    for dialect, match in one_of(DeviceSession.id, "session_ids").items()
}


class AuthRepository:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    # Login throttling (platform-level: keyed by a hash of the email)

    async def get_throttle(self, email_hash: str) -> LoginThrottle | None:
        return await self.session.get(LoginThrottle, email_hash)

    async def record_failed_login(
        self, email_hash: str, now: datetime, window_start: datetime
    ) -> int:
        """Count a failure atomically (concurrent failures must not collide); returns the count."""
        dialect = self.session.get_bind().dialect.name
        insert = pg_insert if dialect == "postgresql" else sqlite_insert
        values = insert(LoginThrottle).values(
            email_hash=email_hash, failed_count=1, last_failed_at=now
        )
        table = LoginThrottle.__table__
        statement = values.on_conflict_do_update(
            index_elements=[table.c.email_hash],
            set_={
                "failed_count": case(
                    (table.c.last_failed_at < window_start, 1),
                    else_=table.c.failed_count + 1,
                ),
                "last_failed_at": now,
            },
        ).returning(table.c.failed_count)
        result = await self.session.execute(statement)
        return int(result.scalar_one())

    async def lock_login(self, email_hash: str, until: datetime) -> None:
        throttle = await self.session.get(LoginThrottle, email_hash)
        if throttle is not None:
            throttle.locked_until = until
            throttle.failed_count = 0

    async def clear_throttle(self, email_hash: str) -> None:
        await self.session.execute(
            delete(LoginThrottle).where(LoginThrottle.email_hash == email_hash)
        )

    async def delete_stale_throttles(self, before: datetime) -> int:
        result = await self.session.execute(
            delete(LoginThrottle).where(
                LoginThrottle.last_failed_at < before,
                (LoginThrottle.locked_until.is_(None)) | (LoginThrottle.locked_until < before),
            )
        )
        return int(result.rowcount)  # type: ignore[attr-defined]

    # Device sessions

    async def add_session(self, device_session: DeviceSession) -> None:
        self.session.add(device_session)

    async def get_session(self, tenant_id: str, session_id: str) -> DeviceSession | None:
        result = await self.session.execute(
            tenant_select(DeviceSession, tenant_id).where(DeviceSession.id == session_id)
        )
        return result.scalar_one_or_none()

    async def get_session_with_role(
        self, tenant_id: str, session_id: str
    ) -> tuple[DeviceSession, str] | None:
        """The session and the user's current role (a demotion applies at once)."""
        result = await self.session.execute(
            tenant_select(DeviceSession, tenant_id)
            .add_columns(Membership.role)
            .join(
                Membership,
                (Membership.tenant_id == DeviceSession.tenant_id)
                & (Membership.user_id == DeviceSession.user_id),
            )
            .where(DeviceSession.id == session_id)
        )
        row = result.first()
        return None if row is None else (row[0], row[1])

    async def find_session_credentials(
        self, tenant_id: str, session_id: str
    ) -> SessionCredentials | None:
        """Everything an access token is checked against, in one query (every request runs it)."""
        # On the connection: plain columns need none of the ORM's result machinery.
        connection = await self.session.connection()
        result = await connection.execute(
            _SESSION_CREDENTIALS, {"tenant_id": tenant_id, "session_id": session_id}
        )
        row = result.first()
        return None if row is None else SessionCredentials(*row)

    async def find_sessions_credentials(
        self, tenant_id: str, session_ids: Sequence[str]
    ) -> dict[str, SessionCredentials]:
        """The same for several sessions of a tenant, in one query, by session id."""
        connection = await self.session.connection()
        result = await connection.execute(
            _SESSIONS_CREDENTIALS[connection.dialect.name],
            {"tenant_id": tenant_id, "session_ids": list(session_ids)},
        )
        return {row[0]: SessionCredentials(*row) for row in result}

    async def device_known(self, tenant_id: str, device_id: str) -> bool:
        """Whether the device ever logged in to the tenant (its sessions are kept a while)."""
        result = await self.session.execute(
            tenant_select_columns(DeviceSession, tenant_id, DeviceSession.id)
            .where(DeviceSession.device_id == device_id)
            .limit(1)
        )
        return result.first() is not None

    async def active_sessions(
        self, tenant_id: str, user_id: str, now: datetime
    ) -> Sequence[DeviceSession]:
        result = await self.session.execute(
            tenant_select(DeviceSession, tenant_id)
            .where(
                DeviceSession.user_id == user_id,
                DeviceSession.revoked_at.is_(None),
                DeviceSession.expires_at > now,
            )
            .order_by(DeviceSession.last_seen_at.desc())
        )
        return result.scalars().all()

    async def revoke_device_sessions(
        self, tenant_id: str, user_id: str, device_id: str | None, now: datetime, reason: str
    ) -> int:
        statement = tenant_update(DeviceSession, tenant_id).where(
            DeviceSession.user_id == user_id, DeviceSession.revoked_at.is_(None)
        )
        if device_id is not None:
            statement = statement.where(DeviceSession.device_id == device_id)
        result = await self.session.execute(
            statement.values(revoked_at=now, revoked_reason=reason).execution_options(
                synchronize_session=False
            )
        )
        return int(result.rowcount)  # type: ignore[attr-defined]

    async def revoke_session(
        self, tenant_id: str, session_id: str, now: datetime, reason: str
    ) -> int:
        result = await self.session.execute(
            tenant_update(DeviceSession, tenant_id)
            .where(DeviceSession.id == session_id, DeviceSession.revoked_at.is_(None))
            .values(revoked_at=now, revoked_reason=reason)
            .execution_options(synchronize_session=False)
        )
        return int(result.rowcount)  # type: ignore[attr-defined]

    async def delete_expired_sessions(self, before: datetime) -> int:
        """Sessions expired or revoked before ``before`` (cleanup job; spans all tenants)."""
        result = await self.session.execute(
            unscoped_delete(DeviceSession, reason="cleanup job spans all tenants").where(
                (DeviceSession.expires_at < before) | (DeviceSession.revoked_at < before)
            )
        )
        return int(result.rowcount)  # type: ignore[attr-defined]

    async def delete_dead_refresh_tokens(self, before: datetime) -> int:
        result = await self.session.execute(
            unscoped_delete(RefreshToken, reason="cleanup job spans all tenants").where(
                RefreshToken.expires_at < before
            )
        )
        return int(result.rowcount)  # type: ignore[attr-defined]

    # Refresh tokens

    async def add_refresh_token(self, token: RefreshToken) -> None:
        self.session.add(token)

    async def find_refresh_token(self, token_hash: str) -> RefreshToken | None:
        result = await self.session.execute(
            unscoped_select(RefreshToken, reason="the token itself identifies its tenant").where(
                RefreshToken.token_hash == token_hash
            )
        )
        return result.scalar_one_or_none()

    async def mark_refresh_token_used(self, tenant_id: str, token_id: str, now: datetime) -> bool:
        """Compare-and-set so two concurrent refreshes cannot both rotate one token."""
        result = await self.session.execute(
            tenant_update(RefreshToken, tenant_id)
            .where(RefreshToken.id == token_id, RefreshToken.used_at.is_(None))
            .values(used_at=now)
            .execution_options(synchronize_session=False)
        )
        return int(result.rowcount) == 1  # type: ignore[attr-defined]

    # API keys

    async def add_api_key(self, api_key: ApiKey) -> None:
        self.session.add(api_key)

    async def find_api_key_by_prefix(self, prefix: str) -> ApiKey | None:
        result = await self.session.execute(
            unscoped_select(ApiKey, reason="the key's prefix identifies its tenant").where(
                ApiKey.prefix == prefix
            )
        )
        return result.scalar_one_or_none()

    async def list_api_keys(self, tenant_id: str) -> Sequence[ApiKey]:
        result = await self.session.execute(
            tenant_select(ApiKey, tenant_id).order_by(ApiKey.created_at.desc())
        )
        return result.scalars().all()

    async def get_api_key(self, tenant_id: str, key_id: str) -> ApiKey | None:
        result = await self.session.execute(
            tenant_select(ApiKey, tenant_id).where(ApiKey.id == key_id)
        )
        return result.scalar_one_or_none()

    async def touch_api_key(self, tenant_id: str, key_id: str, now: datetime) -> None:
        await self.session.execute(
            tenant_update(ApiKey, tenant_id)
            .where(ApiKey.id == key_id)
            .values(last_used_at=now)
            .execution_options(synchronize_session=False)
        )

    async def delete_sessions_of_user(self, tenant_id: str, user_id: str) -> None:
        await self.session.execute(
            tenant_delete(DeviceSession, tenant_id).where(DeviceSession.user_id == user_id)
        )
