"""Live fan-out on one instance: connections, one feed reader per tenant, the broker's hints.

Gapless and duplicate-free delivery comes from reading the same feed as pull, in feed order:
- After a commit anywhere, the broker carries a hint "tenant X's feed moved". This instance's
  reader for X reads the feed once from where it stopped (one query, whatever the number of
  connections) and hands every row to each connection whose scope includes it.
- A connection that subscribes first catches up from its own cursor with the same query (in the
  reader's task, so the reader cannot move meanwhile), then joins the live set. Rows at or
  before a connection's cursor are never sent to it again.
- A hint lost in transit only delays delivery: readers also look every few seconds.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from starlette.websockets import WebSocket

from homeport.auth.principal import Principal, Role
from homeport.config import Settings
from homeport.kit.broker import Broker
from homeport.kit.clock import utcnow
from homeport.kit.db import Database
from homeport.kit.logging import get_logger
from homeport.realtime import protocol
from homeport.realtime.inbox import REDELIVERY_AFTER, InboxRepository, inbox_payload
from homeport.sync.cursor import FeedPoint, encode_cursor
from homeport.sync.repository import FeedRow, SyncRepository
from homeport.sync.rules import Reach, read_reach

log = get_logger("homeport.realtime")

PAGE = 500
SAFETY_POLL_SECONDS = 2.0


class Visibility(enum.Enum):
    HIDDEN = "hidden"
    SHOWN = "shown"
    GONE = "gone"


def _visible(
    connection: Connection, rows: Sequence[FeedRow], reach: dict[str, Reach]
) -> list[tuple[FeedRow, bool]]:
    """(row, as a deletion) for the rows this connection may see."""
    found = []
    for row in rows:
        seen = connection.visibility(row, reach)
        if seen is not Visibility.HIDDEN:
            found.append((row, seen is Visibility.GONE))
    return found


@dataclass(eq=False)
class Connection:
    """One connected device. Messages go through a bounded queue to one writer task."""

    websocket: WebSocket
    principal: Principal
    queue_size: int
    cursor: FeedPoint | None = None  # set once subscribed
    collections: frozenset[str] | None = None  # None: every collection
    connected_at: str = field(default_factory=protocol.now_iso)
    closed: asyncio.Event = field(default_factory=asyncio.Event)
    close_code: int = 1000
    close_reason: str = ""
    patience: float = 90.0  # seconds a history page may wait for room in the queue
    reach: dict[str, Reach] | None = None  # what the device could read at the last step
    queue: asyncio.Queue[str] = field(init=False)

    def __post_init__(self) -> None:
        self.queue = asyncio.Queue(maxsize=self.queue_size)

    @property
    def device_id(self) -> str:
        return self.principal.device_id or ""

    def send(self, message: str) -> None:
        """Queue a message; a connection that cannot keep up is closed (it resumes later)."""
        if self.closed.is_set():
            return
        try:
            self.queue.put_nowait(message)
        except asyncio.QueueFull:
            log.info("realtime_slow_consumer", device=self.device_id)
            self.close(protocol.CLOSE_TOO_SLOW, "too slow: reconnect and resume from your cursor")

    async def send_waiting(self, message: str) -> bool:
        """Queue a message, waiting for room (history, sent at the device's pace); a device
        that reads nothing for the silence period is closed. False once closed."""
        if self.closed.is_set():
            return False
        try:
            await asyncio.wait_for(self.queue.put(message), timeout=self.patience)
        except TimeoutError:
            self.close(protocol.CLOSE_TOO_SLOW, "too slow: reconnect and resume from your cursor")
            return False
        return True

    def close(self, code: int, reason: str) -> None:
        if not self.closed.is_set():
            self.close_code, self.close_reason = code, reason
            self.closed.set()

    async def writer(self) -> None:
        """Sends queued messages; cancelled when the connection ends."""
        while True:
            message = await self.queue.get()
            await self.websocket.send_text(message)

    def sees(self, scope: Reach, row: FeedRow, owner: str | None = None) -> bool:
        """Whether the row is in this device's scope, given its reach in the row's collection
        (``owner``: judge as if the record belonged to them; default its owner)."""
        if self.collections is not None and row.collection not in self.collections:
            return False
        owner = row.owner_id if owner is None else owner
        return scope is Reach.ALL or (scope is Reach.OWN and owner == self.principal.user_id)

    def visibility(self, row: FeedRow, reach: dict[str, Reach]) -> Visibility:
        """Whether this device gets the row, and whether as a deletion (the record was handed
        to another owner and left this device's scope)."""
        scope = reach.get(row.collection, Reach.NONE)
        if self.sees(scope, row):
            return Visibility.SHOWN
        if row.previous_owner_id is not None and self.sees(scope, row, row.previous_owner_id):
            return Visibility.GONE
        return Visibility.HIDDEN


class ReachByRole:
    """How far each role reads each collection, worked out when a role first shows up (roles
    can join or change while a step awaits the database)."""

    def __init__(self, rules: dict[str, str]) -> None:
        self.rules = rules
        self._by_role: dict[Role | None, dict[str, Reach]] = {}

    def of(self, role: Role | None) -> dict[str, Reach]:
        found = self._by_role.get(role)
        if found is None:
            found = {name: read_reach(rule, role) for name, rule in self.rules.items()}
            self._by_role[role] = found
        return found


async def _history_page(
    hub: Hub, repository: SyncRepository, connection: Connection, reach: dict[str, Reach]
) -> tuple[list[str], FeedPoint, bool] | None:
    """The next page of the tenant's feed after the connection's cursor, as the messages for
    this device (``reach``: what it may read, by collection); with the page's end and whether
    more may follow. None: nothing more."""
    assert connection.cursor is not None
    tenant_id = connection.principal.tenant_id
    rows = await repository.read_feed(tenant_id, connection.cursor, PAGE, list(reach), [], None)
    if not rows:
        return None
    end = FeedPoint(rows[-1].xid, rows[-1].position)
    mine = _visible(connection, rows, reach)
    messages = protocol.server_pushes(
        mine, hub.cursor(tenant_id, end), lambda row: hub.row_cursor(tenant_id, row)
    )
    return messages, end, len(rows) == PAGE


async def _rescoped(
    hub: Hub, repository: SyncRepository, connection: Connection, now: dict[str, Reach]
) -> list[str]:
    """The messages that bring a device from the reach its records were sent under to ``now``
    (a read rule or role changed): records that left its scope as deletions, records that
    entered it as they are, up to its cursor (later ones come with the feed). Records the
    device has from now on were sent under ``now``."""
    before, connection.reach = connection.reach, now
    if before is None or before == now or connection.cursor is None:
        return []
    tenant_id = connection.principal.tenant_id
    messages: list[str] = []
    for name in [name for name in now if before.get(name, Reach.NONE) != now[name]]:
        rows = await repository.live_records_until(tenant_id, name, connection.cursor)
        moves = []
        for row in rows:
            had = connection.sees(before.get(name, Reach.NONE), row)
            has = connection.sees(now[name], row)
            if had != has:
                moves.append((row, not has))
        if moves:
            messages += protocol.server_pushes(
                moves,
                hub.cursor(tenant_id, connection.cursor),
                lambda row: hub.row_cursor(tenant_id, row),
            )
    return messages


class TenantFeed:
    """Reads one tenant's feed for this instance and fans rows out to its connections."""

    def __init__(self, hub: Hub, tenant_id: str) -> None:
        self.hub = hub
        self.tenant_id = tenant_id
        self.point: FeedPoint | None = None
        self.rules: dict[str, str] = {}
        self.live: set[Connection] = set()
        self.joining: list[Connection] = []
        self.wake = asyncio.Event()
        self.task = asyncio.create_task(self._run(), name=f"feed:{tenant_id}")

    def join(self, connection: Connection) -> None:
        self.joining.append(connection)
        self.wake.set()

    def leave(self, connection: Connection) -> None:
        self.live.discard(connection)
        if connection in self.joining:
            self.joining.remove(connection)

    async def _run(self) -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.wake.wait(), timeout=SAFETY_POLL_SECONDS)
            self.wake.clear()
            try:
                await self._step()
            except Exception:  # a database hiccup: try again at the next hint or poll
                log.exception("realtime_feed_error", tenant=self.tenant_id)
                await asyncio.sleep(0.2)

    async def _step(self) -> None:
        if not self.live and not self.joining:
            return
        async with self.hub.database.transaction() as session:
            repository = SyncRepository(session)
            self.rules = await repository.read_rules(self.tenant_id)
            reach = ReachByRole(self.rules)
            if self.point is not None and self.live:
                await self._rescope(repository, reach)
                await self._read_live(repository, reach)
            while self.joining:
                connection = self.joining.pop(0)
                if connection.closed.is_set():
                    continue
                try:
                    await self._catch_up(repository, connection, reach)
                except BaseException:
                    self.joining.insert(0, connection)  # an error only delays it
                    raise

    async def _rescope(self, repository: SyncRepository, reach: ReachByRole) -> None:
        """A changed read rule or role: see ``_rescoped``."""
        for connection in list(self.live):
            for message in await _rescoped(
                self.hub, repository, connection, reach.of(connection.principal.role)
            ):
                connection.send(message)

    def _row_cursor(self, row: FeedRow) -> str:
        return self.hub.row_cursor(self.tenant_id, row)

    async def _catch_up(
        self,
        repository: SyncRepository,
        connection: Connection,
        reach: ReachByRole,
    ) -> None:
        assert connection.cursor is not None
        now = reach.of(connection.principal.role)
        # The history was sent under the rules of its own read; they may have changed since.
        for message in await _rescoped(self.hub, repository, connection, now):
            connection.send(message)
        while page := await _history_page(self.hub, repository, connection, now):
            messages, connection.cursor, more = page
            for message in messages:
                connection.send(message)
            if not more:
                break
        if self.point is None:  # the first connection: the reader starts where it got to
            self.point = connection.cursor
        # The catch-up read everything visible, so it is at or past the reader; rows the reader
        # reads again are filtered by the connection's cursor (no duplicate).
        connection.cursor = max(connection.cursor, self.point)
        self.live.add(connection)

    async def _read_live(self, repository: SyncRepository, reach: ReachByRole) -> None:
        assert self.point is not None
        while True:
            # Every change of the tenant (scopes are applied per connection).
            rows = await repository.read_feed(
                self.tenant_id, self.point, PAGE, list(self.rules), [], None
            )
            if not rows:
                return
            end = FeedPoint(rows[-1].xid, rows[-1].position)
            cursor = self.hub.cursor(self.tenant_id, end)
            encoded: dict[tuple[Any, ...], list[str]] = {}
            for connection in list(self.live):
                if connection.closed.is_set():
                    self.live.discard(connection)
                    continue
                assert connection.cursor is not None
                key = (
                    connection.principal.role,
                    connection.principal.user_id,
                    connection.collections,
                    connection.cursor,
                )
                if key not in encoded:
                    newer = [
                        row for row in rows if FeedPoint(row.xid, row.position) > connection.cursor
                    ]
                    mine = _visible(connection, newer, reach.of(connection.principal.role))
                    encoded[key] = (
                        protocol.server_pushes(mine, cursor, self._row_cursor) if mine else []
                    )
                for message in encoded[key]:
                    connection.send(message)
                connection.cursor = max(connection.cursor, end)
            self.point = end
            if len(rows) < PAGE:
                return


class Hub:
    def __init__(
        self,
        database: Database,
        settings: Settings,
        secret_key: str,
        broker: Broker,
        redis: Any = None,
    ) -> None:
        self.database = database
        self.settings = settings
        self.secret_key = secret_key
        self.broker = broker
        self.redis = redis
        self.connections: dict[str, set[Connection]] = {}  # by tenant
        self.feeds: dict[str, TenantFeed] = {}

    def cursor(self, tenant_id: str, point: FeedPoint) -> str:
        return encode_cursor(self.secret_key, tenant_id, point)

    def row_cursor(self, tenant_id: str, row: FeedRow) -> str:
        return self.cursor(tenant_id, FeedPoint(row.xid, row.position))

    async def start(self) -> None:
        await self.broker.start(self.on_message)

    async def stop(self) -> None:
        await self.broker.stop()
        for feed in self.feeds.values():
            feed.task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await feed.task
        self.feeds.clear()
        for connections in self.connections.values():
            for connection in connections:
                connection.close(1001, "server shutting down")

    async def on_message(self, message: dict[str, Any]) -> None:
        tenant_id = message.get("tenant_id")
        if not isinstance(tenant_id, str):
            return
        kind = message.get("kind")
        if kind == "feed":
            feed = self.feeds.get(tenant_id)
            if feed is not None:
                feed.wake.set()
            return
        targets = self.device_connections(tenant_id, message.get("device_id"))
        if kind == "device" and isinstance(message.get("message"), dict):
            body = message["message"]
            for connection in targets:
                connection.send(protocol.envelope(str(body.get("type")), body.get("payload")))
        elif kind == "inbox":
            await self.deliver_inbox(*targets)

    # Connections

    def device_connections(self, tenant_id: str, device_id: object) -> list[Connection]:
        return [c for c in self.connections.get(tenant_id, ()) if c.device_id == device_id]

    async def register(self, connection: Connection) -> None:
        tenant_id = connection.principal.tenant_id
        self.connections.setdefault(tenant_id, set()).add(connection)
        await self._presence_set(connection)

    async def unregister(self, connection: Connection) -> None:
        tenant_id = connection.principal.tenant_id
        connections = self.connections.get(tenant_id, set())
        connections.discard(connection)
        feed = self.feeds.get(tenant_id)
        if feed is not None:
            feed.leave(connection)
            if not feed.live and not feed.joining:
                feed.task.cancel()
                del self.feeds[tenant_id]
        if not connections:
            self.connections.pop(tenant_id, None)
        await self._presence_clear(connection)

    async def subscribe(
        self, connection: Connection, after: FeedPoint, collections: frozenset[str] | None
    ) -> None:
        """Catch the connection up, then make it live.

        The bulk of the history is sent here, in the connection's own task and at the pace the
        device reads it (a device far behind never stalls the tenant's live feed). The rest,
        written meanwhile, is sent by the feed reader right before the connection joins the
        live set, so nothing falls between the two.
        """
        tenant_id = connection.principal.tenant_id
        feed = self.feeds.get(tenant_id)
        if feed is not None:
            feed.leave(connection)
        connection.cursor = after
        connection.collections = collections
        connection.reach = None  # set by the first page's rules
        while True:
            async with self.database.transaction() as session:
                repository = SyncRepository(session)
                rules = await repository.read_rules(tenant_id)
                now = ReachByRole(rules).of(connection.principal.role)
                rescoped = await _rescoped(self, repository, connection, now)
                page = await _history_page(self, repository, connection, now)
            messages, end, more = page if page is not None else ([], connection.cursor, False)
            for message in rescoped + messages:
                if not await connection.send_waiting(message):
                    return
            connection.cursor = end
            if not more:
                break
        feed = self.feeds.get(tenant_id)
        if feed is None:
            feed = self.feeds[tenant_id] = TenantFeed(self, tenant_id)
        feed.join(connection)

    async def deliver_inbox(self, *connections: Connection, everything: bool = False) -> None:
        """Send a device's due inbox messages to its connections (all of them get each one):
        every unacknowledged message on connect (``everything``), else new ones and those
        delivered a while ago without an acknowledgement."""
        if not connections:
            return
        first = connections[0]
        now = utcnow()
        async with self.database.transaction() as session:
            repository = InboxRepository(session)
            due = await repository.due(
                first.principal.tenant_id,
                first.device_id,
                now,
                redelivery_before=now if everything else now - REDELIVERY_AFTER,
            )
            await repository.mark_delivered(
                first.principal.tenant_id, [message.id for message in due], now
            )
            payloads = [inbox_payload(message) for message in due]
        for payload in payloads:
            message = protocol.envelope("inbox", payload)
            for connection in connections:
                connection.send(message)

    # Presence

    def _presence_key(self, tenant_id: str, device_id: str = "*") -> str:
        return f"{self.settings.redis_key_prefix}:presence:{tenant_id}:{device_id}"

    def _presence_entry(self, connection: Connection) -> dict[str, Any]:
        return {
            "device_id": connection.device_id,
            "user_id": connection.principal.user_id,
            "connected_at": connection.connected_at,
        }

    async def _presence_set(self, connection: Connection) -> None:
        if self.redis is None:
            return
        with contextlib.suppress(Exception):
            await self.redis.set(
                self._presence_key(connection.principal.tenant_id, connection.device_id),
                json.dumps(self._presence_entry(connection)),
                ex=self.settings.realtime_heartbeat_seconds * 3,
            )

    async def touch(self, connection: Connection) -> None:
        await self._presence_set(connection)

    async def _presence_clear(self, connection: Connection) -> None:
        if self.redis is None:
            return
        with contextlib.suppress(Exception):
            await self.redis.delete(
                self._presence_key(connection.principal.tenant_id, connection.device_id)
            )

    async def presence(self, tenant_id: str) -> list[dict[str, Any]]:
        """Devices of the tenant connected to any instance (this one only, without Redis)."""
        found = {c.device_id: self._presence_entry(c) for c in self.connections.get(tenant_id, ())}
        if self.redis is not None:
            try:
                keys = [key async for key in self.redis.scan_iter(self._presence_key(tenant_id))]
                values = await self.redis.mget(keys) if keys else []
                for value in values:
                    if value:
                        entry = json.loads(value)
                        found.setdefault(entry["device_id"], entry)
            except Exception:
                log.warning("realtime_presence_unavailable")
        return sorted(found.values(), key=lambda entry: str(entry["device_id"]))
