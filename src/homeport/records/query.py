"""Parsing a list request (``filter[...]``, ``sort``, ``fields``, ``limit``, ``cursor``, ``q``).

Every name is checked against the collection: a filter or a field must be a top-level property
of its JSON Schema, a sort key must be declared ``sortable`` (or be ``id``, ``created_at``,
``updated_at``). Anything else is a 400 ``VALIDATION_004`` naming the offending parameter, so no
client text ever reaches SQL as anything but a bound value.
"""

from __future__ import annotations

import enum
import hashlib
import json
import math
import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from homeport.kit.errors import ProblemError, invalid_parameter
from homeport.kit.text import whole_number
from homeport.models.sync import Collection

OPERATORS = ("eq", "ne", "lt", "lte", "gt", "gte", "in", "contains")
RANGE_OPERATORS = ("lt", "lte", "gt", "gte")
META_SORT_KEYS = ("id", "created_at", "updated_at")
DEFAULT_SORT = "id"
MAX_IN_VALUES = 100
MAX_VALUE_LENGTH = 1000
MAX_FILTERS = 20
MAX_QUERY_LENGTH = 500

_FILTER_KEY = re.compile(r"^filter\[([^\[\]]*)\](?:\[([^\[\]]*)\])?$")
_INTEGER = re.compile(r"^-?\d{1,18}$")
_PARAMETERS = ("limit", "cursor", "sort", "fields", "q")


class Kind(enum.StrEnum):
    """What the schema says a field holds; decides how a filter value is read."""

    NUMBER = "number"
    STRING = "string"
    BOOLEAN = "boolean"
    ARRAY = "array"
    OBJECT = "object"
    ANY = "any"


_KIND_OF_TYPE = {
    "integer": Kind.NUMBER,
    "number": Kind.NUMBER,
    "string": Kind.STRING,
    "boolean": Kind.BOOLEAN,
    "array": Kind.ARRAY,
    "object": Kind.OBJECT,
}
_OPERATORS_OF_KIND = {
    Kind.NUMBER: ("eq", "ne", "lt", "lte", "gt", "gte", "in"),
    Kind.STRING: OPERATORS,
    Kind.BOOLEAN: ("eq", "ne", "in"),
    Kind.ARRAY: ("contains",),
    Kind.OBJECT: (),
    Kind.ANY: OPERATORS,
}


@dataclass(frozen=True)
class Filter:
    field: str
    op: str
    # A scalar (str, int, float, bool or None); a tuple of them for ``in``. For ``contains``
    # on an array, the element looked for; on a string, the substring.
    value: Any
    kind: Kind


@dataclass(frozen=True)
class Sort:
    key: str  # a data field, or one of META_SORT_KEYS, or "rank" (full-text search)
    descending: bool = False

    @property
    def is_meta(self) -> bool:
        return self.key in META_SORT_KEYS or self.key == "rank"

    def __str__(self) -> str:
        return ("-" if self.descending else "") + self.key


