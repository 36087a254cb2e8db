"""The error catalogue (DESIGN.md section 7) and RFC 9457 problem+json rendering.

Every error a client can see is an :class:`ErrorCode`; its code string is part of the API and
never changes meaning.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Any

PROBLEM_CONTENT_TYPE = "application/problem+json"
PROBLEM_TYPE_BASE = "https://homeport.dev/problems/"


@dataclass(frozen=True)
class _Spec:
    status: int
    title: str


class ErrorCode(enum.Enum):
    """Stable error codes. The value is (HTTP status, title)."""

    SYNC_001 = _Spec(400, "Invalid payload")
    SYNC_002 = _Spec(400, "Missing field")
    SYNC_003 = _Spec(409, "Idempotency key reused with another body")
    SYNC_004 = _Spec(409, "Conflict")
    SYNC_005 = _Spec(426, "Client protocol version too old")
    SYNC_006 = _Spec(410, "Reset required")
    UPLOAD_001 = _Spec(400, "Invalid upload session")
    UPLOAD_002 = _Spec(422, "Chunk checksum mismatch")
    UPLOAD_003 = _Spec(410, "Upload expired")
    UPLOAD_004 = _Spec(423, "Upload busy")
    UPLOAD_005 = _Spec(409, "Upload offset mismatch")
    UPLOAD_006 = _Spec(412, "Unsupported tus version")
    UPLOAD_007 = _Spec(413, "File too large")
    UPLOAD_008 = _Spec(422, "Invalid image")
    FILE_001 = _Spec(416, "Range not satisfiable")
    AUTH_001 = _Spec(401, "Invalid token")
    AUTH_002 = _Spec(401, "Token expired")
    AUTH_003 = _Spec(401, "Refresh token reused")
    AUTH_004 = _Spec(401, "Invalid credentials")
    AUTH_005 = _Spec(429, "Too many failed logins")
    AUTH_006 = _Spec(403, "Forbidden")
    AUTH_007 = _Spec(400, "Tenant required")
    AUTH_008 = _Spec(403, "Address not allowed")
    AUTH_009 = _Spec(400, "Invalid or expired invitation")
    RATE_001 = _Spec(429, "Rate limited")
    VALIDATION_001 = _Spec(422, "Invalid request")
    VALIDATION_002 = _Spec(409, "Already exists")
    VALIDATION_003 = _Spec(409, "Not allowed in the current state")
    VALIDATION_004 = _Spec(400, "Invalid query parameter")
    NOT_FOUND = _Spec(404, "Not found")
    METHOD_NOT_ALLOWED = _Spec(405, "Method not allowed")
    PAYLOAD_TOO_LARGE = _Spec(413, "Payload too large")
    UNAVAILABLE = _Spec(503, "Service unavailable")
    INTERNAL = _Spec(500, "Internal error")

    @property
    def status(self) -> int:
        return self.value.status

    @property
    def title(self) -> str:
        return self.value.title


@dataclass
class ProblemError(Exception):
    """Raised anywhere below the endpoints; rendered as problem+json by the app."""

    code: ErrorCode
    detail: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    headers: dict[str, str] = field(default_factory=dict)
    status: int | None = None

    def __post_init__(self) -> None:
        super().__init__(self.detail or self.code.title)

    @property
    def http_status(self) -> int:
        return self.status or self.code.status


def invalid_parameter(parameter: str, detail: str, message: str | None = None) -> ProblemError:
    """The 400 ``VALIDATION_004`` for one query parameter: ``parameter`` names it, ``errors``
    gives it with ``message`` (default: ``detail``)."""
    return ProblemError(
        ErrorCode.VALIDATION_004,
        detail,
        extra={
            "parameter": parameter,
            "errors": [{"field": parameter, "message": message or detail}],
        },
    )


def problem_body(
    code: ErrorCode,
    detail: str | None,
    trace_id: str,
    instance: str | None = None,
    status: int | None = None,
    extra: dict[str, Any] | None = None,
) -> dict[str, Any]:
    body: dict[str, Any] = {
        "type": PROBLEM_TYPE_BASE + code.name.lower().replace("_", "-"),
        "title": code.title,
        "status": status or code.status,
        "detail": detail or code.title,
        "code": code.name,
        "trace_id": trace_id,
    }
    if instance:
        body["instance"] = instance
    if extra:
        for key, value in extra.items():
            body.setdefault(key, value)
    return body


def not_found(what: str = "Resource") -> ProblemError:
    return ProblemError(ErrorCode.NOT_FOUND, f"{what} not found")


def forbidden(detail: str = "You are not allowed to do this") -> ProblemError:
    return ProblemError(ErrorCode.AUTH_006, detail)
