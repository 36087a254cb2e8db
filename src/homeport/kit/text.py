"""Checks for the text and times a request may carry: what a name, an address or a moment
given by a client must be before anything stores it, the same on SQLite and PostgreSQL."""

from __future__ import annotations

import unicodedata
from datetime import UTC, datetime
from typing import Annotated

from pydantic import AfterValidator, AwareDatetime

# Control characters (NUL among them: PostgreSQL refuses it in text, SQLite would store it)
# and lone surrogates (no UTF-8 for them: they cannot be stored or sent back).
_NEVER_IN_TEXT = {"Cc", "Cs"}
# In an address also format characters (zero-width space, direction marks: invisible, so two
# addresses that look alike would be two accounts) and every kind of space.
_NEVER_IN_ADDRESS = _NEVER_IN_TEXT | {"Cf", "Zs", "Zl", "Zp"}
# Characters an unquoted local part may not hold (RFC 5322 "specials"); quoted local parts
# are not accepted.
_ADDRESS_SPECIALS = set('()<>[]:;@\\,"')


def _categories(value: str) -> set[str]:
    return {unicodedata.category(character) for character in value}


def is_plain_text(value: str) -> bool:
    """Whether ``value`` holds no control character and no lone surrogate."""
    return not _categories(value) & _NEVER_IN_TEXT


def plain_text(value: str) -> str:
    """``value`` when it holds no control character and no lone surrogate."""
    if not is_plain_text(value):
        raise ValueError("must not contain control characters (NUL, line breaks, tabs)")
    return value


def whole_number(text: str, max_digits: int) -> int | None:
    """The number ``text`` writes with 1 to ``max_digits`` of the digits 0-9, else None.
    (``str.isdigit`` also takes "³", which ``int`` refuses, and other scripts' digits, which it
    reads; Python refuses to read very long numbers.)"""
    if not 0 < len(text) <= max_digits or not (text.isascii() and text.isdigit()):
        return None
    return int(text)


def _dot_separated(part: str) -> bool:
    return bool(part) and all(part.split("."))


def email_address(value: str) -> str:
    """A plausible address, lower-cased: ``local@domain`` with a dotted domain, no control,
    invisible or space characters, no empty dot-separated part."""
    value = value.strip().lower()
    local, separator, domain = value.rpartition("@")
    if (
        not separator
        or len(value) > 254
        or len(local) > 64
        or not _dot_separated(local)
        or _ADDRESS_SPECIALS & set(local)
        or not _dot_separated(domain)
        or "." not in domain
        or any(label.startswith("-") or label.endswith("-") for label in domain.split("."))
        or set(domain) & (_ADDRESS_SPECIALS | {"_"})
        or _categories(value) & _NEVER_IN_ADDRESS
    ):
        raise ValueError("not a valid email address")
    return value


def utc(value: datetime) -> datetime:
    """An aware moment in UTC; one that falls outside the years 1 to 9999 there is refused."""
    try:
        return value.astimezone(UTC)
    except OverflowError:
        raise ValueError("out of range once converted to UTC") from None


PlainText = Annotated[str, AfterValidator(plain_text)]
UtcDatetime = Annotated[AwareDatetime, AfterValidator(utc)]
