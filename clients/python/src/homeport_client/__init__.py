"""Offline-first Python client for Homeport."""

from ._client import (
    ConflictCallback,
    ErrorCallback,
    HomeportClient,
    PullReport,
    PushMode,
    PushReport,
    SyncReport,
)
from ._hlc import HybridLogicalClock, format_hlc, parse_hlc
from ._store import canonical_json, data_hash
from .errors import HomeportError, HomeportNetworkError

__all__ = [
    "ConflictCallback",
    "ErrorCallback",
    "HomeportClient",
    "HomeportError",
    "HomeportNetworkError",
    "HybridLogicalClock",
    "PullReport",
    "PushMode",
    "PushReport",
    "SyncReport",
    "canonical_json",
    "data_hash",
    "format_hlc",
    "parse_hlc",
]

__version__ = "0.1.0"
