"""JSON Merge Patch (RFC 7396): ``null`` removes a member, objects merge recursively, anything
else (arrays included) replaces the target."""

from __future__ import annotations

from typing import Any


def merge_patch(target: Any, patch: Any) -> Any:
    """The document ``target`` becomes under ``patch`` (neither argument is modified)."""
    if not isinstance(patch, dict):
        return patch
    result = dict(target) if isinstance(target, dict) else {}
    for name, value in patch.items():
        if value is None:
            result.pop(name, None)
        else:
            result[name] = merge_patch(result.get(name), value)
    return result
