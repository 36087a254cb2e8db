"""The durable per-device inbox: messages wait in the database until the device acknowledges
them or they expire, and are (re)delivered whenever the device is connected."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from homeport.kit.broker import publish_after_commit
from homeport.kit.clock import utcnow
from homeport.kit.ids import new_id
from homeport.kit.tenancy import tenant_select, tenant_update, unscoped_delete
from homeport.models.realtime import InboxMessage

DEFAULT_TTL = timedelta(days=7)
# A delivered message not acknowledged within this time is sent again.
REDELIVERY_AFTER = timedelta(seconds=60)


class InboxRepository:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    def add(self, message: InboxMessage) -> None:
        self.session.add(message)

    async def due(
        self, tenant_id: str, device_id: str, now: datetime, *, redelivery_before: datetime
    ) -> Sequence[InboxMessage]:
        """Unacknowledged, unexpired messages never delivered or delivered long enough ago."""
        never = InboxMessage.last_delivered_at.is_(None)
        result = await self.session.execute(
            tenant_select(InboxMessage, tenant_id)
            .where(
                InboxMessage.device_id == device_id,
                InboxMessage.acked_at.is_(None),
                InboxMessage.expires_at > now,
                never | (InboxMessage.last_delivered_at < redelivery_before),
            )
            .order_by(InboxMessage.created_at)
            .limit(100)
        )
        return result.scalars().all()

    async def mark_delivered(self, tenant_id: str, ids: list[str], now: datetime) -> None:
        if ids:
            await self.session.execute(
                tenant_update(InboxMessage, tenant_id)
                .where(InboxMessage.id.in_(ids))
                .values(deliveries=InboxMessage.deliveries + 1, last_delivered_at=now)
            )

    async def acknowledge(
        self, tenant_id: str, device_id: str, ids: list[str], now: datetime
    ) -> int:
        if not ids:
            return 0
        result = await self.session.execute(
            tenant_update(InboxMessage, tenant_id)
            .where(
                InboxMessage.device_id == device_id,
                InboxMessage.id.in_(ids),
                InboxMessage.acked_at.is_(None),
            )
            .values(acked_at=now)
        )
        return int(result.rowcount)  # type: ignore[attr-defined]

    async def delete_finished(self, before: datetime) -> int:
        result = await self.session.execute(
            unscoped_delete(InboxMessage, reason="expiry over every tenant").where(
                (InboxMessage.expires_at < before)
                | (InboxMessage.acked_at.is_not(None) & (InboxMessage.acked_at < before))
            )
        )
        return int(result.rowcount)  # type: ignore[attr-defined]


def enqueue_inbox(
    session: AsyncSession,
    tenant_id: str,
    device_id: str,
    kind: str,
    body: dict[str, Any],
    ttl: timedelta = DEFAULT_TTL,
) -> InboxMessage:
    """The internal service API: store a message for a device in the caller's transaction; it
    is delivered after commit if the device is connected, else when it connects."""
    now = utcnow()
    message = InboxMessage(
        id=new_id(),
        tenant_id=tenant_id,
        device_id=device_id,
        kind=kind,
        body=body,
        created_at=now,
        expires_at=now + ttl,
        deliveries=0,
        last_delivered_at=None,
        acked_at=None,
    )
    InboxRepository(session).add(message)
    publish_after_commit(session, {"kind": "inbox", "tenant_id": tenant_id, "device_id": device_id})
    return message


def inbox_payload(message: InboxMessage) -> dict[str, Any]:
    return {
        "message_id": message.id,
        "kind": message.kind,
        "body": message.body,
        "expires_at": message.expires_at.isoformat().replace("+00:00", "Z"),
    }
