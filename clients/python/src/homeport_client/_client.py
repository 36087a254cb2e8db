"""The offline-first Homeport client."""

from __future__ import annotations

import asyncio
import inspect
import json
import time
import uuid
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from os import PathLike
from types import TracebackType
from typing import Any, Literal, Self
from urllib.parse import urlencode

import anyio
import httpx

from ._hlc import HybridLogicalClock
from ._live import (
    POLICY_COOLDOWN_SECONDS,
    InboxCallback,
    LiveErrorCallback,
    LiveSession,
    WsConnect,
    _LiveUnavailable,
    websockets_connect,
)
from ._store import CURSOR_PREFIX, Batch, LocalStore
from .errors import HomeportError, HomeportNetworkError

__all__ = [
    "ConflictCallback",
    "ErrorCallback",
    "HomeportClient",
    "InboxCallback",
    "LiveErrorCallback",
    "PullReport",
    "PushMode",
    "PushReport",
    "SyncReport",
]

PROTOCOL_VERSION = "1"
MAX_BATCH_SIZE = 1000
ALL_COLLECTIONS = "*"

PushMode = Literal["atomic", "best_effort"]
ConflictCallback = Callable[[dict[str, Any]], Awaitable[None] | None]
ErrorCallback = Callable[[dict[str, Any]], Awaitable[None] | None]

# 401 codes after which one refresh + retry is worth it (docs/errors.md: AUTH_002 = the access
# token expired; AUTH_001 with an access token = "refresh once; if that fails, log in again").
_REFRESH_CODES = frozenset({"AUTH_002", "AUTH_001"})
_TOKEN_KEYS = ("access_token", "refresh_token", "session_id", "tenant_id", "token_expires_at")
# Refresh an access token this close to its expiry before opening a live connection.
_EXPIRY_MARGIN_SECONDS = 10
# Conflict ids already given to the conflict callbacks (a live ``conflict`` message repeating a
# conflict of a push answer, or a redelivered one, does not call them again).
_SEEN_CONFLICTS_MAX = 1000


@dataclass(slots=True)
class PushReport:
    """What one ``push()`` did."""

    batches: int = 0
    """Batches answered by the server (including a resent, previously unanswered one)."""
    applied: int = 0
    """Changes the server applied."""
    synced_items: int = 0
    failed_items: int = 0
    conflicts: list[dict[str, Any]] = field(default_factory=list)
    """Conflict entries, as given to the conflict callbacks."""
    errors: list[dict[str, Any]] = field(default_factory=list)
    """Error entries (``item_id``, ``error``, ``message``), as given to the error callbacks."""
    requeued: int = 0
    """Changes the server did not answer about; they stay queued for the next push."""
    cursor: str | None = None
    """The ``cursor`` of the last answer (informative; pulls keep their own cursor)."""


@dataclass(slots=True)
class PullReport:
    """What one ``pull()`` did."""

    applied: int = 0
    """Changes written to the local replica."""
    pages: int = 0
    cursor: str | None = None
    reset: bool = False
    """True if the server required a reset (``410 SYNC_006``) and the replica was rebuilt."""


@dataclass(slots=True)
class SyncReport:
    push: PushReport
    pull: PullReport


async def _invoke(callback: Callable[[dict[str, Any]], Any], payload: dict[str, Any]) -> None:
    result = callback(payload)
    if inspect.isawaitable(result):
        await result


