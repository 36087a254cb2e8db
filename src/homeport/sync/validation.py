"""JSON Schema validation of records.

Every write is validated by jsonschema-rs (compiled, in Rust): every draft from 04 to 2020-12
with its own keywords (``unevaluatedProperties``, ``dependentRequired``, ``prefixItems``, a
``$ref`` beside other keywords), ``format`` checked, and ``pattern`` / ``patternProperties``
matched by a linear-time regex engine, so that no pattern an admin declares can make a value a
member writes stall the server (a backtracking engine takes exponential time on ``^(a+)+$``).
How much checking one value can take is bounded when the schema is declared
(:mod:`homeport.sync.schema_cost`).

A collection schema is one self-contained document (see :mod:`homeport.sync.schema_checks`):
the validator fetches nothing, and a stored schema that cannot be used (declared before these
checks) rejects each write with a clear error instead of failing the request.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import jsonschema_rs

from homeport.models.sync import Collection
from homeport.sync import schema_checks
from homeport.sync.schema_checks import refuse_retrieval
from homeport.sync.schema_cost import cost_problem

OWNER_FIELD_KEYWORD = "x-owner-field"
# Declaring checks and compiles the schema in the request, holding the event loop (about
# 13 microseconds per property, 32 ms at this size): about 2,500 properties at most.
SCHEMA_MAX_BYTES = 128 * 1024
NESTED_TOO_DEEPLY = "the schema is nested too deeply for the validator"
UNSUPPORTED_PATTERN = (
    "is not a regular expression the validator supports (ECMA-262 without lookaround or "
    "backreferences, so that matching takes linear time)"
)
# Matching takes time in proportion to the text and to the compiled pattern: this bounds the
# second factor (about 2 ms per pattern for 100 KB of text at worst, where 256 KiB allowed
# seconds). Large counted repetitions are what reaches it: ``.{1,100}``, ``\p{L}{1,50}``.
PATTERN_MAX_COMPILED_BYTES = 64 * 1024
PATTERN_TOO_LARGE = (
    "is too large once compiled (a counted repetition such as {1,200} of a character class "
    "repeats the class that many times); limit the length with maxLength and minLength instead"
)
_UNBOUNDED_PATTERNS = jsonschema_rs.RegexOptions()


class SchemaError(ValueError):
    """An unusable schema; ``location`` is the path of the problem inside it ("" for the whole
    schema) and ``reason`` the message without it."""

    def __init__(self, reason: str, location: str = "") -> None:
        super().__init__(f"{location}: {reason}" if location else reason)
        self.reason = reason
        self.location = location


def _compile(schema: dict[str, Any]) -> Any:
    """The validator of ``schema``; it can do no I/O (a reference outside the schema fails to
    compile: the retriever refuses every URI)."""
    return jsonschema_rs.validator_for(
        schema,
        validate_formats=True,
        pattern_options=jsonschema_rs.RegexOptions(size_limit=PATTERN_MAX_COMPILED_BYTES),
        retriever=refuse_retrieval,
    )


def _pattern_problem(pattern: str) -> str:
    """Why the engine refused ``pattern``: its size once compiled, or its syntax."""
    try:  # the engine's own, far larger, limit: compiles what only ours refuses
        jsonschema_rs.validator_for({"pattern": pattern}, pattern_options=_UNBOUNDED_PATTERNS)
    except jsonschema_rs.ValidationError:
        return UNSUPPORTED_PATTERN
    return PATTERN_TOO_LARGE


def _size(schema: dict[str, Any]) -> int:
    return len(json.dumps(schema, separators=(",", ":"), ensure_ascii=False).encode())


def _structure_problem(schema: dict[str, Any]) -> schema_checks.Problem | None:
    """The checks after the values' (drafts, references, cost), before compiling."""
    problem = schema_checks.dialect_problem(schema)
    if problem is not None:
        return problem
    targets = schema_checks.references(schema)
    return targets if isinstance(targets, tuple) else cost_problem(schema, targets)


