"""Live mode: one WebSocket to ``/ws/mobile/sync/`` that streams server changes to the replica.

Every message, both ways, is JSON ``{"type": str, "payload": object, "timestamp": ISO 8601}``.
The session keeps one connection open, resubscribes from the stored cursor after every drop
(exponential backoff with jitter), sends heartbeats, and hands ``sync`` answers back to the
``live_sync`` call waiting for them. Live mode runs on asyncio (the ``websockets`` library).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import random
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Protocol

from .errors import HomeportError, HomeportNetworkError

if TYPE_CHECKING:
    from websockets.asyncio.client import ClientConnection

    from ._client import HomeportClient
    from ._store import Batch

__all__ = [
    "InboxCallback",
    "LiveConnectionClosed",
    "LiveErrorCallback",
    "WebSocketLike",
    "WsConnect",
    "websockets_connect",
]

logger = logging.getLogger("homeport_client.live")

LIVE_PATH = "/ws/mobile/sync/"
MAX_MESSAGE_BYTES = 64 * 1024 * 1024
CLOSE_NORMAL = 1000
CLOSE_POLICY = 1008  # abuse: stop, do not hot-loop
CLOSE_AUTH = 4401  # bad or expired token; the reason starts with the error code
CLOSE_FORBIDDEN = 4403  # device_id is not the token's
CLOSE_BEHIND = 4008  # the connection fell behind: reconnect and resume from the cursor
POLICY_COOLDOWN_SECONDS = 30.0
REFRESH_CODES = frozenset({"AUTH_002", "AUTH_001"})

InboxCallback = Callable[[dict[str, Any]], Awaitable[None] | None]
LiveErrorCallback = Callable[[dict[str, Any]], Awaitable[None] | None]


class WebSocketLike(Protocol):
    """What live mode needs from a WebSocket connection.

    ``recv()`` raises when the connection is closed: preferably :class:`LiveConnectionClosed`;
    ``websockets``' ``ConnectionClosed`` and exceptions with an integer ``code`` attribute
    (Starlette's ``WebSocketDisconnect``) are understood too.
    """

    async def send(self, message: str) -> None: ...

    async def recv(self) -> str | bytes: ...

    async def close(self, code: int = 1000, reason: str = "") -> None: ...


WsConnect = Callable[[str, dict[str, str]], Awaitable[WebSocketLike]]
"""``ws_connect(url, headers)``: open a WebSocket (raise ``HomeportError`` if refused)."""


class LiveConnectionClosed(Exception):
    """The WebSocket was closed with ``code`` (1006: dropped without a close frame)."""

    def __init__(self, code: int, reason: str = "") -> None:
        super().__init__(f"connection closed: {code} {reason}".rstrip())
        self.code = code
        self.reason = reason


class _LiveUnavailable(Exception):
    """The connection went away before a ``sync`` was answered (use REST instead)."""


# -- the default connector (websockets) -------------------------------------------------------


class _WebsocketsSocket:
    def __init__(self, connection: ClientConnection) -> None:
        self._connection = connection

    async def send(self, message: str) -> None:
        from websockets.exceptions import ConnectionClosed

        try:
            await self._connection.send(message)
        except ConnectionClosed as exc:
            raise _closed(exc) from exc

    async def recv(self) -> str | bytes:
        from websockets.exceptions import ConnectionClosed

        try:
            return await self._connection.recv()
        except ConnectionClosed as exc:
            raise _closed(exc) from exc

    async def close(self, code: int = 1000, reason: str = "") -> None:
        await self._connection.close(code, reason)


def _closed(exc: Exception) -> LiveConnectionClosed:
    frame = getattr(exc, "rcvd", None)
    if frame is None:
        return LiveConnectionClosed(1006, "")
    return LiveConnectionClosed(int(frame.code), str(frame.reason))


def _handshake_error(status: int, body: bytes | bytearray | None) -> HomeportError:
    problem: dict[str, Any] = {}
    with contextlib.suppress(ValueError, UnicodeDecodeError):
        parsed = json.loads(body or b"")
        if isinstance(parsed, dict):
            problem = parsed
    code = problem.get("code")
    detail = problem.get("detail") or problem.get("title")
    return HomeportError(
        status,
        code if isinstance(code, str) else f"HTTP_{status}",
        detail if isinstance(detail, str) else "WebSocket upgrade refused",
        problem=problem,
    )


async def websockets_connect(
    url: str, headers: dict[str, str], *, open_timeout: float = 30.0
) -> WebSocketLike:
    """Open ``url`` with the ``websockets`` library (the default ``ws_connect``)."""
    from websockets.asyncio.client import connect
    from websockets.exceptions import InvalidHandshake, InvalidStatus

    try:
        connection = await connect(
            url,
            additional_headers=headers,
            open_timeout=open_timeout,
            max_size=MAX_MESSAGE_BYTES,
        )
    except InvalidStatus as exc:
        raise _handshake_error(exc.response.status_code, exc.response.body) from exc
    except (OSError, TimeoutError, InvalidHandshake) as exc:
        raise HomeportNetworkError(f"{type(exc).__name__}: {exc}") from exc
    return _WebsocketsSocket(connection)


# -- helpers ----------------------------------------------------------------------------------


def utc_timestamp() -> str:
    """Now as ISO 8601 UTC with milliseconds (``2026-01-01T00:00:00.000Z``)."""
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def encode_message(kind: str, payload: Mapping[str, Any]) -> str:
    return json.dumps(
        {"type": kind, "payload": payload, "timestamp": utc_timestamp()},
        separators=(",", ":"),
        ensure_ascii=False,
    )


def close_info(exc: BaseException) -> tuple[int, str]:
    """The close code and reason carried by the exception ``recv()``/``send()`` raised."""
    if isinstance(exc, LiveConnectionClosed):
        return exc.code, exc.reason
    frame = getattr(exc, "rcvd", None)  # websockets.exceptions.ConnectionClosed
    if frame is not None and isinstance(getattr(frame, "code", None), int):
        return int(frame.code), str(getattr(frame, "reason", "") or "")
    if type(exc).__name__.startswith("ConnectionClosed"):
        return 1006, ""
    code = getattr(exc, "code", None)  # e.g. starlette.websockets.WebSocketDisconnect
    if isinstance(code, int) and not isinstance(code, bool):
        return code, str(getattr(exc, "reason", "") or "")
    return 1006, f"{type(exc).__name__}: {exc}"


def backoff_delay(failures: int, first: float, cap: float) -> float:
    """Exponential backoff with jitter: ``first`` doubling up to ``cap``, times 0.5..1."""
    delay: float = min(cap, first * 2.0 ** max(0, failures - 1))
    return delay * (0.5 + random.random() / 2)


def _parse_time(value: Any) -> float | None:
    if not isinstance(value, str):
        return None
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return parsed.timestamp()


def _reason_code(reason: str) -> str:
    head = reason.strip().split(maxsplit=1)
    return head[0].rstrip(":,;") if head else ""


# -- the session ------------------------------------------------------------------------------


class LiveSession:
    """One live subscription of a client: connection, receive loop, heartbeats, reconnects."""

    def __init__(
        self,
        client: HomeportClient,
        connect: WsConnect,
        collections: Sequence[str] | None,
        *,
        heartbeat_interval: float,
        reconnect_delay: tuple[float, float],
        timeout: float,
    ) -> None:
        self._client = client
        self._connect = connect
        self.collections = None if not collections else sorted(set(collections))
        self.cursor_key = client._cursor_key(self.collections)
        self._heartbeat_interval = heartbeat_interval
        self._first_delay, self._max_delay = reconnect_delay
        self._timeout = timeout
        self._ws: WebSocketLike | None = None
        self._token: str | None = None
        self._task: asyncio.Task[None] | None = None
        self._stopping = False
        self._waiter: asyncio.Future[dict[str, Any]] | None = None
        self._waiter_key: str | None = None
        self._send_lock = asyncio.Lock()
        self._last_received = time.monotonic()
        self.last_server_time: str | None = None

    # -- state --------------------------------------------------------------------------------

    @property
    def connected(self) -> bool:
        return self._ws is not None and not self._stopping

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done() and not self._stopping

    # -- start / stop -------------------------------------------------------------------------

    async def start(self) -> None:
        """Connect and subscribe (raises if that fails), then run the loop in a task."""
        ws = await self._open()
        self._task = asyncio.create_task(self._run(ws), name="homeport-live")

    async def stop(self) -> None:
        self._stopping = True
        ws, self._ws = self._ws, None
        if ws is not None:
            with contextlib.suppress(Exception):
                await ws.close(CLOSE_NORMAL, "client disconnect")
        task = self._task
        if task is None or task is asyncio.current_task():
            return  # called from a callback running in the loop: it ends on its own
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task

    # -- connecting ---------------------------------------------------------------------------

    async def _open(self) -> WebSocketLike:
        """Connect (refreshing an expired token first) and send ``subscribe``."""
        client = self._client
        await client._refresh_if_expired()
        refreshed = False
        while True:
            token = client._access_token
            if token is None:
                raise HomeportError(401, "AUTH_001", "Not logged in: call login() first")
            try:
                ws = await self._connect(client._live_url(), client._live_headers(token))
            except HomeportError as exc:
                if (
                    not refreshed
                    and exc.status == 401
                    and exc.code in REFRESH_CODES
                    and client._store.get_meta("refresh_token") is not None
                ):
                    refreshed = True
                    await client._refresh(token)
                    continue
                raise
            break
        subscribe: dict[str, Any] = {"cursor": client._store.get_meta(self._cursor_meta)}
        if self.collections is not None:
            subscribe["collections"] = self.collections
        try:
            await ws.send(encode_message("subscribe", subscribe))
        except Exception as exc:
            code, reason = close_info(exc)
            raise HomeportNetworkError(f"closed while subscribing: {code} {reason}") from exc
        self._token = token
        self._last_received = time.monotonic()
        self._ws = ws
        return ws

    @property
    def _cursor_meta(self) -> str:
        from ._store import CURSOR_PREFIX

        return CURSOR_PREFIX + self.cursor_key

    # -- the loop -----------------------------------------------------------------------------

    async def _run(self, ws: WebSocketLike | None) -> None:
        try:
            await self._loop(ws)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # a bug must not die silently in a background task
            logger.exception("live loop failed")
            await self._report({"code": "CLIENT_ERROR", "message": f"{type(exc).__name__}: {exc}"})
        finally:
            self._ws = None

    async def _loop(self, ws: WebSocketLike | None) -> None:
        failures = 0  # connections in a row that ended without a message from the server
        refreshed = False  # a token refresh was tried during this run of failures
        while not self._stopping:
            if ws is None:
                try:
                    ws = await self._open()
                except HomeportError as exc:
                    if exc.status == 0 or exc.status >= 500 or exc.status in (408, 429):
                        failures += 1
                        await asyncio.sleep(self._delay(failures))
                        continue
                    await self._report(
                        {"code": exc.code, "message": exc.detail, "status": exc.status}
                    )
                    return
            code, reason, heard = await self._serve(ws)
            ws = None
            if self._stopping:
                return
            if heard:
                failures, refreshed = 0, False
            reason_code = _reason_code(reason)
            if code == CLOSE_AUTH:
                if (
                    not refreshed
                    and reason_code in REFRESH_CODES
                    and self._client._store.get_meta("refresh_token") is not None
                ):
                    refreshed = True
                    try:
                        await self._client._refresh(self._token)
                    except HomeportError as exc:
                        if exc.status == 401:  # the session is over: log in again
                            await self._report_close(code, reason)
                            return
                        refreshed = False  # the refresh did not get through: try again later
                        failures += 1
                        await asyncio.sleep(self._delay(failures))
                    continue
                await self._report_close(code, reason)
                return
            if code in (CLOSE_FORBIDDEN, CLOSE_POLICY):
                if code == CLOSE_POLICY:
                    self._client._note_policy_close()
                await self._report_close(code, reason)
                return
            failures += 1
            logger.info("live connection closed (%s %s), reconnecting", code, reason)
            await asyncio.sleep(self._delay(failures))

    def _delay(self, failures: int) -> float:
        return backoff_delay(failures, self._first_delay, self._max_delay)

    async def _serve(self, ws: WebSocketLike) -> tuple[int, str, bool]:
        """Receive until the connection ends; returns (close code, reason, heard anything)."""
        heartbeats = asyncio.create_task(self._heartbeats(ws), name="homeport-live-heartbeat")
        heard = False
        try:
            while True:
                try:
                    raw = await ws.recv()
                except asyncio.CancelledError:
                    raise
                except Exception as exc:
                    code, reason = close_info(exc)
                    return code, reason, heard
                heard = True
                self._last_received = time.monotonic()
                await self._dispatch(ws, raw)
        finally:
            heartbeats.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await heartbeats
            if self._ws is ws:
                self._ws = None
            waiter = self._waiter
            if waiter is not None and not waiter.done():
                waiter.set_exception(_LiveUnavailable())

    async def _heartbeats(self, ws: WebSocketLike) -> None:
        interval = self._heartbeat_interval
        while True:
            await asyncio.sleep(interval)
            if time.monotonic() - self._last_received > 3 * interval:
                # The server has been silent for three intervals: the connection is dead.
                with contextlib.suppress(Exception):
                    await ws.close(CLOSE_NORMAL, "no heartbeat_ack")
                return
            try:
                await self._send(ws, "heartbeat", {"client_time": utc_timestamp()})
            except Exception:
                return  # the receive loop sees the close

    async def _send(self, ws: WebSocketLike, kind: str, payload: Mapping[str, Any]) -> None:
        await self._send_text(ws, encode_message(kind, payload))

    async def _send_text(self, ws: WebSocketLike, text: str) -> None:
        async with self._send_lock:
            await ws.send(text)

    # -- incoming messages --------------------------------------------------------------------

    async def _dispatch(self, ws: WebSocketLike, raw: str | bytes) -> None:
        try:
            message = json.loads(raw)
        except ValueError:
            await self._report({"code": "BAD_MESSAGE", "message": "a message is not JSON"})
            return
        if not isinstance(message, dict) or not isinstance(message.get("payload"), dict):
            await self._report({"code": "BAD_MESSAGE", "message": "a message has no payload"})
            return
        kind, payload = message.get("type"), message["payload"]
        try:
            if kind == "server_push":
                await self._client._apply_live_push(payload, self.cursor_key)
            elif kind == "sync_response":
                waiter = self._waiter
                if waiter is not None and not waiter.done():
                    waiter.set_result(payload)
            elif kind == "heartbeat_ack":
                server_time = payload.get("server_time")
                self.last_server_time = server_time if isinstance(server_time, str) else None
            elif kind == "conflict":
                await self._client._live_conflict(payload)
            elif kind == "inbox":
                await self._inbox(ws, payload)
            elif kind == "error":
                await self._error(ws, payload)
            # other types: newer protocol features, ignored
        except Exception as exc:
            logger.exception("live message %r failed", kind)
            await self._report(
                {
                    "code": "CLIENT_ERROR",
                    "message": f"{kind} not handled: {type(exc).__name__}: {exc}",
                }
            )

    async def _inbox(self, ws: WebSocketLike, payload: dict[str, Any]) -> None:
        message_id = payload.get("message_id")
        if not isinstance(message_id, str) or not message_id:
            await self._report({"code": "BAD_MESSAGE", "message": "inbox without message_id"})
            return
        store = self._client._store
        if not store.inbox_acked(message_id):
            for callback in list(self._client._inbox_callbacks):
                try:
                    await _call(callback, payload)
                except Exception as exc:
                    # Not acked: the server delivers the message again later.
                    await self._report(
                        {
                            "code": "INBOX_CALLBACK_FAILED",
                            "message": f"{type(exc).__name__}: {exc}",
                            "message_id": message_id,
                        }
                    )
                    return
            store.mark_inbox_acked(message_id, _parse_time(payload.get("expires_at")))
        with contextlib.suppress(Exception):  # a lost ack means a redelivery, acked then
            await self._send(ws, "ack", {"message_ids": [message_id]})

    async def _error(self, ws: WebSocketLike, payload: dict[str, Any]) -> None:
        code = payload.get("code")
        message = payload.get("message")
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            key = payload.get("idempotency_key")
            if key is None or key == self._waiter_key:
                status = payload.get("status")
                waiter.set_exception(
                    HomeportError(
                        status if isinstance(status, int) else 0,
                        code if isinstance(code, str) else "LIVE_ERROR",
                        message if isinstance(message, str) else "error from the server",
                        problem=dict(payload),
                    )
                )
        await self._report(dict(payload))
        if code == "SYNC_006":
            # The cursor is too old: rebuild the replica over REST, then resubscribe.
            await self._client.force_sync(self.collections)
            with contextlib.suppress(Exception):
                await ws.close(CLOSE_NORMAL, "resubscribe after reset")

    # -- sync over the socket -----------------------------------------------------------------

    async def sync(self, batch: Batch) -> dict[str, Any]:
        """Send the stored batch body as a ``sync`` message and wait for ``sync_response``.

        Raises ``_LiveUnavailable`` when the connection is gone before the answer (the batch
        is still stored: resend it, over REST or the socket, under the same key).
        """
        ws = self._ws
        if ws is None or self._stopping:
            raise _LiveUnavailable()
        waiter: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._waiter, self._waiter_key = waiter, batch.idempotency_key
        # The stored body is embedded byte for byte.
        text = (
            '{"type":"sync","payload":'
            + batch.body
            + ',"timestamp":'
            + json.dumps(utc_timestamp())
            + "}"
        )
        try:
            try:
                await self._send_text(ws, text)
            except Exception as exc:
                raise _LiveUnavailable() from exc
            try:
                async with asyncio.timeout(self._timeout):
                    return await waiter
            except TimeoutError as exc:
                raise HomeportNetworkError(
                    f"no sync_response within {self._timeout:g} s (the batch will be resent)"
                ) from exc
        finally:
            if self._waiter is waiter:
                self._waiter, self._waiter_key = None, None
            if waiter.done() and not waiter.cancelled():
                waiter.exception()  # retrieved: no "never retrieved" warning
            else:
                waiter.cancel()

    async def send(self, kind: str, payload: Mapping[str, Any]) -> None:
        ws = self._ws
        if ws is None or self._stopping:
            raise HomeportNetworkError("live mode is not connected")
        try:
            await self._send(ws, kind, payload)
        except Exception as exc:
            code, reason = close_info(exc)
            raise HomeportNetworkError(f"connection closed: {code} {reason}") from exc

    # -- reporting ----------------------------------------------------------------------------

    async def _report_close(self, code: int, reason: str) -> None:
        await self._report(
            {
                "code": _reason_code(reason) or f"CLOSE_{code}",
                "message": reason or f"connection closed with code {code}",
                "close_code": code,
            }
        )

    async def _report(self, error: dict[str, Any]) -> None:
        callbacks = list(self._client._live_error_callbacks)
        if not callbacks:
            logger.warning("live mode: %s", error)
        for callback in callbacks:
            try:
                await _call(callback, error)
            except Exception:
                logger.exception("on_live_error callback failed")


async def _call(callback: Callable[[dict[str, Any]], Any], payload: dict[str, Any]) -> None:
    result = callback(payload)
    if asyncio.iscoroutine(result) or isinstance(result, Awaitable):
        await result
