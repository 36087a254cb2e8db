"""ETags derived from a record's version, and the conditional headers that compare with them."""

from __future__ import annotations

import re

from homeport.kit.text import whole_number

_TAG = re.compile(r'\s*(W/)?"([^"]*)"\s*')
# If-Match that names no version of ours: never matches (versions start at 1).
NO_VERSION = 0


def etag(version: int) -> str:
    return f'"{version}"'


def _tags(header: str) -> list[tuple[bool, str]]:
    """(weak, opaque value) of each entity tag of a list; unparsable entries are left out."""
    found = []
    for part in header.split(","):
        match = _TAG.fullmatch(part)
        if match:
            found.append((match.group(1) is not None, match.group(2)))
    return found


def none_match(header: str, version: int) -> bool:
    """If-None-Match (weak comparison, RFC 9110 13.1.2): whether the client's copy is current."""
    if header.strip() == "*":
        return True
    return any(value == str(version) for _weak, value in _tags(header))


def if_match_version(header: str | None) -> tuple[bool, int | None]:
    """(given, version) of If-Match: ``*`` asks only that the record exists (version None);
    a weak or foreign tag never matches (strong comparison), so it gives NO_VERSION."""
    if header is None:
        return False, None
    if header.strip() == "*":
        return True, None
    for weak, value in _tags(header):
        version = None if weak else whole_number(value, 17)
        if version is not None:
            return True, version
    return True, NO_VERSION
