"""The WebSocket endpoint (`/ws/mobile/sync/`), presence and the admin inbox API."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import re
import time
import traceback
from collections import deque
from datetime import timedelta
from typing import Annotated, Any

from fastapi import Path, Request, status
from pydantic import AfterValidator, BaseModel, Field, StrictInt
from starlette.websockets import WebSocket, WebSocketDisconnect

from homeport.auth.dependencies import PrincipalDep
from homeport.auth.principal import Permission, Principal, Role
from homeport.auth.repository import AuthRepository
from homeport.auth.service import AuthService
from homeport.kit.broker import take_after_commit
from homeport.kit.clock import utcnow
from homeport.kit.errors import ErrorCode, ProblemError
from homeport.kit.jobs import ENQUEUED_FLAG
from homeport.kit.logging import get_logger
from homeport.kit.problems import ProblemResponse, render, responses
from homeport.kit.routing import api_router
from homeport.realtime import protocol
from homeport.realtime.hub import Connection, Hub
from homeport.realtime.inbox import InboxRepository, enqueue_inbox
from homeport.state import AppState, SessionDep, StateDep, after_commit
from homeport.sync.conflicts import ConflictService
from homeport.sync.cursor import FeedPoint
from homeport.sync.service import SyncService, checked_digest

router = api_router(tags=["realtime"])
log = get_logger("homeport.realtime")

# Bad frames tolerated (each answered with an error) before the connection is closed.
MAX_STRIKES = 10
# Closed after a message failed unexpectedly (WebSocket "internal error").
CLOSE_INTERNAL = 1011
# Ids the server hands out (inbox messages, conflicts) are short printable ASCII; anything
# else names nothing and is refused before it reaches a query.
_SERVER_ID = re.compile(r"[!-~]{1,64}")


def _is_server_id(value: Any) -> bool:
    return isinstance(value, str) and _SERVER_ID.fullmatch(value) is not None


def _storable(name: str) -> AfterValidator:
    """A check that a value of the inbox can be stored and sent as JSON: the push's checks
    for a record's data (no NaN or Infinity, no NUL, no lone surrogate, bounded depth)."""

    def check(value: Any) -> Any:
        checked_digest(value, name)
        return value

    return AfterValidator(check)


class PresenceEntry(BaseModel):
    device_id: str
    user_id: str | None
    connected_at: str


class PresenceList(BaseModel):
    devices: list[PresenceEntry]


class InboxPost(BaseModel):
    kind: Annotated[str, Field(min_length=1, max_length=63), _storable("kind")]
    body: Annotated[dict[str, Any], _storable("body")] = Field(default_factory=dict)
    ttl_seconds: StrictInt = Field(default=7 * 24 * 3600, ge=1, le=90 * 24 * 3600)


class InboxPosted(BaseModel):
    message_id: str
    device_id: str
    expires_at: str


@router.get(
    "/api/v1/realtime/presence",
    response_model=PresenceList,
    summary="Devices of your tenant connected over the WebSocket",
    responses=responses(ErrorCode.AUTH_001, ErrorCode.AUTH_006),
)
async def presence(principal: PrincipalDep, state: StateDep) -> PresenceList:
    principal.require(Permission.MEMBERS_READ)
    entries = await state.hub.presence(principal.tenant_id) if state.hub else []
    return PresenceList(devices=[PresenceEntry(**entry) for entry in entries])


@router.post(
    "/api/v1/devices/{device_id}/inbox",
    response_model=InboxPosted,
    status_code=status.HTTP_201_CREATED,
    summary="Leave a message in a device's inbox (owner/admin); delivered until acknowledged",
    responses=responses(ErrorCode.AUTH_001, ErrorCode.AUTH_006, ErrorCode.NOT_FOUND),
)
async def post_inbox(
    device_id: Annotated[str, Path(min_length=1, max_length=128)],
    body: InboxPost,
    principal: PrincipalDep,
    session: SessionDep,
) -> InboxPosted:
    principal.require(Permission.MEMBERS_WRITE)
    if not await AuthRepository(session).device_known(principal.tenant_id, device_id):
        raise ProblemError(ErrorCode.NOT_FOUND, "No device with this id in your tenant")
    message = enqueue_inbox(
        session,
        principal.tenant_id,
        device_id,
        body.kind,
        body.body,
        ttl=timedelta(seconds=body.ttl_seconds),
    )
    return InboxPosted(
        message_id=message.id,
        device_id=device_id,
        expires_at=message.expires_at.isoformat().replace("+00:00", "Z"),
    )


