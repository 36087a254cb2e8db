"""The canonical JSON of content hashes: the standard library's fast path writes what the
rfc8785 library writes, byte for byte, and refuses what it refuses."""

from __future__ import annotations

from typing import Any

import pytest
import rfc8785
from hypothesis import given, settings
from hypothesis import strategies as st

from homeport.kit.canonical import NotCanonicalizable, NoUtf8, canonical_json, content_hash

# Text of every kind: ASCII, control characters, quotes, non-BMP, lone surrogates.
_text = st.text(st.characters(min_codepoint=0, max_codepoint=0x10FFFF), max_size=12)
_scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**60), max_value=2**60)
    | st.floats(allow_nan=True, allow_infinity=True)
    | _text
)
_documents = st.recursive(
    _scalars,
    lambda children: st.lists(children, max_size=5) | st.dictionaries(_text, children, max_size=5),
    max_leaves=25,
)
_plain_keys = st.text(st.characters(min_codepoint=0, max_codepoint=0x7F), max_size=8)
_plain_documents = st.dictionaries(
    _plain_keys,
    st.recursive(
        st.none() | st.booleans() | st.integers(-(2**53) + 1, 2**53 - 1) | _text,
        lambda children: (
            st.lists(children, max_size=4) | st.dictionaries(_plain_keys, children, max_size=4)
        ),
        max_leaves=15,
    ),
    max_size=8,
)


def _reference(document: Any) -> bytes | type[Exception]:
    try:
        return rfc8785.dumps(document)
    except (rfc8785.CanonicalizationError, UnicodeEncodeError):
        return NotCanonicalizable


def _ours(document: Any) -> bytes | type[Exception]:
    try:
        return canonical_json(document)
    except NotCanonicalizable:
        return NotCanonicalizable


@settings(max_examples=400, deadline=None)
@given(_documents)
def test_any_document_canonicalizes_as_the_library_does(document: Any) -> None:
    assert _ours(document) == _reference(document)


@settings(max_examples=400, deadline=None)
@given(_plain_documents)
def test_plain_documents_canonicalize_as_the_library_does(document: Any) -> None:
    assert _ours(document) == _reference(document)


@pytest.mark.parametrize(
    "document",
    [
        # JCS sorts keys by UTF-16 code units: U+10000 (a surrogate pair) before U+E000.
        {"\ue000": 1, "\U00010000": 2},
        {"a": 1.0, "b": 1e21, "c": 1e-7, "d": -0.0},
        {"big": 2**53 - 1, "small": -(2**53) + 1, "nested": [{"z": 1, "a": [True, None]}]},
        {"text": 'quote " backslash \\ tab \t nul-free \x01 \x1f \x7f é 😀'},
        {"b": 1, "a": 2, "B": 3, "_": 4, "aa": 5},
    ],
)
def test_examples_match_the_library(document: Any) -> None:
    assert canonical_json(document) == rfc8785.dumps(document)


@pytest.mark.parametrize("document", [{"n": 2**53}, {"n": -(2**53)}, {"x": float("nan")}])
def test_values_jcs_cannot_carry_are_refused(document: Any) -> None:
    with pytest.raises(NotCanonicalizable):
        canonical_json(document)


@pytest.mark.parametrize("document", [{"t": "lone \ud800"}, {"\udfff": 1}, ["\ud83d"]])
def test_text_without_utf8_is_refused_as_such(document: Any) -> None:
    with pytest.raises(NoUtf8):
        content_hash(document)
