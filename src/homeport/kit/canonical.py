"""Content hashes: SHA-256 of the RFC 8785 (JCS) canonical JSON of a document."""

from __future__ import annotations

import contextlib
import hashlib
import json
import re
from collections.abc import Callable
from typing import Any

import rfc8785

# A UTF-16 surrogate code point on its own (JSON's "\ud800" escape decodes to one): no UTF-8.
_LONE_SURROGATE = re.compile("[\ud800-\udfff]")


class NotCanonicalizable(ValueError):
    """The document has values JSON cannot carry exactly (integers beyond +-2**53, NaN...)."""


class NoUtf8(NotCanonicalizable):
    """The document holds text with no UTF-8 form (a lone surrogate, in a key or a value)."""

    def __init__(self) -> None:
        super().__init__("text holds a lone surrogate, which has no UTF-8 form")


def has_utf8(text: str) -> bool:
    """Whether ``text`` can be encoded as UTF-8 (it holds no lone surrogate)."""
    return text.isascii() or _LONE_SURROGATE.search(text) is None


def any_text(document: Any, test: Callable[[str], bool]) -> bool:
    """Whether ``test`` holds for a string of ``document`` (a key or a value, at any depth)."""
    stack: list[Any] = [document]
    while stack:
        value = stack.pop()
        if isinstance(value, str):
            if test(value):
                return True
        elif isinstance(value, dict):
            stack.extend(value)
            stack.extend(value.values())
        elif isinstance(value, list):
            stack.extend(value)
    return False


def holds_text_without_utf8(document: Any) -> bool:
    """Whether a string of ``document`` (a key or a value, at any depth) has no UTF-8 form."""
    return any_text(document, lambda text: not has_utf8(text))


# The integers JCS carries exactly (the rfc8785 library's bounds).
_INT_MIN = -(2**53) + 1
_INT_MAX = 2**53 - 1


def _plain(document: Any) -> bool:
    """Whether the standard library's compact, sorted ``json.dumps`` writes ``document``
    exactly as JCS does: no floats (JCS writes numbers the ECMAScript way), integers within
    JCS's bounds, and ASCII keys only (JCS sorts keys by UTF-16 code units, which for ASCII
    is Python's order). Strings are escaped the same way by both (``ensure_ascii=False``)."""
    stack: list[Any] = [document]
    while stack:
        value = stack.pop()
        kind = type(value)
        if kind is dict:
            for key, item in value.items():
                if type(key) is not str or not key.isascii():
                    return False
                stack.append(item)
        elif kind is list:
            stack.extend(value)
        elif kind is int:
            if value < _INT_MIN or value > _INT_MAX:
                return False
        elif kind is not str and kind is not bool and value is not None:
            return False
    return True


def canonical_json(document: Any) -> bytes:
    """:class:`NoUtf8` for text without UTF-8, :class:`NotCanonicalizable` for other values
    JSON cannot carry exactly."""
    if _plain(document):
        # The library is pure Python and costs a tenth of a small record write (py-spy,
        # W3); it stays the reference (a property test compares the two).
        # A lone surrogate fails the encoding: the library's path below reports it.
        with contextlib.suppress(UnicodeEncodeError):
            return json.dumps(
                document, ensure_ascii=False, separators=(",", ":"), sort_keys=True
            ).encode()
    try:
        return rfc8785.dumps(document)
    except (rfc8785.CanonicalizationError, UnicodeEncodeError) as exc:
        # The library reports a lone surrogate as either; told apart only on this failure path.
        if isinstance(exc, UnicodeEncodeError) or holds_text_without_utf8(document):
            raise NoUtf8() from exc
        raise NotCanonicalizable(str(exc)[:200]) from exc


def content_hash(document: Any) -> str:
    return hashlib.sha256(canonical_json(document)).hexdigest()