def _compiled(schema: dict[str, Any]) -> Any:
    """:func:`_compile`, its refusals as :class:`SchemaError` (it checks the schema against
    its draft's metaschema too)."""
    try:
        return _compile(schema)
    except jsonschema_rs.ValidationError as exc:
        raise _invalid(exc) from exc
    except jsonschema_rs.ReferencingError as exc:
        raise SchemaError(
            f"a reference points to nothing in the schema: {_first_line(exc)}"
        ) from exc
    except ValueError as exc:  # "Recursion limit reached"
        raise SchemaError(NESTED_TOO_DEEPLY) from exc


def check_schema(schema: dict[str, Any]) -> None:
    """``SchemaError`` when ``schema`` is not a usable JSON Schema for records."""
    problem = schema_checks.value_problem(schema)
    if problem is None and _size(schema) > SCHEMA_MAX_BYTES:
        problem = ("", f"a collection schema is at most {SCHEMA_MAX_BYTES // 1024} KiB of JSON")
    problem = problem or _structure_problem(schema)
    if problem is not None:
        raise SchemaError(problem[1], problem[0])
    _compiled(schema)
    if schema.get("type", "object") != "object":
        raise SchemaError("a record schema must describe an object (type: object)")
    owner = schema.get(OWNER_FIELD_KEYWORD)
    if owner is not None and not isinstance(owner, str):
        raise SchemaError(f"{OWNER_FIELD_KEYWORD} must name a field")


def _invalid(exc: Any) -> SchemaError:
    """What the metaschema check found, where it is in the schema."""
    where = schema_checks.location(tuple(exc.instance_path))
    kind = exc.kind
    if isinstance(kind, jsonschema_rs.ValidationErrorKind.Format) and kind.format == "regex":
        pattern = str(exc.instance)
        return SchemaError(f"{json.dumps(pattern)[:200]} {_pattern_problem(pattern)}", where)
    at = f" (at {where})" if where else ""
    return SchemaError(f"invalid JSON Schema: {exc.message[:300]}{at}")


def _unusable(reason: str) -> list[tuple[str, str]]:
    """The one error of every record checked against a stored schema that cannot be used."""
    return [
        (
            "(record)",
            f"the collection schema cannot be used ({reason[:200]}); declare the "
            "collection's schema again",
        )
    ]


def _first_line(exc: BaseException) -> str:
    return str(exc).strip().split("\n", 1)[0][:300]


def _field(error: Any) -> str:
    path = ".".join(str(part) for part in error.instance_path)
    if isinstance(error.kind, jsonschema_rs.ValidationErrorKind.Required):
        missing = str(error.kind.property)
        path = f"{path}.{missing}" if path else missing
    return path or "(record)"


@dataclass(frozen=True)
class RecordValidator:
    compiled: Any
    # Why the stored schema cannot check records (then ``compiled`` is None and every record
    # is rejected).
    unusable: str = ""

    def errors(self, document: dict[str, Any]) -> list[tuple[str, str]]:
        """(field path, message) for every violation; empty when the document is valid."""
        if self.compiled is None:
            return _unusable(self.unusable)
        if self.compiled.is_valid(document):
            return []
        return sorted(
            (_field(error), error.message[:200]) for error in self.compiled.iter_errors(document)
        )


def _rejecting(reason: str) -> RecordValidator:
    return RecordValidator(None, reason)


def validator_of(schema: Any) -> RecordValidator:
    """The validator of a stored schema; one that rejects every record (with the reason) when
    the schema cannot be used, so that a write never fails with an exception. The checks of a
    declaration run first: a schema stored before them is judged by the same rules."""
    if not isinstance(schema, dict):
        return _rejecting("it is not a JSON object")
    problem = schema_checks.value_problem(schema) or _structure_problem(schema)
    if problem is not None:
        return _rejecting(str(SchemaError(problem[1], problem[0])))
    try:
        return RecordValidator(_compiled(schema))
    except SchemaError as exc:
        return _rejecting(str(exc))


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
        found = _COMPILED[key] = validator_of(collection.json_schema)
    return found