@dataclass(frozen=True)
class ListQuery:
    filters: tuple[Filter, ...]
    sort: Sort
    fields: tuple[str, ...] | None
    limit: int
    cursor: str | None
    q: str | None

    def fingerprint(self) -> str:
        """What a cursor is bound to: the same filters, sort and search give the same value."""
        described = {
            "f": sorted([f.field, f.op, json.dumps(f.value)] for f in self.filters),
            "s": str(self.sort),
            "q": self.q,
        }
        text = json.dumps(described, sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(text.encode()).hexdigest()[:16]


def invalid(parameter: str, message: str) -> ProblemError:
    return invalid_parameter(parameter, f"{parameter}: {message}", message)


def properties(collection: Collection) -> dict[str, Any]:
    found = collection.json_schema.get("properties")
    return found if isinstance(found, dict) else {}


def kind_of(schema: Any) -> Kind:
    """The kind of a property from its ``type`` (one type, or one type and ``null``)."""
    if not isinstance(schema, dict):
        return Kind.ANY
    declared = schema.get("type")
    types = [declared] if isinstance(declared, str) else declared
    if not isinstance(types, list):
        return Kind.ANY
    kinds = {_KIND_OF_TYPE.get(t, Kind.ANY) for t in types if t != "null"}
    return kinds.pop() if len(kinds) == 1 else Kind.ANY


def _number(text: str) -> int | float:
    if _INTEGER.match(text):
        return int(text)
    number = float(text)  # ValueError for anything else
    if not math.isfinite(number):
        raise ValueError("not a finite number")
    return number


def _scalar(text: str, kind: Kind) -> Any:
    """``text`` read as a value of ``kind`` (ValueError when it is not one)."""
    if kind is Kind.NUMBER:
        try:
            return _number(text)
        except ValueError:
            raise ValueError(f"{text[:40]!r} is not a number") from None
    if kind is Kind.BOOLEAN:
        if text not in ("true", "false"):
            raise ValueError("use true or false")
        return text == "true"
    if kind is Kind.ANY:
        try:
            value = json.loads(text)
        except ValueError:
            return text
        if isinstance(value, float) and not math.isfinite(value):
            return text
        if isinstance(value, int) and not isinstance(value, bool) and abs(value) >= 2**63:
            # Beyond the databases' integers; compared as the JSON number it also is.
            return float(value)
        return value if isinstance(value, str | int | float | bool) or value is None else text
    return text


def parse_filter(key: str, raw: str, collection: Collection) -> Filter:
    match = _FILTER_KEY.match(key)
    if match is None:
        raise invalid(key, "write filter[field]=value or filter[field][operator]=value")
    field, op = match.group(1), match.group(2) or "eq"
    declared = properties(collection)
    if field not in declared:
        raise invalid(key, f"{field[:63]!r} is not a field of {collection.name}")
    if op not in OPERATORS:
        raise invalid(key, f"unknown operator {op[:20]!r}; use one of {', '.join(OPERATORS)}")
    kind = kind_of(declared[field])
    if op not in _OPERATORS_OF_KIND[kind]:
        allowed = ", ".join(_OPERATORS_OF_KIND[kind]) or "none"
        raise invalid(key, f"operator {op} does not apply to a {kind.value} field ({allowed})")
    if len(raw) > MAX_VALUE_LENGTH:
        raise invalid(key, f"a value has at most {MAX_VALUE_LENGTH} characters")
    if "\x00" in raw:
        # PostgreSQL text cannot hold it, and SQLite's LIKE would stop reading at it.
        raise invalid(key, "a value cannot contain the NUL character")
    try:
        value: Any
        if op == "in":
            parts = raw.split(",")
            if len(parts) > MAX_IN_VALUES:
                raise ValueError(f"at most {MAX_IN_VALUES} values")
            value = tuple(_scalar(part, kind) for part in parts)
        elif op == "contains":
            element = kind_of(declared[field].get("items")) if kind is Kind.ARRAY else Kind.STRING
            if element in (Kind.ARRAY, Kind.OBJECT):
                raise ValueError("contains looks for a scalar element")
            value = _scalar(raw, element) if kind is Kind.ARRAY else raw
        else:
            value = _scalar(raw, kind)
    except ValueError as exc:
        raise invalid(key, str(exc)) from None
    scalars = value if isinstance(value, tuple) else (value,)
    if op in RANGE_OPERATORS and any(v is None or isinstance(v, bool) for v in scalars):
        raise invalid(key, f"{op} compares numbers or strings")
    return Filter(field, op, value, kind)


def parse_sort(raw: str, collection: Collection) -> Sort:
    descending = raw.startswith("-")
    key = raw.removeprefix("-").removeprefix("+")
    if "," in key:
        raise invalid("sort", "sort on one key (the id breaks ties)")
    if key not in META_SORT_KEYS and key not in (collection.sortable or []):
        allowed = ", ".join([*META_SORT_KEYS, *(collection.sortable or [])])
        raise invalid("sort", f"{key[:63]!r} is not sortable; use one of {allowed}")
    return Sort(key, descending)


def parse_fields(raw: str, collection: Collection) -> tuple[str, ...]:
    names = [name.strip() for name in raw.split(",") if name.strip()]
    if not names:
        raise invalid("fields", "name at least one field")
    allowed = set(properties(collection)) | {collection.id_field}
    unknown = [name for name in names if name not in allowed]
    if unknown:
        raise invalid("fields", f"{unknown[0][:63]!r} is not a field of {collection.name}")
    return tuple(dict.fromkeys(names))


def parse_list_query(
    parameters: Iterable[tuple[str, str]],
    collection: Collection,
    *,
    default_limit: int,
    max_limit: int,
) -> ListQuery:
    filters: list[Filter] = []
    seen: dict[str, str] = {}
    for key, raw in parameters:
        if key.startswith("filter["):
            filters.append(parse_filter(key, raw, collection))
            if len(filters) > MAX_FILTERS:
                raise invalid(key, f"at most {MAX_FILTERS} filters")
            continue
        if key not in _PARAMETERS:
            raise invalid(key[:100], "unknown parameter")
        if key in seen:
            raise invalid(key, "given twice")
        seen[key] = raw
    limit = default_limit
    if "limit" in seen:
        given = whole_number(seen["limit"], 9)
        if given is None or not 1 <= given <= max_limit:
            raise invalid("limit", f"a whole number from 1 to {max_limit}")
        limit = given
    q = seen.get("q")
    if q is not None and not 1 <= len(q.strip()) <= MAX_QUERY_LENGTH:
        raise invalid("q", f"1 to {MAX_QUERY_LENGTH} characters")
    if q is not None and "\x00" in q:
        raise invalid("q", "cannot contain the NUL character")
    if "sort" in seen:
        sort = parse_sort(seen["sort"], collection)
    else:
        # A search is ranked unless a sort is asked for.
        sort = Sort("rank") if q is not None else Sort(DEFAULT_SORT)
    fields = parse_fields(seen["fields"], collection) if "fields" in seen else None
    cursor = seen.get("cursor") or None
    return ListQuery(tuple(filters), sort, fields, limit, cursor, q.strip() if q else None)
