"""JSON Schema validation of records.

Every write is validated. The common case (a valid record) runs a compiled validator
(fastjsonschema); only a failing record is checked again with jsonschema, which lists every
failing field for the error answer.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import fastjsonschema
import jsonschema
from jsonschema.validators import validator_for as jsonschema_validator_for

from homeport.models.sync import Collection

OWNER_FIELD_KEYWORD = "x-owner-field"


class SchemaError(ValueError):
    pass


def check_schema(schema: dict[str, Any]) -> None:
    """``SchemaError`` when ``schema`` is not a usable JSON Schema for records."""
    try:
        jsonschema_validator_for(schema).check_schema(schema)
        fastjsonschema.compile(schema)
    except (jsonschema.SchemaError, fastjsonschema.JsonSchemaDefinitionException) as exc:
        raise SchemaError(f"invalid JSON Schema: {getattr(exc, 'message', exc)}") from exc
    except Exception as exc:  # the compiler rejects some constructs with other errors
        raise SchemaError(f"unsupported JSON Schema: {exc}") from exc
    if schema.get("type", "object") != "object":
        raise SchemaError("a record schema must describe an object (type: object)")
    owner = schema.get(OWNER_FIELD_KEYWORD)
    if owner is not None and not isinstance(owner, str):
        raise SchemaError(f"{OWNER_FIELD_KEYWORD} must name a field")


@dataclass(frozen=True)
class RecordValidator:
    fast: Callable[[Any], Any]
    full: Any

    def errors(self, document: dict[str, Any]) -> list[tuple[str, str]]:
        """(field path, message) for every violation; empty when the document is valid."""
        try:
            self.fast(document)
            return []
        except fastjsonschema.JsonSchemaValueException:
            pass
        found = []
        for error in self.full.iter_errors(document):
            path = ".".join(str(part) for part in error.absolute_path)
            if not path and error.validator == "required":
                missing = error.message.split("'")
                path = missing[1] if len(missing) > 1 else ""
            found.append((path or "(record)", error.message[:200]))
        return sorted(found)


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
        schema = collection.json_schema
        found = _COMPILED[key] = RecordValidator(
            fast=fastjsonschema.compile(schema), full=jsonschema_validator_for(schema)(schema)
        )
    return found
