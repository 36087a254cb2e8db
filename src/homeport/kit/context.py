"""Per-request context shared by middleware, error handlers and logs."""

from __future__ import annotations

import re
from contextvars import ContextVar

from homeport.kit.ids import new_id

_trace_id: ContextVar[str | None] = ContextVar("homeport_trace_id", default=None)
_SAFE_TRACE_ID = re.compile(r"^[A-Za-z0-9._:-]{8,128}$")


def accept_trace_id(candidate: str | None) -> str:
    """Reuse a caller's X-Request-ID only when it is a safe token; else make one."""
    if candidate and _SAFE_TRACE_ID.match(candidate):
        return candidate
    return new_id()


def set_trace_id(trace_id: str) -> None:
    _trace_id.set(trace_id)


def current_trace_id() -> str:
    trace_id = _trace_id.get()
    if trace_id is None:
        trace_id = new_id()
        _trace_id.set(trace_id)
    return trace_id
