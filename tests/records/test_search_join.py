"""``q=`` on a records list joins the search engineer's ranked matches (ranking itself is
tested in tests/search)."""

from __future__ import annotations

from tests.records.conftest import ORDERS, ORDERS_SCHEMA, Rest


async def test_q_lists_only_matching_records_and_combines_with_filters(rest: Rest) -> None:
    body = {"schema": ORDERS_SCHEMA, "read": "tenant", "write": "tenant", "searchable": ["title"]}
    changed = await rest.client.put(
        "/api/v1/collections/orders", json=body, headers=rest.owner.headers
    )
    assert changed.status_code == 200, changed.text
    await rest.create({"id": "p1", "title": "Hydraulic pump", "status": "open"})
    await rest.create({"id": "p2", "title": "Pump seal kit", "status": "closed"})
    await rest.create({"id": "v1", "title": "Valve", "status": "open"})
    found = await rest.list({"q": "pump"})
    assert found.status_code == 200, found.text
    assert sorted(item["id"] for item in found.json()["data"]) == ["p1", "p2"]
    narrowed = await rest.list({"q": "pump", "filter[status]": "open"})
    assert [item["id"] for item in narrowed.json()["data"]] == ["p1"]
    paged = await rest.list({"q": "pump", "limit": "1"})
    first = paged.json()
    assert first["has_more"] is True
    rest_page = await rest.list({"q": "pump", "limit": "1", "cursor": first["next_cursor"]})
    ids = [first["data"][0]["id"], rest_page.json()["data"][0]["id"]]
    assert sorted(ids) == ["p1", "p2"]
    assert rest_page.json()["has_more"] is False


async def test_q_on_a_collection_without_searchable_fields_is_400(rest: Rest) -> None:
    answer = await rest.client.get(ORDERS, params={"q": "pump"}, headers=rest.owner.headers)
    assert answer.status_code == 400
    assert answer.json()["parameter"] == "q"
