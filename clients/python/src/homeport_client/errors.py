"""Errors raised by the Homeport client."""

from __future__ import annotations

from typing import Any

import httpx

__all__ = ["HomeportError", "HomeportNetworkError"]


class HomeportError(Exception):
    """An error answered by the server (an ``application/problem+json`` document).

    ``status`` is the HTTP status, ``code`` the stable error code (e.g. ``AUTH_002``,
    ``SYNC_006``), ``detail`` the human-readable explanation. ``problem`` holds the whole
    problem document (extra members such as ``tenants`` for ``AUTH_007``).
    """

    def __init__(
        self,
        status: int,
        code: str,
        detail: str,
        *,
        trace_id: str | None = None,
        problem: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(f"{status} {code}: {detail}")
        self.status = status
        self.code = code
        self.detail = detail
        self.trace_id = trace_id
        self.problem: dict[str, Any] = problem or {}

    @classmethod
    def from_response(cls, response: httpx.Response) -> HomeportError:
        """Build the error from a non-2xx answer; tolerates answers that are not problem JSON."""
        problem: dict[str, Any] = {}
        try:
            parsed = response.json()
        except ValueError:
            parsed = None
        if isinstance(parsed, dict):
            problem = parsed
        code = problem.get("code")
        detail = problem.get("detail") or problem.get("title")
        trace_id = problem.get("trace_id")
        return cls(
            response.status_code,
            code if isinstance(code, str) else f"HTTP_{response.status_code}",
            detail if isinstance(detail, str) else response.text[:500],
            trace_id=trace_id if isinstance(trace_id, str) else None,
            problem=problem,
        )


class HomeportNetworkError(HomeportError):
    """No answer arrived (connection refused, timeout, ...). ``status`` is 0.

    The original ``httpx`` exception is chained as ``__cause__``. Anything queued stays queued
    and an unanswered push batch is resent unchanged by the next ``push()``.
    """

    def __init__(self, detail: str) -> None:
        super().__init__(0, "NETWORK_ERROR", detail)
