"""Headers a middleware adds to a response (names in lower case, as ASGI servers and Starlette
send them): the same as Starlette's MutableHeaders would give."""

from __future__ import annotations

import pytest
from starlette.datastructures import MutableHeaders

from homeport.kit.http import add_response_headers

_STARTS = [
    [],
    [(b"content-type", b"application/json")],
    [(b"x-trace-id", b"inner"), (b"content-length", b"2"), (b"x-trace-id", b"again")],
    [(b"x-content-type-options", b"custom"), (b"ratelimit", b"old"), (b"vary", b"Accept")],
]


@pytest.mark.parametrize("start", _STARTS)
def test_added_headers_match_mutable_headers(start: list[tuple[bytes, bytes]]) -> None:
    replace = ((b"x-trace-id", b"t-1"), (b"ratelimit", b'"default";r=9;t=60'))
    default = ((b"x-content-type-options", b"nosniff"), (b"api-version", b"1"))
    ours = {"type": "http.response.start", "status": 200, "headers": tuple(start)}
    add_response_headers(ours, replace, default)
    expected = {"type": "http.response.start", "status": 200, "headers": list(start)}
    headers = MutableHeaders(scope=expected)
    for name, value in replace:
        headers[name.decode()] = value.decode()
    for name, value in default:
        headers.setdefault(name.decode(), value.decode())
    # The same headers (order aside; a replaced header may move to the end).
    assert sorted(ours["headers"]) == sorted(expected["headers"])
