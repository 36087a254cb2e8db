"""JSON Schema validation of records.

Every write is validated. The common case (a valid record) runs a compiled validator
(fastjsonschema); only a failing record is checked again with jsonschema, which lists every
failing field for the error answer.

A collection schema is one self-contained document (see :mod:`homeport.sync.schema_checks`):
neither validator can fetch anything, and a stored schema that cannot be used (declared before
these checks) rejects each write with a clear error instead of failing the request.
"""

from __future__ import annotations

import contextlib
import copy
import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import fastjsonschema
import jsonschema
import referencing.exceptions
from jsonschema.validators import validator_for as jsonschema_validator_for

from homeport.models.sync import Collection
from homeport.sync import schema_checks
from homeport.sync.schema_checks import NO_FETCH_HANDLERS, NO_FETCH_REGISTRY

OWNER_FIELD_KEYWORD = "x-owner-field"
# Compiling takes about 0.4 ms per 50 bytes of schema (a property) and holds the event loop:
# at most about 2,500 properties, a second.
SCHEMA_MAX_BYTES = 128 * 1024
NESTED_TOO_DEEPLY = "the schema is nested too deeply for the validator"
TOO_DEEP_OR_ENDLESS = "the schema is nested too deeply or refers to itself without end"
RECORD_ENDLESS = (
    "checking the record never ends: it is nested too deeply, or the collection schema "
    "refers to itself without end"
)


class SchemaError(ValueError):
    """An unusable schema; ``location`` is the path of the problem inside it ("" for the whole
    schema) and ``reason`` the message without it."""

    def __init__(self, reason: str, location: str = "") -> None:
        super().__init__(f"{location}: {reason}" if location else reason)
        self.reason = reason
        self.location = location


def _compile(schema: dict[str, Any]) -> tuple[Callable[[Any], Any], Any]:
    """Both validators for ``schema``; neither can do I/O. fastjsonschema gets a copy: it
    rewrites the references of what it compiles."""
    fast = fastjsonschema.compile(copy.deepcopy(schema), handlers=NO_FETCH_HANDLERS)
    full_class = jsonschema_validator_for(schema, default=jsonschema.Draft202012Validator)
    return fast, full_class(schema, registry=NO_FETCH_REGISTRY)


def _size(schema: dict[str, Any]) -> int:
    return len(json.dumps(schema, separators=(",", ":"), ensure_ascii=False).encode())


def check_schema(schema: dict[str, Any]) -> None:
    """``SchemaError`` when ``schema`` is not a usable JSON Schema for records."""
    problem = schema_checks.value_problem(schema)
    if problem is None and _size(schema) > SCHEMA_MAX_BYTES:
        problem = ("", f"a collection schema is at most {SCHEMA_MAX_BYTES // 1024} KiB of JSON")
    problem = (
        problem or schema_checks.dialect_problem(schema) or schema_checks.reference_problem(schema)
    )
    if problem is not None:
        raise SchemaError(problem[1], problem[0])
    try:
        jsonschema_validator_for(schema).check_schema(schema)
    except jsonschema.SchemaError as exc:
        path = tuple(exc.absolute_path)
        at = f" (at {schema_checks.location(path)})" if path else ""
        raise SchemaError(f"invalid JSON Schema: {exc.message[:300]}{at}") from exc
    except RecursionError as exc:
        raise SchemaError(NESTED_TOO_DEEPLY) from exc
    try:
        fast, full = _compile(schema)
        # Compiling resolves every reference; checking a record shows a schema that would
        # recurse without end where the static check above cannot see it.
        with contextlib.suppress(fastjsonschema.JsonSchemaValueException):
            fast({})
        for _error in full.iter_errors({}):
            pass
    except schema_checks.RemoteReferenceRefused as exc:
        raise SchemaError(str(exc)) from exc
    except fastjsonschema.JsonSchemaDefinitionException as exc:
        raise SchemaError(f"invalid JSON Schema: {getattr(exc, 'message', exc)}") from exc
    except RecursionError as exc:
        raise SchemaError(TOO_DEEP_OR_ENDLESS) from exc
    except (SyntaxError, MemoryError) as exc:  # the generated code exceeds Python's limits
        raise SchemaError(NESTED_TOO_DEEPLY) from exc
    except referencing.exceptions.Unresolvable as exc:
        raise SchemaError(f"a reference points to nothing in the schema: {exc}") from exc
    except Exception as exc:  # the compiler rejects some constructs with other errors
        raise SchemaError(f"unsupported JSON Schema: {exc}") from exc
    if schema.get("type", "object") != "object":
        raise SchemaError("a record schema must describe an object (type: object)")
    owner = schema.get(OWNER_FIELD_KEYWORD)
    if owner is not None and not isinstance(owner, str):
        raise SchemaError(f"{OWNER_FIELD_KEYWORD} must name a field")


