"""Ranking, stemming, prefixes, and the ranked_matches subquery the records list joins."""

from __future__ import annotations

import pytest

from homeport.kit.errors import ProblemError
from homeport.kit.tenancy import tenant_select_columns
from homeport.models.sync import SyncRecord
from homeport.search.repository import ranked_matches
from tests.search.conftest import World, hit_ids, note, push_ok, search, searchable


async def test_records_matching_more_and_rarer_terms_rank_first(world: World) -> None:
    await searchable(world)
    # Same lengths everywhere, so only the terms matched decide.
    await push_ok(
        world.owner,
        [
            note("pump-1", "pump alpha"),
            note("pump-2", "pump beta"),
            note("pump-3", "pump gamma"),
            note("valve", "valve delta"),
            note("both", "pump valve"),
            note("neither", "paint wall"),
        ],
    )
    ids = await hit_ids(world.owner, "pump valve")
    assert ids[0] == "both"  # both words beat one word
    assert ids[1] == "valve"  # valve is rarer than pump
    assert set(ids[2:]) == {"pump-1", "pump-2", "pump-3"}
    ids = await hit_ids(world.owner, "valve pump")  # word order does not matter
    assert ids[:2] == ["both", "valve"]


async def test_words_are_stemmed_and_the_last_one_is_a_prefix_while_typed(world: World) -> None:
    await searchable(world)
    await push_ok(
        world.owner,
        [note("n1", "Replacing the pumps"), note("n2", "Battery", tags=["warehouse"])],
    )
    assert await hit_ids(world.owner, "pump") == ["n1"]  # pumps -> pump
    assert await hit_ids(world.owner, "replaced") == ["n1"]  # replaced ~ replacing
    assert await hit_ids(world.owner, "batt") == ["n2"]  # prefix of the last word
    assert await hit_ids(world.owner, "batt ") == []  # a finished word is a word
    assert await hit_ids(world.owner, "WAREHOUSE") == ["n2"]  # array values, any case
    assert await hit_ids(world.owner, "bat pump") == ["n1"]  # only the last word is a prefix


async def test_only_searchable_fields_are_indexed(world: World) -> None:
    await searchable(world, fields=("title",))
    await push_ok(world.owner, [note("n1", "Title word", "hidden body", status="secretive")])
    assert await hit_ids(world.owner, "title") == ["n1"]
    assert await hit_ids(world.owner, "hidden") == []
    assert await hit_ids(world.owner, "secretive") == []


async def test_ranked_matches_is_a_subquery_to_join(world: World) -> None:
    await searchable(world)
    await push_ok(
        world.owner,
        [note("a", "alpha beta"), note("b", "alpha"), note("c", "gamma")],
    )
    tenant_id = world.tenant.id
    async with world.harness.state.database.transaction() as session:
        matches = ranked_matches(tenant_id, "notes", "alpha beta")
        rows = (
            await session.execute(
                tenant_select_columns(SyncRecord, tenant_id, SyncRecord.record_id, matches.c.rank)
                .join(matches, matches.c.record_id == SyncRecord.record_id)
                .where(SyncRecord.collection == "notes")
                .order_by(matches.c.rank)
            )
        ).all()
        assert [row.record_id for row in rows] == ["a", "b"]
        assert rows[0].rank < rows[1].rank  # lower is better
        other_tenant = ranked_matches("another-tenant", "notes", "alpha")
        assert (await session.execute(other_tenant.select())).all() == []


@pytest.mark.parametrize("text", ["", "   ", "*** ()", ":", '"', "-", "_"])
def test_ranked_matches_needs_a_word(text: str) -> None:
    with pytest.raises(ProblemError) as raised:
        ranked_matches("t", "notes", text)
    assert raised.value.code.name == "VALIDATION_004"
    assert raised.value.extra["parameter"] == "q"


async def test_a_query_without_words_is_a_400_naming_q(world: World) -> None:
    await searchable(world)
    answer = await search(world.owner, "  (*) ")
    assert answer.status_code == 400
    body = answer.json()
    assert body["code"] == "VALIDATION_004"
    assert body["parameter"] == "q"
    assert answer.headers["content-type"].startswith("application/problem+json")