class HomeportClient:
    """Offline-first client: local reads and writes, explicit ``push``/``pull``/``sync``.

    Writes (``put``/``patch``/``delete``) go to a local outbox in ``store_path`` (an SQLite file,
    or ``":memory:"``) and are visible at once through ``get``/``all``. ``push()`` sends the
    outbox in idempotent batches; ``pull()`` brings the server's changes into the local replica.
    """

    def __init__(
        self,
        base_url: str,
        store_path: str | PathLike[str],
        device_id: str,
        transport: httpx.AsyncBaseTransport | None = None,
        *,
        timeout: float = 30.0,
        ws_connect: WsConnect | None = None,
        heartbeat_interval: float = 30.0,
        reconnect_delay: tuple[float, float] = (0.5, 30.0),
    ) -> None:
        if not device_id:
            raise ValueError("device_id must not be empty")
        if heartbeat_interval <= 0:
            raise ValueError("heartbeat_interval must be positive")
        if not 0 < reconnect_delay[0] <= reconnect_delay[1]:
            raise ValueError("reconnect_delay must be (first, maximum) with 0 < first <= maximum")
        self._device_id = device_id
        self._store = LocalStore(str(store_path))
        try:
            stored = self._store.get_meta("device_id")
            if stored is None:
                self._store.set_metas({"device_id": device_id})
            elif stored != device_id:
                raise ValueError(
                    f"store {store_path!s} belongs to device {stored!r}, not {device_id!r}"
                )
        except BaseException:
            self._store.close()
            raise
        self._clock = HybridLogicalClock(device_id, self._store.get_meta("hlc"))
        self._http = httpx.AsyncClient(
            base_url=base_url,
            transport=transport,
            timeout=timeout,
            headers={"X-Homeport-Protocol": PROTOCOL_VERSION},
        )
        self._access_token = self._store.get_meta("access_token")
        self._refresh_lock = anyio.Lock()
        self._push_lock = anyio.Lock()
        self._pull_lock = anyio.Lock()
        self._conflict_callbacks: list[ConflictCallback] = []
        self._error_callbacks: list[ErrorCallback] = []
        self._inbox_callbacks: list[InboxCallback] = []
        self._live_error_callbacks: list[LiveErrorCallback] = []
        self._seen_conflicts: OrderedDict[str, None] = OrderedDict()
        self._timeout = timeout
        self._ws_connect: WsConnect = ws_connect or (
            lambda url, headers: websockets_connect(url, headers, open_timeout=timeout)
        )
        self._heartbeat_interval = heartbeat_interval
        self._reconnect_delay = reconnect_delay
        self._live: LiveSession | None = None
        self._live_cooldown_until = 0.0

    # -- lifecycle ----------------------------------------------------------------------------

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Leave live mode, close the HTTP client and the local store."""
        await self.disconnect_live()
        await self._http.aclose()
        self._store.close()

    # -- properties ---------------------------------------------------------------------------

    @property
    def device_id(self) -> str:
        return self._device_id

    @property
    def is_logged_in(self) -> bool:
        return self._access_token is not None

    @property
    def session_id(self) -> str | None:
        return self._store.get_meta("session_id")

    @property
    def tenant_id(self) -> str | None:
        return self._store.get_meta("tenant_id")

    @property
    def is_live(self) -> bool:
        """True while a live connection is open and subscribed."""
        return self._live is not None and self._live.connected

    @property
    def last_hlc(self) -> str:
        """The last hybrid logical clock value issued or observed by this device."""
        return self._clock.state

    def cursor(self, collections: Sequence[str] | None = None) -> str | None:
        """The stored pull cursor for ``collections`` (``None``: all collections)."""
        return self._store.get_meta(CURSOR_PREFIX + self._cursor_key(collections))

    # -- callbacks ----------------------------------------------------------------------------

    def on_conflict(self, callback: ConflictCallback) -> ConflictCallback:
        """Register a callback (sync or async) called with each conflict entry of a push answer.

        Usable as a decorator.
        """
        self._conflict_callbacks.append(callback)
        return callback

    def on_error(self, callback: ErrorCallback) -> ErrorCallback:
        """Register a callback called with ``{item_id, error, message}`` per rejected change."""
        self._error_callbacks.append(callback)
        return callback

    def on_inbox(self, callback: InboxCallback) -> InboxCallback:
        """Register a callback for live ``inbox`` messages (``message_id, kind, body,
        expires_at``).

        Called once per message, even if the server delivers it again; the message is acked
        after the callbacks return. If a callback raises, the message is not acked (the server
        delivers it again) and the failure goes to the live error callbacks.
        """
        self._inbox_callbacks.append(callback)
        return callback

    def on_live_error(self, callback: LiveErrorCallback) -> LiveErrorCallback:
        """Register a callback for live-mode errors: ``error`` messages (``code``, ``message``)
        and closes that stop or need attention (``code``, ``message``, ``close_code``)."""
        self._live_error_callbacks.append(callback)
        return callback

    # -- local writes and reads ---------------------------------------------------------------

    @contextmanager
    def transaction(self) -> Iterator[None]:
        """Group local writes in one store transaction (all or nothing, one commit)."""
        with self._store.transaction():
            yield

    def put(self, collection: str, record_id: str, data: Mapping[str, Any]) -> None:
        """Queue an upsert of the whole record."""
        self._queue(collection, record_id, "upsert", data)

    def patch(self, collection: str, record_id: str, fields: Mapping[str, Any]) -> None:
        """Queue a patch: only ``fields`` change."""
        self._queue(collection, record_id, "patch", fields)

    def delete(self, collection: str, record_id: str) -> None:
        """Queue a delete."""
        self._queue(collection, record_id, "delete", None)

    def _queue(
        self, collection: str, record_id: str, op: str, data: Mapping[str, Any] | None
    ) -> None:
        if not collection or not record_id:
            raise ValueError("collection and record_id must not be empty")
        if data is not None and not isinstance(data, Mapping):
            raise TypeError("data must be a mapping (a JSON object)")
        with self._store.transaction():
            hlc = self._clock.now()
            self._store.queue(collection, record_id, op, data, hlc)
            self._store.set_meta("hlc", hlc)

    def get(self, collection: str, record_id: str) -> dict[str, Any] | None:
        """The record as this device sees it (server state with pending changes on top)."""
        return self._store.view(collection, record_id)

    def all(self, collection: str) -> list[dict[str, Any]]:
        """All live records of ``collection`` (local view), ordered by record id."""
        return [data for _, data in self._store.view_all(collection)]

    def items(self, collection: str) -> list[tuple[str, dict[str, Any]]]:
        """Like ``all()`` but as ``(record_id, data)`` pairs."""
        return self._store.view_all(collection)

    def version(self, collection: str, record_id: str) -> int | None:
        """The server version of the record last seen by this device (``None``: never seen)."""
        return self._store.record_version(collection, record_id)

    def pending(self) -> int:
        """Number of queued mutations (after collapsing), including an unanswered batch."""
        return self._store.pending_count()

    # -- HTTP ---------------------------------------------------------------------------------

    async def _request(
        self,
        method: str,
        path: str,
        *,
        content: str | None = None,
        json_body: Mapping[str, Any] | None = None,
        params: Mapping[str, str | int] | None = None,
        auth: bool = True,
    ) -> httpx.Response:
        for attempt in range(2):
            headers: dict[str, str] = {}
            token = self._access_token
            if auth:
                if token is None:
                    raise HomeportError(401, "AUTH_001", "Not logged in: call login() first")
                headers["Authorization"] = f"Bearer {token}"
            if content is not None:
                headers["Content-Type"] = "application/json"
            try:
                response = await self._http.request(
                    method,
                    path,
                    content=None if content is None else content.encode("utf-8"),
                    json=json_body,
                    params=params,
                    headers=headers,
                )
            except httpx.TransportError as exc:
                raise HomeportNetworkError(f"{type(exc).__name__}: {exc}") from exc
            if response.status_code < 400:
                return response
            error = HomeportError.from_response(response)
            if (
                auth
                and attempt == 0
                and response.status_code == 401
                and error.code in _REFRESH_CODES
                and self._store.get_meta("refresh_token") is not None
            ):
                await self._refresh(token)
                continue
            raise error
        raise AssertionError("unreachable")  # pragma: no cover

    @staticmethod
    def _json(response: httpx.Response) -> dict[str, Any]:
        try:
            value = json.loads(response.content)
        except ValueError as exc:
            raise HomeportNetworkError(f"unreadable answer from the server: {exc}") from exc
        if not isinstance(value, dict):
            raise HomeportNetworkError("unexpected answer from the server: not a JSON object")
        return value

    def _save_tokens(self, tokens: Mapping[str, Any]) -> None:
        expires_in = tokens.get("expires_in")
        values: dict[str, str | None] = {
            "access_token": str(tokens["access_token"]),
            "refresh_token": str(tokens["refresh_token"]),
            "session_id": None if tokens.get("session_id") is None else str(tokens["session_id"]),
            "tenant_id": None if tokens.get("tenant_id") is None else str(tokens["tenant_id"]),
            "token_expires_at": None
            if not isinstance(expires_in, int | float)
            else str(int(time.time() + expires_in)),
        }
        self._store.set_metas(values)
        self._access_token = values["access_token"]

    def _clear_tokens(self) -> None:
        self._store.set_metas(dict.fromkeys(_TOKEN_KEYS))
        self._access_token = None

    async def _refresh(self, stale_token: str | None) -> None:
        """Swap the refresh token for new tokens; serialised, so a token is never sent twice."""
        async with self._refresh_lock:
            if self._access_token != stale_token:
                return  # refreshed meanwhile by another task
            refresh_token = self._store.get_meta("refresh_token")
            if refresh_token is None:
                raise HomeportError(401, "AUTH_001", "No refresh token: log in again")
            try:
                response = await self._request(
                    "POST",
                    "/api/v1/auth/refresh",
                    json_body={"refresh_token": refresh_token},
                    auth=False,
                )
            except HomeportError as exc:
                if exc.status == 401:
                    # The refresh token is dead (expired, revoked or reused): forget it so it is
                    # never sent again; the user must log in.
                    self._clear_tokens()
                raise
            self._save_tokens(self._json(response))

    # -- auth ---------------------------------------------------------------------------------

    async def login(self, email: str, password: str, tenant: str | None = None) -> dict[str, Any]:
        """Log in this device; the tokens are kept in the local store. Returns the answer."""
        body: dict[str, Any] = {"email": email, "password": password, "device_id": self._device_id}
        if tenant is not None:
            body["tenant"] = tenant
        response = await self._request("POST", "/api/v1/auth/login", json_body=body, auth=False)
        tokens = self._json(response)
        self._save_tokens(tokens)
        return tokens

    async def logout(self) -> None:
        """End the session on the server (best effort) and forget the tokens."""
        try:
            if self._access_token is not None:
                await self._request("POST", "/api/v1/auth/logout")
        finally:
            self._clear_tokens()

    # -- push ---------------------------------------------------------------------------------

    async def push(self, mode: PushMode = "best_effort", batch_size: int = 500) -> PushReport:
        """Push everything queued, batch by batch.

        Each batch (key + exact body) is stored before it is sent. If no answer arrives
        (timeout, connection error, 5xx) this raises and the next ``push()`` resends that same
        body with the same idempotency key before building new batches.
        """
        _check_push_args(mode, batch_size)
        async with self._push_lock:
            return await self._push_batches(mode, batch_size, live=False)

    async def _push_batches(self, mode: PushMode, batch_size: int, *, live: bool) -> PushReport:
        report = PushReport()
        while True:
            batch = self._store.current_batch() or self._store.build_batch(
                str(uuid.uuid4()), self._device_id, mode, batch_size
            )
            if batch is None:
                break
            session = self._live if live else None
            if session is not None and session.connected:
                answer = await self._send_batch_live(session, batch)
            else:
                answer = await self._send_batch(batch)
            requeued = await self._process_answer(answer, report)
            if requeued:
                break  # do not loop on changes the server keeps silent about
        return report

    async def _send_batch_live(self, session: LiveSession, batch: Batch) -> dict[str, Any]:
        try:
            try:
                return await session.sync(batch)
            except HomeportError as exc:
                if exc.code != "SYNC_003":
                    raise
                # As over REST: the key is taken by another body, so a new key is safe.
                rekeyed = self._store.rekey_batch(str(uuid.uuid4()))
                if rekeyed is None:  # pragma: no cover - batch vanished concurrently
                    raise
                return await session.sync(rekeyed)
        except _LiveUnavailable:
            # The socket went away before the answer: the stored batch goes over REST, under
            # the same key (the server answers a key once, whichever way it came).
            current = self._store.current_batch()
            if current is None:  # pragma: no cover - answered meanwhile
                raise HomeportNetworkError("live connection lost") from None
            return await self._send_batch(current)

    async def live_sync(self, mode: PushMode = "best_effort", batch_size: int = 500) -> PushReport:
        """Push the queue over the live connection (REST ``push()`` when not connected).

        Same batches, idempotency keys and answer handling as ``push()``: each batch body is
        stored before it is sent as a ``sync`` message; an unanswered one is resent unchanged
        (same key) by the next ``live_sync()`` or ``push()``.
        """
        _check_push_args(mode, batch_size)
        async with self._push_lock:
            return await self._push_batches(mode, batch_size, live=True)

    async def _send_batch(self, batch: Batch) -> dict[str, Any]:
        try:
            response = await self._request("POST", "/api/v1/sync/push", content=batch.body)
        except HomeportError as exc:
            if exc.status != 409 or exc.code != "SYNC_003":
                raise
            # The key is known to the server with another body, so this body was never applied
            # under it: the same changes under a fresh key are safe.
            rekeyed = self._store.rekey_batch(str(uuid.uuid4()))
            if rekeyed is None:  # pragma: no cover - batch vanished concurrently
                raise
            response = await self._request("POST", "/api/v1/sync/push", content=rekeyed.body)
        return self._json(response)

    async def _process_answer(self, answer: dict[str, Any], report: PushReport) -> int:
        outcome = self._store.apply_push_answer(answer)
        report.batches += 1
        report.applied += outcome.applied
        report.requeued += outcome.requeued
        synced, failed = answer.get("synced_items"), answer.get("failed_items")
        report.synced_items += synced if isinstance(synced, int) else 0
        report.failed_items += failed if isinstance(failed, int) else 0
        cursor = answer.get("cursor")
        if isinstance(cursor, str):
            report.cursor = cursor

        conflicts = list(outcome.conflicts)
        seen = {(str(c.get("collection")), str(c.get("id"))) for c in conflicts}
        for result in outcome.conflict_results:
            key = (str(result.get("collection")), str(result.get("id")))
            if key not in seen:
                resolution = result.get("resolution")
                conflicts.append(
                    {
                        "conflict_id": None,
                        "collection": key[0],
                        "id": key[1],
                        "resolution": resolution,
                        "status": "resolved" if resolution else "pending",
                        "server": None,
                    }
                )

        errors = [dict(e) for e in answer.get("errors") or () if isinstance(e, Mapping)]
        covered = {str(e.get("item_id")) for e in errors}
        for result in outcome.rejected:
            collection, record_id = str(result.get("collection")), str(result.get("id"))
            candidates = {record_id, f"{collection}/{record_id}", f"{collection}:{record_id}"}
            if covered.isdisjoint(candidates):
                errors.append(
                    {
                        "item_id": record_id,
                        "error": "rejected",
                        "message": result.get("resolution") or "rejected by the server",
                        "collection": collection,
                    }
                )

        report.conflicts.extend(conflicts)
        report.errors.extend(errors)
        for conflict in conflicts:
            self._remember_conflict(conflict.get("conflict_id"))
        for conflict in conflicts:
            for on_conflict in self._conflict_callbacks:
                await _invoke(on_conflict, conflict)
        for error in errors:
            for on_error in self._error_callbacks:
                await _invoke(on_error, error)
        return outcome.requeued

    # -- pull ---------------------------------------------------------------------------------

    @staticmethod
    def _cursor_key(collections: Sequence[str] | None) -> str:
        if not collections:
            return ALL_COLLECTIONS
        return ",".join(sorted(set(collections)))

    async def pull(self, collections: Sequence[str] | None = None, limit: int = 1000) -> PullReport:
        """Pull the server's changes into the local replica, page by page, until up to date.

        Each page and its cursor are written in one local transaction. On ``410 SYNC_006`` the
        replica is reset (``force_sync``) and pulled again; queued changes are kept.
        """
        if limit < 1:
            raise ValueError("limit must be positive")
        if isinstance(collections, str):
            collections = [collections]
        async with self._pull_lock:
            return await self._pull(collections, limit, allow_reset=True)

    async def _pull(
        self, collections: Sequence[str] | None, limit: int, *, allow_reset: bool
    ) -> PullReport:
        report = PullReport()
        cursor_key = self._cursor_key(collections)
        cursor = self._store.get_meta(CURSOR_PREFIX + cursor_key)
        report.cursor = cursor
        while True:
            params: dict[str, str | int] = {"limit": limit}
            if cursor is not None:
                params["cursor"] = cursor
            if cursor_key != ALL_COLLECTIONS:
                params["collections"] = cursor_key
            try:
                response = await self._request("GET", "/api/v1/sync/pull", params=params)
            except HomeportError as exc:
                if allow_reset and exc.status == 410 and exc.code == "SYNC_006":
                    allow_reset = False  # at most one reset per pull
                    cursor = await self._reset(cursor_key)
                    report.reset = True
                    report.cursor = cursor
                    continue
                raise
            page = self._json(response)
            changes = page.get("changes") or []
            new_cursor = page.get("cursor")
            if not isinstance(new_cursor, str):
                new_cursor = cursor or ""
            report.applied += self._store.apply_pull_page(changes, cursor_key, new_cursor)
            report.pages += 1
            self._observe_remote_clock(changes)
            unchanged = new_cursor == cursor
            cursor = report.cursor = new_cursor
            if not page.get("has_more") or (unchanged and not changes):
                break
        return report

    def _observe_remote_clock(self, changes: Sequence[Mapping[str, Any]]) -> None:
        latest = max((c["hlc"] for c in changes if isinstance(c.get("hlc"), str)), default=None)
        if latest is None or latest <= self._clock.state:
            return
        try:
            self._clock.receive(latest)
        except ValueError:
            return
        self._store.set_metas({"hlc": self._clock.state})

    async def _reset(self, cursor_key: str) -> str:
        response = await self._request("POST", "/api/v1/sync/force-sync")
        cursor = self._json(response).get("cursor")
        if not isinstance(cursor, str):
            raise HomeportNetworkError("force-sync answer without a cursor")
        self._store.reset_replica(cursor_key, cursor)
        return cursor

    async def force_sync(
        self, collections: Sequence[str] | None = None, limit: int = 1000
    ) -> PullReport:
        """Drop the local replica (queued changes stay), then pull everything again."""
        if isinstance(collections, str):
            collections = [collections]
        async with self._pull_lock:
            cursor_key = self._cursor_key(collections)
            await self._reset(cursor_key)
            report = await self._pull(collections, limit, allow_reset=True)
            report.reset = True
            return report

    async def sync(
        self,
        collections: Sequence[str] | None = None,
        *,
        mode: PushMode = "best_effort",
        batch_size: int = 500,
        limit: int = 1000,
    ) -> SyncReport:
        """Push the queue, then pull."""
        pushed = await self.push(mode=mode, batch_size=batch_size)
        pulled = await self.pull(collections, limit=limit)
        return SyncReport(push=pushed, pull=pulled)

    # -- live mode ----------------------------------------------------------------------------

    async def connect_live(self, collections: Sequence[str] | None = None) -> None:
        """Open the live connection and subscribe from the stored cursor of ``collections``.

        Returns once subscribed; the receive loop then runs in a background task: server
        changes go into the local replica (with the cursor, like a pulled page), inbox and
        conflict messages go to their callbacks, and dropped connections are reopened with
        backoff. Raises ``HomeportError`` if the first connection fails. Calling it again
        while connected to the same collections does nothing.
        """
        if isinstance(collections, str):
            collections = [collections]
        wanted = None if not collections else sorted(set(collections))
        session = self._live
        if session is not None and session.running:
            if session.collections == wanted:
                return
            raise RuntimeError("live mode is on for other collections: disconnect_live() first")
        if session is not None:
            await session.stop()
            self._live = None
        wait = self._live_cooldown_until - time.monotonic()
        if wait > 0:  # the server closed for abuse (1008) a moment ago: do not hammer it
            await asyncio.sleep(wait)
        session = LiveSession(
            self,
            self._ws_connect,
            wanted,
            heartbeat_interval=self._heartbeat_interval,
            reconnect_delay=self._reconnect_delay,
            timeout=self._timeout,
        )
        await session.start()
        self._live = session

    async def disconnect_live(self) -> None:
        """Close the live connection and stop reconnecting (idempotent)."""
        session, self._live = self._live, None
        if session is not None:
            await session.stop()

    def _note_policy_close(self) -> None:
        """The server closed for abuse (1008): ``connect_live`` waits a while before retrying."""
        self._live_cooldown_until = time.monotonic() + POLICY_COOLDOWN_SECONDS

    async def resolve_conflict(
        self,
        conflict_id: str,
        resolution: str,
        client_data: Mapping[str, Any] | None = None,
    ) -> None:
        """Send a ``resolve_conflict`` message for a conflict reported by the server."""
        session = self._live
        if session is None:
            raise HomeportNetworkError("live mode is not connected")
        await session.send(
            "resolve_conflict",
            {
                "conflict_id": conflict_id,
                "resolution": resolution,
                "client_data": None if client_data is None else dict(client_data),
            },
        )

    @property
    def last_server_time(self) -> str | None:
        """``server_time`` of the last ``heartbeat_ack`` of the live connection."""
        return None if self._live is None else self._live.last_server_time

    def _live_url(self) -> str:
        base = self._http.base_url
        scheme = {"http": "ws", "https": "wss"}.get(base.scheme, base.scheme)
        path = base.path.rstrip("/") + "/ws/mobile/sync/"
        netloc = base.netloc.decode("ascii")
        return f"{scheme}://{netloc}{path}?{urlencode({'device_id': self._device_id})}"

    @staticmethod
    def _live_headers(token: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {token}", "X-Homeport-Protocol": PROTOCOL_VERSION}

    async def _refresh_if_expired(self) -> None:
        expires_at = self._store.get_meta("token_expires_at")
        if (
            self._access_token is not None
            and expires_at is not None
            and expires_at.isdigit()
            and int(expires_at) <= time.time() + _EXPIRY_MARGIN_SECONDS
            and self._store.get_meta("refresh_token") is not None
        ):
            await self._refresh(self._access_token)

    async def _apply_live_push(self, payload: Mapping[str, Any], cursor_key: str) -> int:
        """Write a ``server_push`` like a pulled page: its changes and cursor in one commit."""
        updates = payload.get("updates") or []
        if not isinstance(updates, list):
            raise ValueError("server_push updates must be a list")
        changes: list[dict[str, Any]] = []
        for update in updates:
            if not isinstance(update, Mapping):
                raise ValueError("a server_push update must be an object")
            version = update.get("version")
            if not isinstance(version, int) or isinstance(version, bool):
                raise ValueError("a server_push update needs an integer version")
            operation = update.get("operation")
            change: dict[str, Any] = {
                "collection": str(update["entity_type"]),
                "id": str(update["entity_id"]),
                "op": "delete" if operation == "delete" else "upsert",
                "version": version,
                "data": None if operation == "delete" else update.get("data"),
            }
            for extra in ("hlc", "updated_at"):
                if isinstance(update.get(extra), str):
                    change[extra] = update[extra]
            changes.append(change)
        cursor = payload.get("cursor")
        async with self._pull_lock:
            applied = self._store.apply_pull_page(
                changes, cursor_key, cursor if isinstance(cursor, str) and cursor else None
            )
        self._observe_remote_clock(changes)
        return applied

    async def _live_conflict(self, payload: Mapping[str, Any]) -> None:
        conflict_id = payload.get("conflict_id")
        if isinstance(conflict_id, str) and conflict_id in self._seen_conflicts:
            return
        entry: dict[str, Any] = dict(payload)
        entry.setdefault("collection", payload.get("domain"))
        entry.setdefault("id", payload.get("mobile_id"))
        entry.setdefault("resolution", None)
        entry.setdefault("status", "pending")
        entry.setdefault(
            "server",
            {"version": payload.get("server_version"), "data": payload.get("server_data")},
        )
        self._remember_conflict(conflict_id)
        for on_conflict in list(self._conflict_callbacks):
            await _invoke(on_conflict, entry)

    def _remember_conflict(self, conflict_id: Any) -> None:
        if not isinstance(conflict_id, str):
            return
        self._seen_conflicts[conflict_id] = None
        self._seen_conflicts.move_to_end(conflict_id)
        while len(self._seen_conflicts) > _SEEN_CONFLICTS_MAX:
            self._seen_conflicts.popitem(last=False)


def _check_push_args(mode: str, batch_size: int) -> None:
    if mode not in ("atomic", "best_effort"):
        raise ValueError("mode must be 'atomic' or 'best_effort'")
    if not 1 <= batch_size <= MAX_BATCH_SIZE:
        raise ValueError(f"batch_size must be between 1 and {MAX_BATCH_SIZE}")
