"""What a collection schema must be before anything compiles or stores it.

- Storable: finite numbers only, no NUL character and no lone surrogate (in keys or values), not
  nested deeper than :data:`MAX_DEPTH` (the same on SQLite and PostgreSQL).
- Self-contained: every ``$ref`` / ``$dynamicRef`` / ``$recursiveRef`` is ``#...`` (a JSON
  pointer or an anchor of this document) and resolves in it; only the top may carry ``$id``.
- Finite: no chain of references that comes back to where it started without descending into a
  field or an item (``{"if": {"$ref": "#"}}``): checking any record would never end.
- Its ``$schema``, when given, names a draft the validator implements (04 to 2020-12).

And the guard that keeps the validator from doing I/O if a check is ever missed: a retriever
that refuses every URI.

Each check answers ``(location, message)`` or None; a location is a path into the schema
(``properties.a.$ref``, ``allOf[0]``), ``""`` for the schema itself.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterator
from typing import Any
from urllib.parse import unquote

from homeport.kit.text import whole_number

Problem = tuple[str, str]
Path = tuple[str | int, ...]
# Where each reference points: (path of the object holding it, keyword) -> path of the target.
Targets = dict[tuple[Path, str], Path]

# Levels of objects and arrays a schema may have. Deeper schemas are of no use for records and
# make the validators exceed Python's limits (recursion, nested blocks in generated code).
MAX_DEPTH = 64
LOCAL_ONLY = "only references within the schema (#...) are allowed"
ENDLESS = (
    "the schema refers to itself without end (a chain of references comes back to where it "
    "started without descending into a field or an item)"
)
NOT_A_DRAFT = (
    "$schema must be a string naming a JSON Schema draft: "
    "https://json-schema.org/draft/2020-12/schema, https://json-schema.org/draft/2019-09/schema "
    "or http://json-schema.org/draft-07/schema# (-06, -04)"
)

REFERENCE_KEYWORDS = ("$ref", "$dynamicRef", "$recursiveRef")
# Keywords whose value is data, not a schema: a "$ref" in them is a value like any other.
_DATA_KEYWORDS = frozenset({"const", "enum", "default", "examples"})
# Keywords whose value maps names (of properties, patterns, definitions) to schemas.
_NAME_MAPS = frozenset(
    {"properties", "patternProperties", "dependentSchemas", "dependencies", "definitions", "$defs"}
)
# Keywords that apply a subschema to the same instance (not to one of its fields or items): a
# cycle made only of these and of references never ends.
IN_PLACE_ONE = ("not", "if", "then", "else")
IN_PLACE_MANY = ("allOf", "anyOf", "oneOf")
IN_PLACE_MAPS = ("dependentSchemas", "dependencies")
_UNSTORABLE_TEXT = re.compile("[\x00\ud800-\udfff]")


def location(path: Path) -> str:
    """``properties.a.$ref``, ``allOf[0]``; characters that cannot be shown are escaped."""
    text = ""
    for part in path:
        if isinstance(part, int):
            text += f"[{part}]"
        else:
            shown = _UNSTORABLE_TEXT.sub(lambda found: f"\\u{ord(found.group()):04x}", part)
            text += f".{shown[:60]}" if text else shown[:60]
    return text[:300]


# Storable values


def _text_problem(text: str) -> str | None:
    found = _UNSTORABLE_TEXT.search(text)
    if found is None:
        return None
    if found.group() == "\x00":
        return "holds a NUL character (\\u0000), which cannot be stored"
    return "holds a lone surrogate (an invalid Unicode character), which cannot be stored"


def value_problem(schema: Any) -> Problem | None:
    """The first value of ``schema`` that cannot be stored the same on both databases."""
    stack: list[tuple[Any, Path]] = [(schema, ())]
    while stack:
        value, path = stack.pop()
        if len(path) > MAX_DEPTH:
            return location(path), f"the schema is nested too deeply (more than {MAX_DEPTH} levels)"
        if isinstance(value, bool) or value is None or isinstance(value, int):
            continue
        if isinstance(value, float):
            if not math.isfinite(value):
                shown = "NaN" if math.isnan(value) else ("Infinity" if value > 0 else "-Infinity")
                return location(path), (
                    f"{shown} is not a JSON number (NaN and Infinity, or a number too large "
                    "for a 64-bit float such as 1e400, cannot be stored)"
                )
            continue
        if isinstance(value, str):
            problem = _text_problem(value)
            if problem:
                return location(path), f"the text {problem}"
            continue
        if isinstance(value, dict):
            children: list[tuple[Any, Path]] = []
            for key, item in value.items():
                if not isinstance(key, str):
                    return location(path), f"key {key!r} is not a string"
                problem = _text_problem(key)
                if problem:
                    return location((*path, key)), f"the key {problem}"
                children.append((item, (*path, key)))
            stack.extend(reversed(children))
            continue
        if isinstance(value, list):
            stack.extend(reversed([(item, (*path, index)) for index, item in enumerate(value)]))
            continue
        return location(path), f"{type(value).__name__} is not a JSON value"
    return None


# $schema


# The drafts the validator implements, by their metaschema URIs (without a trailing "#").
DRAFTS = frozenset(
    {
        "http://json-schema.org/draft-04/schema",
        "http://json-schema.org/draft-06/schema",
        "http://json-schema.org/draft-07/schema",
        "https://json-schema.org/draft/2019-09/schema",
        "https://json-schema.org/draft/2020-12/schema",
    }
)
_DRAFT_3 = "http://json-schema.org/draft-03/schema"


def dialect_problem(schema: dict[str, Any]) -> Problem | None:
    if "$schema" not in schema:
        return None
    value = schema["$schema"]
    if isinstance(value, str) and value.removesuffix("#") == _DRAFT_3:
        return "$schema", "draft-03 is not supported; declare the schema in draft-04 or later"
    if not isinstance(value, str) or value.removesuffix("#") not in DRAFTS:
        return "$schema", NOT_A_DRAFT
    return None


# References


def _objects(schema: Any) -> Iterator[tuple[dict[str, Any], Path]]:
    """Every object of ``schema`` in a schema position (with its path), in document order; not
    those inside data keywords (const, enum, default, examples). The keys of name maps
    (properties, $defs, ...) are names, not keywords. Unknown keywords count as schemas."""
    stack: list[tuple[Any, Path, bool]] = [(schema, (), False)]
    while stack:
        node, path, names = stack.pop()
        children: list[tuple[Any, Path, bool]] = []
        if isinstance(node, list):
            children = [(item, (*path, index), False) for index, item in enumerate(node)]
        elif isinstance(node, dict):
            if not names:
                yield node, path
            for key, item in node.items():
                if not names and key in _DATA_KEYWORDS:
                    continue
                is_map = not names and key in _NAME_MAPS and isinstance(item, dict)
                children.append((item, (*path, key), is_map))
        stack.extend(reversed([child for child in children if isinstance(child[0], dict | list)]))


def _anchors(schema: Any) -> dict[str, Path]:
    found: dict[str, Path] = {}
    for node, path in _objects(schema):
        for keyword in ("$anchor", "$dynamicAnchor"):
            if isinstance(node.get(keyword), str):
                found.setdefault(node[keyword], path)
        for keyword in ("$id", "id"):
            value = node.get(keyword)
            if isinstance(value, str) and value.startswith("#") and len(value) > 1:
                found.setdefault(value[1:], path)
    return found


def _resolve(schema: Any, reference: str, anchors: dict[str, Path]) -> Path | str:
    """The path ``reference`` ("#...") points to, or why it points to nothing."""
    fragment = unquote(reference[1:])
    if not fragment:
        return ()
    if not fragment.startswith("/"):
        anchor = anchors.get(fragment)
        return anchor if anchor is not None else f"{reference[:100]} names no anchor of the schema"
    node: Any = schema
    path: list[str | int] = []
    for raw in fragment[1:].split("/"):
        part = raw.replace("~1", "/").replace("~0", "~")
        if isinstance(node, dict) and part in node:
            node = node[part]
            path.append(part)
        elif (
            isinstance(node, list)
            and (index := whole_number(part, 9)) is not None
            and (index < len(node))
        ):
            node = node[index]
            path.append(index)
        else:
            return f"{reference[:100]} points to nothing in the schema"
    if not isinstance(node, dict | bool):
        return f"{reference[:100]} does not point to a schema"
    return tuple(path)


def at(schema: Any, path: Path) -> Any:
    node = schema
    for part in path:
        node = node[part]
    return node


def references(schema: dict[str, Any]) -> Targets | Problem:
    """Where each reference of ``schema`` points (see :data:`Targets`); or where it refers
    outside itself, to nothing, or to itself without end."""
    for node, path in _objects(schema):
        for keyword in REFERENCE_KEYWORDS:
            reference = node.get(keyword, "#")
            if not isinstance(reference, str) or not reference.startswith("#"):
                return location((*path, keyword)), LOCAL_ONLY
    anchors = _anchors(schema)
    targets: Targets = {}
    for node, path in _objects(schema):
        for keyword in ("$id", "id"):
            value = node.get(keyword)
            if path and isinstance(value, str) and not value.startswith("#"):
                return location((*path, keyword)), (
                    f"{keyword} may only be given at the top of the schema (a collection schema "
                    "is one document); refer to a subschema by its path, e.g. #/$defs/name"
                )
        for keyword in REFERENCE_KEYWORDS:
            if keyword not in node:
                continue
            target = _resolve(schema, node[keyword], anchors)
            if isinstance(target, str):
                return location((*path, keyword)), target
            targets[(path, keyword)] = target
    return _endless(schema, targets) or targets


def in_place(schema: Any, path: Path, targets: Targets) -> list[Path]:
    """The schemas applied to the same instance as the one at ``path`` (refs included)."""
    node = at(schema, path)
    if not isinstance(node, dict):
        return []
    found = [targets[(path, k)] for k in REFERENCE_KEYWORDS if (path, k) in targets]
    found.extend((*path, k) for k in IN_PLACE_ONE if isinstance(node.get(k), dict))
    for keyword in IN_PLACE_MANY:
        items = node.get(keyword)
        if isinstance(items, list):
            found.extend(
                (*path, keyword, i) for i, item in enumerate(items) if isinstance(item, dict)
            )
    for keyword in IN_PLACE_MAPS:
        mapping = node.get(keyword)
        if isinstance(mapping, dict):
            found.extend((*path, keyword, k) for k, v in mapping.items() if isinstance(v, dict))
    return found


def _endless(schema: dict[str, Any], targets: Targets) -> Problem | None:
    """A cycle of in-place applications (depth-first search; a path on the stack seen again)."""
    done: set[Path] = set()
    for _node, start in _objects(schema):
        if start in done:
            continue
        on_stack = {start}
        stack: list[tuple[Path, Iterator[Path]]] = [(start, iter(in_place(schema, start, targets)))]
        while stack:
            path, successors = stack[-1]
            step = next(successors, None)
            if step is None:
                stack.pop()
                on_stack.discard(path)
                done.add(path)
                continue
            if step in on_stack:
                return location(_closing(schema, path, step, targets)), ENDLESS
            if step not in done:
                on_stack.add(step)
                stack.append((step, iter(in_place(schema, step, targets))))
    return None


def _closing(schema: dict[str, Any], path: Path, step: Path, targets: Targets) -> Path:
    """The reference at ``path`` that leads back to ``step`` (else the step itself)."""
    for keyword in REFERENCE_KEYWORDS:
        if targets.get((path, keyword)) == step:
            return (*path, keyword)
    return step


# No I/O, ever


class RemoteReferenceRefused(LookupError):
    pass


def refuse_retrieval(uri: str) -> Any:
    """The validator's retriever: a reference outside the schema then fails to compile
    instead of being fetched over the network or read from disk."""
    raise RemoteReferenceRefused(f"{LOCAL_ONLY}; the schema refers to {uri[:100]}")
