"""How much checking one record value against a schema can cost, bounded before it is declared.

A schema can make the validator do far more than its size suggests: subschemas applied to the
same value several times (``allOf`` of references to one definition), and, through a
reference that descends (``{"properties": {"c": {"allOf": [{"$ref": "#"}, {"$ref": "#"}]}}}``),
twice as often at every level of the record, 2^64 times for a record 64 levels deep. A
pattern scans the whole string each time it applies. The bounds here are on the worst record
value (an object, an array, a string, a property name), over every record of at most
:data:`~homeport.sync.schema_checks.MAX_DEPTH` levels:

- how many subschemas apply to it (:data:`MAX_APPLIED`), and
- how many of them scan it with a pattern (:data:`MAX_PATTERN_SCANS`).

The count is an upper bound: every ``patternProperties`` entry is taken to match every
property, every item keyword to apply to every item, and the subschemas applied in place
(``allOf`` branches) to share their worst property. Counts saturate just above the
limits, so that a schema with an exponential count is judged in linear time.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from typing import Any

from homeport.sync.schema_checks import (
    IN_PLACE_MANY,
    IN_PLACE_MAPS,
    IN_PLACE_ONE,
    MAX_DEPTH,
    REFERENCE_KEYWORDS,
    Path,
    Problem,
    Targets,
    at,
    in_place,
    location,
)

MAX_APPLIED = 256
MAX_PATTERN_SCANS = 16
_CAP = max(MAX_APPLIED, MAX_PATTERN_SCANS) + 1
_RECURSION = 20_000

# Keywords whose subschemas apply to every (or any) item of an array.
_ITEM_ONE = ("items", "additionalItems", "contains", "unevaluatedItems")
_ITEM_MANY = ("prefixItems", "items")  # "items" as a list: draft 4 to 7 tuples
# Keywords whose subschemas apply to a property value whatever its name.
_ANY_PROPERTY = ("additionalProperties", "unevaluatedProperties")
_APPLICATORS = frozenset(
    {
        *REFERENCE_KEYWORDS,
        *IN_PLACE_ONE,
        *IN_PLACE_MANY,
        *IN_PLACE_MAPS,
        *_ITEM_ONE,
        *_ITEM_MANY,
        *_ANY_PROPERTY,
        "properties",
        "patternProperties",
        "propertyNames",
    }
)


@dataclass(frozen=True)
class Cost:
    """What a schema costs the worst value it applies to, and the worst value below it."""

    applied: int
    scans: int

    def worse(self, other: Cost) -> Cost:
        return Cost(max(self.applied, other.applied), max(self.scans, other.scans))


@dataclass
class _Applied:
    """The subschemas applied to one value (with their multiplicity) and what they apply to
    the value's children, by where the child is."""

    applied: int = 0
    scans: int = 0
    # properties[name]: the worst one of each subschema, summed (an upper bound that spares
    # matching names across the subschemas applied in place).
    named: Cost = Cost(0, 0)
    any_property: Cost = Cost(0, 0)  # patternProperties, additionalProperties, unevaluated...
    names: Cost = Cost(0, 0)  # propertyNames, and patternProperties keys scanning each name
    items: Cost = Cost(0, 0)

    def add(self, other: _Applied) -> None:
        self.applied = _sat(self.applied + other.applied)
        self.scans = _sat(self.scans + other.scans)
        self.named = _plus(self.named, other.named)
        self.any_property = _plus(self.any_property, other.any_property)
        self.names = _plus(self.names, other.names)
        self.items = _plus(self.items, other.items)

    def worst(self) -> Cost:
        """The worst value: this one, or one of its children (a named property gets the
        subschemas for any property too)."""
        worst = Cost(self.applied, self.scans)
        worst = worst.worse(_plus(self.named, self.any_property))
        worst = worst.worse(self.names).worse(self.items)
        if worst.applied > MAX_APPLIED or worst.scans > MAX_PATTERN_SCANS:
            raise _TooCostly(worst)  # no need to count further
        return worst


class _TooCostly(Exception):
    def __init__(self, cost: Cost) -> None:
        super().__init__()
        self.cost = cost


def _sat(value: int) -> int:
    return min(value, _CAP)


