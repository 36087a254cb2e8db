"""The index follows the records REST API, and its list's ``q=`` is ranked by the index."""

from __future__ import annotations

from tests.search.conftest import World, hit_ids, note, push_ok, searchable

URL = "/api/v1/collections/notes/records"


async def test_rest_writes_are_indexed(world: World) -> None:
    await searchable(world)
    client, headers = world.harness.client, world.owner.headers
    created = await client.post(URL, json={"id": "r1", "title": "rest pump"}, headers=headers)
    assert created.status_code == 201, created.text
    assert await hit_ids(world.owner, "pump") == ["r1"]

    patched = await client.patch(
        f"{URL}/r1", json={"title": None, "body": "valve"}, headers=headers
    )
    assert patched.status_code == 200, patched.text
    assert await hit_ids(world.owner, "pump") == []
    assert await hit_ids(world.owner, "valve") == ["r1"]

    replaced = await client.put(f"{URL}/r1", json={"title": "gasket"}, headers=headers)
    assert replaced.status_code == 200, replaced.text
    assert await hit_ids(world.owner, "valve") == []
    assert await hit_ids(world.owner, "gasket") == ["r1"]

    deleted = await client.delete(f"{URL}/r1", headers=headers)
    assert deleted.status_code == 204, deleted.text
    assert await hit_ids(world.owner, "gasket") == []


async def test_list_q_is_ranked_by_the_index(world: World) -> None:
    await searchable(world)
    await push_ok(
        world.owner,
        [
            note("one", "pump alpha"),
            note("two", "pump valve"),
            note("three", "paint beta"),
        ],
    )
    answer = await world.harness.client.get(
        URL, params={"q": "valve pump"}, headers=world.owner.headers
    )
    assert answer.status_code == 200, answer.text
    assert [record["id"] for record in answer.json()["data"]] == ["two", "one"]
    refused = await world.harness.client.get(URL, params={"q": "(*)"}, headers=world.owner.headers)
    assert refused.status_code == 400, refused.text
    assert refused.json()["code"] == "VALIDATION_004"
    assert refused.json()["parameter"] == "q"
