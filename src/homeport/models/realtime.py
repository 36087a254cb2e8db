"""The durable per-device inbox (remote commands, notifications) delivered over the WebSocket."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, Index, Integer, String
from sqlalchemy.orm import Mapped, mapped_column

from homeport.kit.db import Base, UTCDateTime


class InboxMessage(Base):
    __tablename__ = "device_inbox"
    __table_args__ = (Index("ix_device_inbox_device", "tenant_id", "device_id", "acked_at"),)

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    tenant_id: Mapped[str] = mapped_column(String(36))
    device_id: Mapped[str] = mapped_column(String(200))
    kind: Mapped[str] = mapped_column(String(63))
    body: Mapped[dict[str, Any]] = mapped_column(JSON)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime)
    deliveries: Mapped[int] = mapped_column(Integer, default=0)
    last_delivered_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    acked_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
