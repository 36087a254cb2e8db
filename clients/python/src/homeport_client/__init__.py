"""Offline-first Python client for Homeport."""

from ._client import (
    ConflictCallback,
    ErrorCallback,
    HomeportClient,
    InboxCallback,
    LiveErrorCallback,
    PullReport,
    PushMode,
    PushReport,
    SyncReport,
)
from ._hlc import HybridLogicalClock, format_hlc, parse_hlc
from ._live import LiveConnectionClosed, WebSocketLike, WsConnect, websockets_connect
from ._store import canonical_json, data_hash
from .errors import HomeportError, HomeportNetworkError

__all__ = [
    "ConflictCallback",
    "ErrorCallback",
    "HomeportClient",
    "HomeportError",
    "HomeportNetworkError",
    "HybridLogicalClock",
    "InboxCallback",
    "LiveConnectionClosed",
    "LiveErrorCallback",
    "PullReport",
    "PushMode",
    "PushReport",
    "SyncReport",
    "WebSocketLike",
    "WsConnect",
    "canonical_json",
    "data_hash",
    "format_hlc",
    "parse_hlc",
    "websockets_connect",
]

__version__ = "0.1.0"
