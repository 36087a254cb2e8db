"""Publish/subscribe between the server's instances: in process by default, Redis when set.

Messages are small JSON objects published after a commit ("tenant X's feed moved", "device Y
has inbox mail"). They are hints, never the data of record: a subscriber that misses one
catches up from the database, so Redis pub/sub's at-most-once delivery is enough.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

from homeport.kit.logging import get_logger

log = get_logger("homeport.broker")

Handler = Callable[[dict[str, Any]], Awaitable[None]]


class Broker(Protocol):
    async def start(self, handler: Handler) -> None: ...

    async def publish(self, message: dict[str, Any]) -> None: ...

    async def stop(self) -> None: ...


class MemoryBroker:
    """One process: a published message goes straight to this process's handler."""

    def __init__(self) -> None:
        self._handler: Handler | None = None

    async def start(self, handler: Handler) -> None:
        self._handler = handler

    async def publish(self, message: dict[str, Any]) -> None:
        if self._handler is not None:
            await self._handler(message)

    async def stop(self) -> None:
        self._handler = None


class RedisBroker:
    """Several instances: messages travel over one Redis pub/sub channel."""

    def __init__(self, client: Any, channel: str) -> None:
        self.client = client
        self.channel = channel
        self._task: asyncio.Task[None] | None = None
        self._handler: Handler | None = None

    async def start(self, handler: Handler) -> None:
        """Listens in a background task; an unreachable Redis does not stop the server (the
        task keeps trying, and readiness reports Redis as failed meanwhile)."""
        self._handler = handler
        self._task = asyncio.create_task(self._listen(), name="broker:redis")

    async def _listen(self) -> None:
        pubsub = self.client.pubsub(ignore_subscribe_messages=True)
        subscribed = False
        try:
            while True:
                try:
                    if not subscribed:
                        await pubsub.subscribe(self.channel)
                        subscribed = True
                    message = await pubsub.get_message(timeout=1.0)
                except asyncio.CancelledError:
                    raise
                except Exception:  # Redis went away: wait and subscribe again
                    log.warning("broker_redis_unavailable")
                    subscribed = False
                    await asyncio.sleep(1.0)
                    continue
                if message is None or self._handler is None:
                    continue
                try:
                    payload = json.loads(message["data"])
                except (ValueError, TypeError):
                    continue
                try:
                    await self._handler(payload)
                except Exception:
                    log.exception("broker_handler_failed")
        finally:
            with contextlib.suppress(Exception):
                await pubsub.aclose()

    async def publish(self, message: dict[str, Any]) -> None:
        try:
            await self.client.publish(self.channel, json.dumps(message, separators=(",", ":")))
        except Exception:  # subscribers catch up from the database on their next read
            log.warning("broker_publish_failed")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None


AFTER_COMMIT = "homeport_after_commit"


def publish_after_commit(session: Any, message: dict[str, Any]) -> None:
    """Queue ``message`` on the session; whoever owns the transaction publishes it after the
    commit (never before: a subscriber must find the change in the database)."""
    queued: list[dict[str, Any]] = session.info.setdefault(AFTER_COMMIT, [])
    if message not in queued:
        queued.append(message)


def take_after_commit(session: Any) -> list[dict[str, Any]]:
    messages: list[dict[str, Any]] = session.info.pop(AFTER_COMMIT, [])
    return messages