def _token(websocket: WebSocket) -> str | None:
    authorization = websocket.headers.get("authorization", "")
    if authorization.lower().startswith("bearer "):
        return authorization[7:].strip()
    return websocket.query_params.get("token")


async def _authenticate(state: AppState, websocket: WebSocket) -> Principal:
    token = _token(websocket)
    if not token:
        raise ProblemError(ErrorCode.AUTH_001, "Authentication required")
    async with state.database.transaction() as session:
        service = AuthService(session, state.settings, state.keyring, state.passwords)
        return await service.authenticate_bearer(token)


SYNC_SOCKET = "/ws/mobile/sync/"


@router.get(SYNC_SOCKET, include_in_schema=False)
async def mobile_sync_over_plain_http(request: Request) -> ProblemResponse:
    """A plain HTTP request for the WebSocket endpoint (a browser, a misconfigured proxy
    that drops the Upgrade header): 426 naming what is needed, not a 404."""
    return render(
        ErrorCode.VALIDATION_001,
        "This endpoint speaks WebSocket: connect with a WebSocket client (a GET with "
        "'Upgrade: websocket'); behind a proxy, let it pass the Upgrade and Connection headers",
        request,
        status=status.HTTP_426_UPGRADE_REQUIRED,
        headers={"Upgrade": "websocket", "Connection": "Upgrade"},
    )


@router.websocket(SYNC_SOCKET)
async def mobile_sync(websocket: WebSocket) -> None:
    state: AppState = websocket.app.state.homeport
    await websocket.accept()
    try:
        principal = await _authenticate(state, websocket)
    except ProblemError as exc:
        await websocket.close(protocol.CLOSE_AUTH, f"{exc.code.name}: {exc.detail}"[:120])
        return
    if websocket.query_params.get("device_id") != principal.device_id:
        await websocket.close(protocol.CLOSE_FORBIDDEN, "device_id is not the token's device")
        return
    hub: Hub = state.hub
    connection = Connection(
        websocket,
        principal,
        state.settings.realtime_send_queue,
        patience=state.settings.realtime_heartbeat_seconds * 3,
    )
    await hub.register(connection)
    writer = asyncio.create_task(connection.writer(), name=f"ws-writer:{principal.device_id}")
    session = _Session(state, hub, connection)
    try:
        await hub.deliver_inbox(connection, everything=True)
        await session.run()
    finally:
        if connection.close_code in _FLUSHED_BEFORE_CLOSE:
            # What was queued before the reason to close arose goes first: the error frame
            # that tells why, an answer (a heartbeat's ack) sent before a session check failed.
            await _flush(connection, writer)
        connection.close(connection.close_code, connection.close_reason)
        await hub.unregister(connection)
        writer.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await writer
        with contextlib.suppress(Exception):
            await websocket.close(connection.close_code, connection.close_reason)


# Closes decided by the server about the device, with its queue moving (not a slow consumer).
_FLUSHED_BEFORE_CLOSE = (CLOSE_INTERNAL, protocol.CLOSE_ABUSE, protocol.CLOSE_AUTH)


async def _flush(connection: Connection, writer: asyncio.Task[None]) -> None:
    """Give the writer up to a second to send what is queued (the error frame before a
    close)."""
    for _tick in range(100):
        if connection.queue.empty() or writer.done():
            break
        await asyncio.sleep(0.01)
    await asyncio.sleep(0)  # the writer sends the message it took last


