"""Lists: every filter operator, sort, fields, limits, and keyset pagination under inserts."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from tests.records.conftest import ORDERS, Rest

ROWS: list[dict[str, Any]] = [
    {"id": "a", "title": "Pump A", "status": "open", "priority": 1, "amount": 10.5,
     "paid": True, "tags": ["red", "big"], "ref": 7},
    {"id": "b", "title": "pump b", "status": "closed", "priority": 3, "amount": 2,
     "paid": False, "tags": ["blue"], "ref": "seven"},
    {"id": "c", "title": "Valve", "status": "open", "priority": 5, "amount": 99.9,
     "paid": True, "tags": [], "ref": None},
    {"id": "d", "title": "Hose 50%_off", "status": "waiting", "priority": 3},
    {"id": "e", "title": "Seal", "status": "3", "priority": 10, "amount": 3, "paid": False},
]  # fmt: skip


async def _seed(rest: Rest) -> None:
    for row in ROWS:
        await rest.create(row)


async def _ids(rest: Rest, params: Any) -> list[str]:
    answer = await rest.list(params)
    assert answer.status_code == 200, answer.text
    return [item["id"] for item in answer.json()["data"]]


@pytest.mark.parametrize(
    ("params", "expected"),
    [
        ({"filter[status]": "open"}, ["a", "c"]),
        ({"filter[status][eq]": "open"}, ["a", "c"]),
        ({"filter[status][ne]": "open"}, ["b", "d", "e"]),
        ({"filter[status][eq]": "3"}, ["e"]),  # a string field compares as a string
        ({"filter[priority]": "3"}, ["b", "d"]),
        ({"filter[priority][ne]": "3"}, ["a", "c", "e"]),
        ({"filter[priority][lt]": "3"}, ["a"]),
        ({"filter[priority][lte]": "3"}, ["a", "b", "d"]),
        ({"filter[priority][gt]": "3"}, ["c", "e"]),
        ({"filter[priority][gte]": "3"}, ["b", "c", "d", "e"]),
        ({"filter[priority][gte]": "3", "filter[priority][lt]": "10"}, ["b", "c", "d"]),
        ({"filter[amount][gt]": "3"}, ["a", "c"]),
        ({"filter[amount][lte]": "3.0"}, ["b", "e"]),
        ({"filter[amount][ne]": "2"}, ["a", "c", "d", "e"]),  # missing counts as not equal
        ({"filter[priority][in]": "1,5,10"}, ["a", "c", "e"]),
        ({"filter[status][in]": "closed,waiting"}, ["b", "d"]),
        ({"filter[paid]": "true"}, ["a", "c"]),
        ({"filter[paid]": "false"}, ["b", "e"]),
        ({"filter[paid][ne]": "true"}, ["b", "d", "e"]),
        ({"filter[paid][in]": "true,false"}, ["a", "b", "c", "e"]),
        ({"filter[tags][contains]": "blue"}, ["b"]),
        ({"filter[tags][contains]": "big"}, ["a"]),
        ({"filter[title][contains]": "PUMP"}, ["a", "b"]),
        ({"filter[title][contains]": "%_"}, ["d"]),  # LIKE wildcards are plain characters
        ({"filter[title][contains]": "_"}, ["d"]),
        ({"filter[title][lt]": "Q"}, ["a", "d"]),  # strings compare as strings
        ({"filter[ref]": "7"}, ["a"]),  # an untyped field reads JSON: 7 is a number
        ({"filter[ref]": "seven"}, ["b"]),
        ({"filter[ref]": "null"}, ["c", "d", "e"]),  # null or missing
        ({"filter[ref][ne]": "null"}, ["a", "b"]),
        ({"filter[ref][gt]": "5"}, ["a"]),  # only numbers compare with a number
        ({"filter[status]": "open", "filter[paid]": "true", "filter[priority][gt]": "1"}, ["c"]),
        ({"filter[status]": "nobody"}, []),
    ],
)
async def test_every_filter_operator(
    rest: Rest, params: dict[str, str], expected: list[str]
) -> None:
    await _seed(rest)
    assert await _ids(rest, params) == expected


async def test_sort_on_declared_fields_and_meta(rest: Rest) -> None:
    await _seed(rest)
    assert await _ids(rest, {"sort": "priority"}) == ["a", "b", "d", "c", "e"]
    assert await _ids(rest, {"sort": "-priority"}) == ["e", "c", "d", "b", "a"]
    # Missing values first ascending, last descending.
    assert await _ids(rest, {"sort": "amount"}) == ["d", "b", "e", "a", "c"]
    assert await _ids(rest, {"sort": "-amount"}) == ["c", "a", "e", "b", "d"]
    assert await _ids(rest, {"sort": "-id"}) == ["e", "d", "c", "b", "a"]
    assert await _ids(rest, {"sort": "created_at"}) == ["a", "b", "c", "d", "e"]


SORTS = ["priority", "-priority", "amount", "-amount", "ref", "-ref", "title", "-title", "-id"]


@pytest.mark.parametrize("sort", [*SORTS, "created_at", "-updated_at"])
async def test_pages_of_one_walk_the_whole_order(rest: Rest, sort: str) -> None:
    await _seed(rest)
    whole = await _ids(rest, {"sort": sort})
    walked: list[str] = []
    cursor = None
    while True:
        params = {"sort": sort, "limit": "1", **({"cursor": cursor} if cursor else {})}
        body = (await rest.list(params)).json()
        walked.extend(item["id"] for item in body["data"])
        if not body["has_more"]:
            assert body["next_cursor"] is None
            break
        cursor = body["next_cursor"]
    assert walked == whole
    assert sorted(walked) == ["a", "b", "c", "d", "e"]


async def test_fields_selects_top_level_fields(rest: Rest) -> None:
    await _seed(rest)
    answer = await rest.list({"fields": "id,title,status", "filter[status]": "open"})
    items = answer.json()["data"]
    assert [item["data"] for item in items] == [
        {"id": "a", "title": "Pump A", "status": "open"},
        {"id": "c", "title": "Valve", "status": "open"},
    ]
    assert set(items[0]) == {"id", "version", "created_at", "updated_at", "data"}
    sparse = await rest.list({"fields": "amount", "filter[status]": "waiting"})
    assert sparse.json()["data"][0]["data"] == {}


async def test_default_and_maximum_limit(rest: Rest) -> None:
    answer = await rest.client.post(
        f"{ORDERS}:batch",
        json={"operations": [{"op": "create", "data": {"title": f"t{i}"}} for i in range(60)]},
        headers=rest.owner.headers,
    )
    assert answer.status_code == 200, answer.text
    page = (await rest.list({})).json()
    assert len(page["data"]) == 50
    assert page["has_more"] is True
    everything = (await rest.list({"limit": "1000"})).json()
    assert len(everything["data"]) == 60
    assert everything["has_more"] is False
    too_many = await rest.list({"limit": "1001"})
    assert too_many.status_code == 400
    assert too_many.json()["code"] == "VALIDATION_004"
    assert too_many.json()["parameter"] == "limit"


async def test_pagination_is_stable_while_another_client_inserts(rest: Rest) -> None:
    """Every record that existed when the walk began is seen exactly once, whatever is
    inserted (before or after the walk's position) between the pages."""
    other = await rest.world.device("inserter@acme.example.com", "member")
    for sort in ("id", "priority", "-created_at"):
        original = {f"{sort}-o{i:03d}" for i in range(40)}
        await rest.client.post(
            f"{ORDERS}:batch",
            json={
                "operations": [
                    {"op": "create", "data": {"id": rid, "title": rid, "priority": i % 7}}
                    for i, rid in enumerate(sorted(original))
                ]
            },
            headers=rest.owner.headers,
        )
        seen: list[str] = []
        cursor = None
        inserted = 0

        async def insert_some(batch: int, sort: str = sort) -> None:
            for j in range(3):
                # Ids before and after the walk's position, priorities all over the range.
                for prefix in ("!", "~"):
                    rid = f"{prefix}{sort}-{batch}-{j}"
                    answer = await rest.client.post(
                        ORDERS,
                        json={"id": rid, "title": rid, "priority": j * 3},
                        headers=other.headers,
                    )
                    assert answer.status_code == 201

        while True:
            params = {"sort": sort, "limit": "7", "filter[title][contains]": sort}
            if cursor:
                params["cursor"] = cursor
            page, _ = await asyncio.gather(rest.list(params), insert_some(inserted))
            inserted += 1
            body = page.json()
            seen.extend(item["id"] for item in body["data"])
            if not body["has_more"]:
                break
            cursor = body["next_cursor"]
        assert len(seen) == len(set(seen)), "a record was served twice"
        assert original <= set(seen), "a record that existed all along was skipped"