def _plus(first: Cost, second: Cost) -> Cost:
    return Cost(_sat(first.applied + second.applied), _sat(first.scans + second.scans))


class _Estimate:
    def __init__(self, schema: dict[str, Any], targets: Targets) -> None:
        self.schema = schema
        self.targets = targets
        self._applied: dict[tuple[Path, int], _Applied] = {}
        self._worst: dict[tuple[Path, int], Cost] = {}
        self._leaves: dict[Path, Cost] = {}

    def worst(self, path: Path, depth: int) -> Cost:
        """The worst value's cost under the subschema at ``path``, for records ``depth``
        levels deep below it."""
        leaf = self._leaves.get(path)
        if leaf is not None:
            return leaf
        key = (path, depth)
        found = self._worst.get(key)
        if found is None:
            found = self._worst[key] = self.applied(path, depth).worst()
            node = at(self.schema, path)
            if not isinstance(node, dict) or not (node.keys() & _APPLICATORS):
                # Applies nothing further: the same at every depth.
                self._leaves[path] = found
        return found

    def applied(self, path: Path, depth: int) -> _Applied:
        """The subschema at ``path`` with everything it applies in place (references included;
        cycles of those were refused before), and what they apply to the children."""
        key = (path, depth)
        found = self._applied.get(key)
        if found is not None:
            return found
        node = at(self.schema, path)
        total = _Applied(applied=1)
        if isinstance(node, dict):
            if isinstance(node.get("pattern"), str):
                total.scans = 1
            if depth > 0:
                self._children(node, path, depth - 1, total)
            for same_value in in_place(self.schema, path, self.targets):
                total.add(self.applied(same_value, depth))
        self._applied[key] = total
        return total

    def _children(self, node: dict[str, Any], path: Path, depth: int, total: _Applied) -> None:
        properties = node.get("properties")
        if isinstance(properties, dict):
            for name in properties:
                total.named = total.named.worse(self.worst((*path, "properties", name), depth))
        patterns = node.get("patternProperties")
        if isinstance(patterns, dict):
            for name in patterns:
                total.any_property = _plus(
                    total.any_property, self.worst((*path, "patternProperties", name), depth)
                )
                # Each pattern scans every property name.
                total.names = _plus(total.names, Cost(1, 1))
        for keyword in _ANY_PROPERTY:
            if isinstance(node.get(keyword), dict | bool):
                total.any_property = _plus(total.any_property, self.worst((*path, keyword), depth))
        if isinstance(node.get("propertyNames"), dict | bool):
            total.names = _plus(total.names, self.worst((*path, "propertyNames"), depth))
        for keyword in _ITEM_ONE:
            if isinstance(node.get(keyword), dict | bool):
                total.items = _plus(total.items, self.worst((*path, keyword), depth))
        for keyword in _ITEM_MANY:
            if isinstance(node.get(keyword), list):
                for index in range(len(node[keyword])):
                    total.items = _plus(total.items, self.worst((*path, keyword, index), depth))


def cost_problem(schema: dict[str, Any], targets: Targets) -> Problem | None:
    """Whether checking one record value could cost too much (located at the schema itself:
    the count is the whole schema's). ``targets``: the schema's references, checked
    (:func:`~homeport.sync.schema_checks.references`)."""
    limit = sys.getrecursionlimit()
    # One Python call per schema level and per record level: up to a few thousand (Python
    # 3.11 calls between Python functions use no C stack).
    sys.setrecursionlimit(max(limit, _RECURSION))
    try:
        worst = _Estimate(schema, targets).worst((), MAX_DEPTH)
    except _TooCostly as exc:
        worst = exc.cost
    except RecursionError:
        return location(()), "the schema's references are nested too deeply to be checked"
    finally:
        sys.setrecursionlimit(limit)
    if worst.applied > MAX_APPLIED:
        return location(()), (
            f"checking a record could apply more than {MAX_APPLIED} subschemas to one value "
            "(references applied several times in place, e.g. allOf of references to one "
            "definition, multiply at every level a reference descends)"
        )
    if worst.scans > MAX_PATTERN_SCANS:
        return location(()), (
            f"checking a record could scan one value with more than {MAX_PATTERN_SCANS} "
            "patterns (each scans the whole value: declare fewer patterns per field)"
        )
    return None