class _Session:
    """The receive loop of one connection."""

    def __init__(self, state: AppState, hub: Hub, connection: Connection) -> None:
        self.state = state
        self.hub = hub
        self.connection = connection
        self.principal = connection.principal
        self.settings = state.settings
        self.recent: deque[float] = deque()
        self.strikes: deque[float] = deque()

    async def run(self) -> None:
        silence = self.settings.realtime_heartbeat_seconds * 3
        receiving: asyncio.Task[Any] | None = None
        closing = asyncio.ensure_future(self.connection.closed.wait())
        try:
            while not self.connection.closed.is_set():
                receiving = asyncio.ensure_future(self.connection.websocket.receive())
                done, _ = await asyncio.wait(
                    {receiving, closing}, timeout=silence, return_when=asyncio.FIRST_COMPLETED
                )
                if not done:
                    self.connection.close(protocol.CLOSE_SILENT, "no heartbeat")
                    return
                if receiving not in done:
                    return  # closed by the server (slow consumer, shutdown)
                message = receiving.result()
                receiving = None
                if message["type"] == "websocket.disconnect":
                    return
                await self.handle(message.get("text"), message.get("bytes"))
        except WebSocketDisconnect:
            return
        finally:
            closing.cancel()
            if receiving is not None:
                receiving.cancel()

    def _strike(self, code: str, message: str) -> None:
        """Answer a bad or excess message; too many within a minute closes the connection."""
        now = time.monotonic()
        self.strikes.append(now)
        while self.strikes and self.strikes[0] <= now - 60:
            self.strikes.popleft()
        self.connection.send(protocol.error(code, message))
        if len(self.strikes) > MAX_STRIKES:
            self.connection.close(protocol.CLOSE_ABUSE, "too many invalid or excess messages")

    def _rate_limited(self) -> bool:
        now = time.monotonic()
        while self.recent and self.recent[0] <= now - 60:
            self.recent.popleft()
        if len(self.recent) >= self.settings.realtime_messages_per_minute:
            return True
        self.recent.append(now)
        return False

    async def handle(self, text: str | None, raw: bytes | None) -> None:
        size = len(text.encode()) if text is not None else len(raw or b"")
        if size > self.settings.realtime_max_frame_bytes:
            self._strike(
                "SYNC_001", f"Frame larger than {self.settings.realtime_max_frame_bytes} bytes"
            )
            return
        if self._rate_limited():
            self._strike("RATE_001", "Too many messages; slow down")
            return
        try:
            message = json.loads(text if text is not None else (raw or b"").decode())
        except (ValueError, UnicodeDecodeError, RecursionError):
            self._strike("SYNC_001", "Malformed JSON")
            return
        if not isinstance(message, dict) or not isinstance(message.get("type"), str):
            self._strike("SYNC_001", 'A message is {"type", "payload", "timestamp"}')
            return
        handler = {
            "heartbeat": self.heartbeat,
            "sync": self.sync,
            "subscribe": self.subscribe,
            "resolve_conflict": self.resolve_conflict,
            "ack": self.ack,
        }.get(message["type"])
        if handler is None:
            self._strike("SYNC_001", f"Unknown message type {message['type'][:40]!r}")
            return
        payload = message.get("payload")
        try:
            await handler(payload if payload is not None else {})
        except ProblemError as exc:
            self.connection.send(protocol.error(exc.code.name, exc.detail or exc.code.title))
        except Exception as exc:
            # A bug, not the device's doing: it is told so, and the connection (whose state is
            # unknown now) ends with 1011 instead of silently. The log names the failure and
            # where it happened, but holds nothing of the message (nor the exception's text,
            # which may repeat it).
            log.error(
                "realtime_message_failed",
                message_type=message["type"],
                device=self.principal.device_id,
                error=type(exc).__qualname__,
                where="".join(traceback.format_tb(exc.__traceback__)),
            )
            self.connection.send(
                protocol.error(
                    ErrorCode.INTERNAL.name,
                    "An internal error occurred; reconnect and resume from your cursor",
                )
            )
            self.connection.close(CLOSE_INTERNAL, "internal error")

    async def heartbeat(self, payload: Any) -> None:
        self.connection.send(
            protocol.envelope("heartbeat_ack", {"server_time": protocol.now_iso()})
        )
        if not await self._session_alive():
            return
        await self.hub.touch(self.connection)
        # Redelivers unacknowledged messages, to every connection of the device at once (a
        # message marked delivered must have reached all of them).
        await self.hub.deliver_inbox(
            *self.hub.device_connections(self.principal.tenant_id, self.principal.device_id)
        )

    async def _session_alive(self) -> bool:
        """The device session must still be valid (logout, revocation, a disabled account or a
        removed member end the connection) and the member's current role applies."""
        principal = self.principal
        async with self.state.database.transaction() as session:
            found = await AuthRepository(session).find_session_credentials(
                principal.tenant_id, principal.session_id or ""
            )
        if (
            found is None
            or found.revoked_at is not None
            or found.expires_at <= utcnow()
            or found.user_disabled_at is not None
        ):
            self.connection.close(protocol.CLOSE_AUTH, "AUTH_001: the device session ended")
            return False
        role = Role(found.role)
        if role != principal.role:
            self.principal = self.connection.principal = dataclasses.replace(principal, role=role)
        return True

    async def _transaction(self, work: Any, reply: Any = None) -> Any:
        """Run ``work`` in a transaction; after the commit, send ``reply(result)`` (if given)
        and only then publish what the commit caused, so the device gets its answer first."""
        async with self.state.database.transaction() as session:
            result = await work(session)
            enqueued = session.info.pop(ENQUEUED_FLAG, False)
            messages = take_after_commit(session)
        if reply is not None:
            reply(result)
        await after_commit(self.state, enqueued, messages)
        return result

    async def sync(self, payload: Any) -> None:
        async def work(session: Any) -> Any:
            service = SyncService(session, self.settings, self.state.secret_key)
            return await service.push(self.principal, payload)

        await self._transaction(
            work,
            lambda answer: self.connection.send(protocol.envelope("sync_response", answer.body)),
        )

    async def subscribe(self, payload: Any) -> None:
        if not isinstance(payload, dict):
            raise ProblemError(ErrorCode.SYNC_001, "subscribe takes {cursor, collections?}")
        cursor, names = payload.get("cursor"), payload.get("collections")
        if cursor is not None and not isinstance(cursor, str):
            raise ProblemError(ErrorCode.SYNC_001, "cursor must be a string")
        if names is not None and (
            not isinstance(names, list) or not all(isinstance(n, str) for n in names)
        ):
            raise ProblemError(ErrorCode.SYNC_001, "collections must be a list of names")

        async def check(session: Any) -> FeedPoint:
            service = SyncService(session, self.settings, self.state.secret_key)
            after, _rules = await service.feed_start(self.principal.tenant_id, cursor, names)
            return after

        after = await self._transaction(check)
        await self.hub.subscribe(self.connection, after, frozenset(names) if names else None)

    async def resolve_conflict(self, payload: Any) -> None:
        if not isinstance(payload, dict) or not isinstance(payload.get("conflict_id"), str):
            raise ProblemError(ErrorCode.SYNC_002, "resolve_conflict needs conflict_id")
        if not _is_server_id(payload["conflict_id"]):
            raise ProblemError(
                ErrorCode.SYNC_001, "conflict_id is 1 to 64 printable ASCII characters"
            )
        resolution = payload.get("resolution")
        if resolution not in ("accept_server", "accept_client", "merge"):
            raise ProblemError(
                ErrorCode.SYNC_001, "resolution is accept_server, accept_client or merge"
            )
        data = payload.get("client_data")
        if data is not None and not isinstance(data, dict):
            raise ProblemError(ErrorCode.SYNC_001, "client_data must be an object")

        async def work(session: Any) -> Any:
            conflicts = ConflictService(session)
            found = await conflicts.repository.get_conflict(
                self.principal.tenant_id, payload["conflict_id"]
            )
            own = found is not None and found.device_id == self.principal.device_id
            if not own and not self.principal.can(Permission.CONFLICTS_WRITE):
                raise ProblemError(ErrorCode.NOT_FOUND, "Conflict not found")
            sync = SyncService(session, self.settings, self.state.secret_key)
            return await conflicts.resolve(
                self.principal, payload["conflict_id"], resolution, data, sync.write_resolution
            )

        conflict = await self._transaction(work)
        self.connection.send(
            protocol.envelope(
                "conflict_resolved",
                {
                    "conflict_id": conflict.id,
                    "resolution_result": conflict.status,
                    "winning_version": conflict.winner,
                },
            )
        )

    async def ack(self, payload: Any) -> None:
        ids = payload.get("message_ids") if isinstance(payload, dict) else None
        if not isinstance(ids, list) or not all(isinstance(i, str) for i in ids):
            raise ProblemError(ErrorCode.SYNC_001, "ack takes {message_ids: [...]}")
        if not all(_is_server_id(i) for i in ids):
            raise ProblemError(
                ErrorCode.SYNC_001, "message_ids are 1 to 64 printable ASCII characters each"
            )

        async def work(session: Any) -> int:
            return await InboxRepository(session).acknowledge(
                self.principal.tenant_id, self.principal.device_id or "", ids[:500], utcnow()
            )

        await self._transaction(work)
