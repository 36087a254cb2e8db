"""Only whitelisted names reach SQL: unknown fields, operators and sort keys are a 400 naming
the parameter, and hostile keys, values and sorts change nothing."""

from __future__ import annotations

import pytest

from tests.records.conftest import ORDERS, Rest


@pytest.mark.parametrize(
    ("params", "parameter"),
    [
        ({"filter[nope]": "1"}, "filter[nope]"),
        ({"filter[status][like]": "x"}, "filter[status][like]"),
        ({"filter[priority]": "high"}, "filter[priority]"),
        ({"filter[priority][contains]": "1"}, "filter[priority][contains]"),
        ({"filter[paid]": "yes"}, "filter[paid]"),
        ({"filter[paid][gt]": "true"}, "filter[paid][gt]"),
        ({"filter[tags]": "red"}, "filter[tags]"),
        ({"filter[address][eq]": "x"}, "filter[address][eq]"),
        ({"filter[ref][lt]": "null"}, "filter[ref][lt]"),
        ({"filter[priority][in]": ",".join(["1"] * 101)}, "filter[priority][in]"),
        ({"filter": "x"}, "filter"),
        ({"filter[status]x": "open"}, "filter[status]x"),
        ({"sort": "status"}, "sort"),
        ({"sort": "priority,title"}, "sort"),
        ({"fields": "id,secret"}, "fields"),
        ({"fields": ","}, "fields"),
        ({"limit": "0"}, "limit"),
        ({"cursor": "forged"}, "cursor"),
        ({"unknown": "1"}, "unknown"),
        ({"q": "   "}, "q"),
    ],
)
async def test_unknown_names_and_bad_values_are_400_naming_the_parameter(
    rest: Rest, params: dict[str, str], parameter: str
) -> None:
    answer = await rest.list(params)
    assert answer.status_code in (400, 422), answer.text
    body = answer.json()
    assert body["code"] in ("VALIDATION_004", "VALIDATION_001")
    if body["code"] == "VALIDATION_004":
        assert answer.status_code == 400
        assert body["parameter"] == parameter
    assert answer.headers["content-type"].startswith("application/problem+json")


INJECTIONS = [
    "status') OR 1=1 --",
    'status"] OR 1=1 --',
    "status'); DROP TABLE sync_records; --",
    "status->>'x'",
    "$.status",
    "status]['eq",
]


@pytest.mark.parametrize("key", INJECTIONS)
async def test_injection_in_filter_keys_is_refused(rest: Rest, key: str) -> None:
    await rest.create({"id": "o1", "title": "Pump", "status": "open"})
    answer = await rest.list([(f"filter[{key}]", "open")])
    assert answer.status_code == 400
    assert answer.json()["code"] == "VALIDATION_004"
    # Nothing was dropped or changed.
    assert [i["id"] for i in (await rest.list({})).json()["data"]] == ["o1"]


@pytest.mark.parametrize(
    "value",
    [
        "open' OR '1'='1",
        'open" OR 1=1 --',
        "'; DROP TABLE sync_records; --",
        "%",
        "_",
        "\\",
        "open'::jsonb OR true --",
    ],
)
async def test_injection_in_filter_values_is_just_a_value(rest: Rest, value: str) -> None:
    await rest.create({"id": "o1", "title": "Pump", "status": "open"})
    for key in ("filter[status]", "filter[status][ne]", "filter[status][in]",
                "filter[status][contains]", "filter[status][gt]", "filter[ref]",
                "filter[tags][contains]"):  # fmt: skip
        answer = await rest.list([(key, value)])
        assert answer.status_code == 200, (key, answer.text)
        ids = [i["id"] for i in answer.json()["data"]]
        # Only "ne" and gt (a string above "open" sorts after it) may match the one record.
        assert ids in ([], ["o1"])
        if key in ("filter[status]", "filter[status][in]", "filter[status][contains]"):
            assert ids == []
    assert [i["id"] for i in (await rest.list({})).json()["data"]] == ["o1"]


@pytest.mark.parametrize(
    "sort",
    ["priority; DROP TABLE sync_records", "-priority--", "(select 1)", "data->>'x'", "rank"],
)
async def test_injection_in_sort_is_refused(rest: Rest, sort: str) -> None:
    await rest.create({"id": "o1", "title": "Pump", "status": "open"})
    answer = await rest.list({"sort": sort})
    assert answer.status_code == 400
    assert answer.json()["parameter"] == "sort"
    assert [i["id"] for i in (await rest.list({})).json()["data"]] == ["o1"]


