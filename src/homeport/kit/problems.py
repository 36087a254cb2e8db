"""Turns every error into RFC 9457 problem+json; nothing internal (trace, SQL) leaks out."""

from __future__ import annotations

import json
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from starlette.exceptions import HTTPException as StarletteHTTPException

from homeport.kit.context import current_trace_id
from homeport.kit.errors import PROBLEM_CONTENT_TYPE, ErrorCode, ProblemError, problem_body
from homeport.kit.logging import get_logger

log = get_logger("homeport.errors")

_STATUS_CODES = {
    404: ErrorCode.NOT_FOUND,
    405: ErrorCode.METHOD_NOT_ALLOWED,
    413: ErrorCode.PAYLOAD_TOO_LARGE,
    429: ErrorCode.RATE_001,
    503: ErrorCode.UNAVAILABLE,
    401: ErrorCode.AUTH_001,
    403: ErrorCode.AUTH_006,
}


class ProblemResponse(JSONResponse):
    media_type = PROBLEM_CONTENT_TYPE

    def render(self, content: Any) -> bytes:
        try:
            return super().render(content)
        except UnicodeEncodeError:
            # A detail that repeats the request's text can hold a lone surrogate, which has no
            # UTF-8: escaped (``\ud800``), as JSON allows, instead of failing the answer.
            return json.dumps(content, allow_nan=False, separators=(",", ":")).encode()


class FieldError(BaseModel):
    field: str
    message: str


class Problem(BaseModel):
    """The error body (RFC 9457) documented in OpenAPI."""

    type: str
    title: str
    status: int
    detail: str
    code: str
    trace_id: str
    instance: str | None = None
    errors: list[FieldError] | None = None


def render(
    code: ErrorCode,
    detail: str | None,
    request: Request | None = None,
    *,
    status: int | None = None,
    extra: dict[str, Any] | None = None,
    headers: dict[str, str] | None = None,
) -> ProblemResponse:
    trace_id = current_trace_id()
    body = problem_body(
        code,
        detail,
        trace_id,
        instance=request.url.path if request is not None else None,
        status=status,
        extra=extra,
    )
    all_headers = {"X-Trace-Id": trace_id, **(headers or {})}
    return ProblemResponse(body, status_code=body["status"], headers=all_headers)


def problem_response(error: ProblemError, request: Request | None = None) -> ProblemResponse:
    return render(
        error.code,
        error.detail,
        request,
        status=error.status,
        extra=error.extra,
        headers=error.headers,
    )


def _field_name(location: tuple[Any, ...] | list[Any]) -> str:
    parts = [str(part) for part in location]
    if parts and parts[0] in {"body", "query", "path", "header", "cookie"}:
        parts = parts[1:] or parts
    return ".".join(parts)


async def _on_problem(request: Request, exc: Exception) -> ProblemResponse:
    assert isinstance(exc, ProblemError)
    return problem_response(exc, request)


async def _on_validation(request: Request, exc: Exception) -> ProblemResponse:
    assert isinstance(exc, RequestValidationError)
    errors = [
        {"field": _field_name(error.get("loc", ())), "message": str(error.get("msg", "invalid"))}
        for error in exc.errors()
    ]
    names = ", ".join(sorted({error["field"] for error in errors})) or "request"
    return render(
        ErrorCode.VALIDATION_001,
        f"Invalid value for: {names}",
        request,
        extra={"errors": errors},
    )


async def _on_http(request: Request, exc: Exception) -> ProblemResponse:
    assert isinstance(exc, StarletteHTTPException)
    code = _STATUS_CODES.get(exc.status_code)
    if code is None:
        code = ErrorCode.VALIDATION_001 if exc.status_code < 500 else ErrorCode.INTERNAL
    detail = exc.detail if isinstance(exc.detail, str) else None
    return render(code, detail, request, status=exc.status_code, headers=dict(exc.headers or {}))


async def _on_unexpected(request: Request, exc: Exception) -> ProblemResponse:
    log.error("unhandled_error", path=request.url.path, exc_info=exc)
    return render(ErrorCode.INTERNAL, "An internal error occurred", request)


def install_problem_handlers(app: FastAPI) -> None:
    app.add_exception_handler(ProblemError, _on_problem)
    app.add_exception_handler(RequestValidationError, _on_validation)
    app.add_exception_handler(StarletteHTTPException, _on_http)
    app.add_exception_handler(Exception, _on_unexpected)
    _document_problems_as_problem_json(app)


def _document_problems_as_problem_json(app: FastAPI) -> None:
    """FastAPI files a response ``model`` under ``application/json``; errors are problem+json.

    The generated schema is rewritten once so every error answer is documented with the
    ``Problem`` schema under ``application/problem+json`` only, including FastAPI's own 422.
    """
    generate = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is not None:
            return app.openapi_schema
        schema = generate()
        problem_ref = {"$ref": "#/components/schemas/Problem"}
        components = schema.setdefault("components", {}).setdefault("schemas", {})
        components["Problem"] = _problem_component(components)
        for operations in schema.get("paths", {}).values():
            for operation in operations.values():
                for status, answer in operation.get("responses", {}).items():
                    if str(status)[0] in "45":
                        answer["content"] = {PROBLEM_CONTENT_TYPE: {"schema": problem_ref}}
        for unused in ("HTTPValidationError", "ValidationError"):
            components.pop(unused, None)
        return schema

    app.openapi = openapi  # type: ignore[method-assign]


def _problem_component(components: dict[str, Any]) -> dict[str, Any]:
    """The Problem schema with its nested FieldError pointing into components."""
    problem = Problem.model_json_schema(ref_template="#/components/schemas/{model}")
    for name, definition in problem.pop("$defs", {}).items():
        components.setdefault(name, definition)
    return problem


def responses(*codes: ErrorCode) -> dict[int | str, dict[str, Any]]:
    """OpenAPI entries for the errors an endpoint may answer (always with 422 and 429)."""
    documented: dict[int | str, dict[str, Any]] = {}
    for code in (*codes, ErrorCode.VALIDATION_001, ErrorCode.RATE_001):
        entry = documented.setdefault(
            code.status,
            {
                "model": Problem,
                "content": {PROBLEM_CONTENT_TYPE: {}},
                "description": "",
            },
        )
        titles = [part for part in entry["description"].split("; ") if part]
        titles.append(f"{code.name}: {code.title}")
        entry["description"] = "; ".join(titles)
    return documented
