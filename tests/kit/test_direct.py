"""A direct route (kit.direct) names one handler, of one of the two kinds."""

from __future__ import annotations

from typing import Any

import pytest

from homeport.kit.direct import DirectRoute


def test_a_direct_route_has_one_handler_of_one_kind() -> None:
    async def endpoint() -> None:
        return None

    async def streams(_request: Any, _params: dict[str, Any]) -> None:
        return None

    async def reads(_request: Any, _params: dict[str, Any], _body: bytes) -> None:
        return None

    with pytest.raises(ValueError, match="one handler"):
        DirectRoute("PATCH", "/x/{id}", endpoint)
    with pytest.raises(ValueError, match="one handler"):
        DirectRoute("PATCH", "/x/{id}", endpoint, handler=reads, stream_handler=streams)
    assert DirectRoute("PATCH", "/x/{id}", endpoint, stream_handler=streams).params("/x/7") == {
        "id": "7"
    }