def _unusable(reason: str) -> list[tuple[str, str]]:
    """The one error of every record checked against a stored schema that cannot be used."""
    return [
        (
            "(record)",
            f"the collection schema cannot be used ({reason[:200]}); declare the "
            "collection's schema again",
        )
    ]


@dataclass(frozen=True)
class RecordValidator:
    fast: Callable[[Any], Any] | None
    full: Any
    # Why the stored schema cannot check records (then ``fast`` and ``full`` are None and
    # every record is rejected).
    unusable: str = ""

    def errors(self, document: dict[str, Any]) -> list[tuple[str, str]]:
        """(field path, message) for every violation; empty when the document is valid."""
        if self.fast is None:
            return _unusable(self.unusable)
        try:
            self.fast(document)
            return []
        except fastjsonschema.JsonSchemaValueException:
            pass
        except RecursionError:
            return [("(record)", RECORD_ENDLESS)]
        found = []
        try:
            for error in self.full.iter_errors(document):
                path = ".".join(str(part) for part in error.absolute_path)
                if not path and error.validator == "required":
                    missing = error.message.split("'")
                    path = missing[1] if len(missing) > 1 else ""
                found.append((path or "(record)", error.message[:200]))
        except RecursionError:
            return [("(record)", RECORD_ENDLESS)]
        except referencing.exceptions.Unresolvable as exc:
            return _unusable(f"a reference points to nothing: {exc}")
        return sorted(found)


def _rejecting(reason: str) -> RecordValidator:
    return RecordValidator(None, None, reason)


def _usable(schema: Any) -> RecordValidator:
    """The validator of a stored schema; one that rejects every record (with the reason) when
    the schema cannot be used, so that a write never fails with an exception."""
    if not isinstance(schema, dict):
        return _rejecting("it is not a JSON object")
    problem = schema_checks.value_problem(schema)
    if problem is not None:
        return _rejecting(str(SchemaError(problem[1], problem[0])))
    try:
        fast, full = _compile(schema)
    except RecursionError:
        return _rejecting(TOO_DEEP_OR_ENDLESS)
    except (SyntaxError, MemoryError):
        return _rejecting(NESTED_TOO_DEEPLY)
    except Exception as exc:  # a reference outside the schema, or one to nothing
        return _rejecting(str(getattr(exc, "message", exc)))
    return RecordValidator(fast, full)


# Compiled validators by (collection id, schema version): a schema change bumps the version,
# so an entry never goes stale, and looking one up costs no hashing of the schema.
_COMPILED: dict[tuple[str, int], RecordValidator] = {}
_MAX_COMPILED = 512


def validator_for(collection: Collection) -> RecordValidator:
    key = (collection.id, collection.schema_version)
    found = _COMPILED.get(key)
    if found is None:
        if len(_COMPILED) >= _MAX_COMPILED:
            _COMPILED.clear()
        found = _COMPILED[key] = _usable(collection.json_schema)
    return found
