"""Facets (counts per value among matching readable records) and suggestions."""

from __future__ import annotations

from tests.search.conftest import World, note, push_ok, search, searchable


async def test_facets_count_values_among_the_matches(world: World) -> None:
    await searchable(world)
    await push_ok(
        world.owner,
        [
            note("n1", "pump", status="open", urgent=True, priority=3),
            note("n2", "pump", status="open", urgent=False, priority=1),
            note("n3", "pump", status="done", urgent=True, priority=3),
            note("n4", "pump", urgent=True),  # no status: not counted under status
            note("n5", "paint", status="open", urgent=True, priority=3),  # does not match
        ],
    )
    answer = await search(world.owner, "pump")
    assert answer.status_code == 200, answer.text
    notes = answer.json()["collections"]["notes"]
    assert notes["total"] == 4
    assert notes["facets"]["status"] == [
        {"value": "open", "count": 2},
        {"value": "done", "count": 1},
    ]
    assert notes["facets"]["urgent"] == [
        {"value": True, "count": 3},
        {"value": False, "count": 1},
    ]
    assert notes["facets"]["priority"] == [{"value": 3, "count": 2}, {"value": 1, "count": 1}]

    limited = await search(world.owner, "pump", facet_limit=1)
    assert limited.json()["collections"]["notes"]["facets"]["status"] == [
        {"value": "open", "count": 2}
    ]


async def test_hits_limit_and_collections_filter(world: World) -> None:
    await searchable(world)
    await searchable(world, "tasks")
    await world.collection("plain", schema={"type": "object"})  # nothing searchable
    await push_ok(
        world.owner,
        [
            note("n1", "pump"),
            note("n2", "pump pump"),
            {**note("t1", "pump"), "collection": "tasks"},
        ],
    )
    answer = await search(world.owner, "pump")
    body = answer.json()
    assert {(hit["collection"], hit["id"]) for hit in body["hits"]} == {
        ("notes", "n1"),
        ("notes", "n2"),
        ("tasks", "t1"),
    }
    assert set(body["collections"]) == {"notes", "tasks"}
    assert body["hits"][0]["data"]["title"].startswith("pump")
    assert body["hits"][0]["version"] == 1

    only_tasks = (await search(world.owner, "pump", collections="tasks")).json()
    assert [(h["collection"], h["id"]) for h in only_tasks["hits"]] == [("tasks", "t1")]
    assert set(only_tasks["collections"]) == {"tasks"}
    assert len((await search(world.owner, "pump", limit=1)).json()["hits"]) == 1

    for bad in ("plain", "nope", "tasks,nope"):
        refused = await search(world.owner, "pump", collections=bad)
        assert refused.status_code == 400, refused.text
        assert refused.json()["code"] == "VALIDATION_004"
        assert refused.json()["parameter"] == "collections"
    assert (await search(world.owner, "pump", limit=0)).status_code == 422
    assert (await search(world.owner, "pump", limit=101)).status_code == 422
    # An empty list names no collection: all of them, as for a sync pull.
    everything = (await search(world.owner, "pump", collections="")).json()
    assert set(everything["collections"]) == {"notes", "tasks"}
    # A misspelt parameter is named, not ignored (it would have searched everything).
    for unknown in ({"colections": "tasks"}, {"facets": "status"}):
        refused = await search(world.owner, "pump", **unknown)
        assert refused.status_code == 400, refused.text
        assert refused.json()["code"] == "VALIDATION_004"
        assert refused.json()["parameter"] == next(iter(unknown))


async def test_suggestions_complete_the_last_word(world: World) -> None:
    await searchable(world)
    await push_ok(
        world.owner,
        [
            note("n1", "Pumps and pumping", tags=["pumphouse"]),
            note("n2", "pump room"),
            note("n3", "PUMPS again"),
            note("n4", "paint"),
        ],
    )
    answer = await search(world.owner, "oil pum")
    suggestions = answer.json()["suggestions"]
    assert suggestions[0] == {"term": "pumps", "count": 2}
    assert {s["term"] for s in suggestions} == {"pumps", "pumping", "pumphouse", "pump"}
    assert all(s["count"] >= 1 for s in suggestions)
    assert len((await search(world.owner, "pum", suggestions=2)).json()["suggestions"]) == 2
    assert (await search(world.owner, "pum", suggestions=0)).json()["suggestions"] == []
    assert (await search(world.owner, "p")).json()["suggestions"] == []  # too short to complete