async def test_a_nul_character_in_a_value_is_refused(rest: Rest) -> None:
    for key in ("filter[status]", "filter[status][contains]", "q"):
        answer = await rest.list([(key, "open\x00")])
        assert answer.status_code == 400
        assert answer.json()["parameter"] == key


async def test_a_cursor_is_bound_to_its_query_and_collection(rest: Rest) -> None:
    for i in range(3):
        await rest.create({"id": f"o{i}", "title": "t", "priority": i})
    first = (await rest.list({"limit": "1", "sort": "priority"})).json()
    cursor = first["next_cursor"]
    assert cursor
    other_sort = await rest.list({"limit": "1", "sort": "-priority", "cursor": cursor})
    assert other_sort.status_code == 400
    assert other_sort.json()["parameter"] == "cursor"
    other_filter = await rest.list(
        {"limit": "1", "sort": "priority", "cursor": cursor, "filter[priority][gte]": "0"}
    )
    assert other_filter.status_code == 400
    payload, _, signature = cursor.partition(".")
    tampered = payload[:-2] + ("A" if payload[-2] != "A" else "B") + payload[-1] + "." + signature
    answer = await rest.list({"limit": "1", "sort": "priority", "cursor": tampered})
    assert answer.status_code == 400
    same = await rest.list({"limit": "1", "sort": "priority", "cursor": cursor})
    assert [i["id"] for i in same.json()["data"]] == ["o1"]


async def test_bad_bodies_are_problems_not_500(rest: Rest) -> None:
    for method, path in (("POST", ORDERS), ("PUT", f"{ORDERS}/o1"), ("PATCH", f"{ORDERS}/o1")):
        for content in (b"[1,2]", b"not json", b'"text"', b"{" * 5000):
            answer = await rest.client.request(
                method,
                path,
                content=content,
                headers={**rest.owner.headers, "Content-Type": "application/json"},
            )
            assert 400 <= answer.status_code < 500, (method, content[:10], answer.text)
            assert "code" in answer.json()


async def test_data_the_databases_cannot_store_is_a_400(rest: Rest) -> None:
    for body in (
        {"title": "a\u0000b"},
        {"title": "x", "address": {"k\u0000": 1}},
        {"title": "x", "ref": 2**70},
    ):
        answer = await rest.client.post(ORDERS, json=body, headers=rest.owner.headers)
        assert answer.status_code == 400, answer.text
        assert answer.json()["code"] == "SYNC_001"
    assert (await rest.list({})).json()["data"] == []


async def test_numbers_beyond_64_bits_in_a_filter_are_just_numbers(rest: Rest) -> None:
    await rest.create({"id": "o1", "title": "x", "ref": 5})
    for value in ("99999999999999999999999", "-99999999999999999999999", "1e300"):
        for key in ("filter[ref]", "filter[ref][lt]", "filter[priority][gt]", "filter[amount]"):
            answer = await rest.list([(key, value)])
            assert answer.status_code == 200, (key, value, answer.text)
    smaller = await rest.list([("filter[ref][lt]", "99999999999999999999999")])
    assert [item["id"] for item in smaller.json()["data"]] == ["o1"]


async def test_an_id_in_the_body_is_checked_like_one_in_the_path(rest: Rest) -> None:
    """The id field of the data is the record id: too long, empty or not a string is a 400
    that writes nothing (a 201-character id was a 500, and the connection dropped)."""
    for data, code in (
        ({"id": "x" * 201, "title": "t"}, "SYNC_001"),
        ({"id": "", "title": "t"}, "SYNC_002"),
        ({"id": 5, "title": "t"}, "SYNC_002"),
    ):
        answer = await rest.client.post(ORDERS, json=data, headers=rest.owner.headers)
        assert answer.status_code == 400, answer.text
        assert answer.headers["content-type"].startswith("application/problem+json")
        assert answer.json()["code"] == code
    assert (await rest.list({})).json()["data"] == []
    longest = "y" * 200
    assert (await rest.create({"id": longest, "title": "t"}))["id"] == longest
    batch = await rest.client.post(
        f"{ORDERS}:batch",
        json={
            "mode": "best_effort",
            "operations": [
                {"op": "create", "data": {"id": "z" * 201, "title": "t"}},
                {"op": "create", "data": {"id": "z", "title": "t"}},
            ],
        },
        headers=rest.owner.headers,
    )
    assert batch.status_code == 200, batch.text
    first, second = batch.json()["results"]
    assert (first["status"], first["code"]) == (400, "SYNC_001")
    assert "200 characters" in first["detail"]
    assert (second["status"], second["code"]) == (201, None)
    listed = (await rest.list({"fields": "id"})).json()["data"]
    assert sorted(item["id"] for item in listed) == sorted([longest, "z"])
