"""The index follows every write path: push (REST and WebSocket), updates, deletes, conflict
resolutions, a changed searchable list, a deleted collection, tombstone compaction."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest

from homeport.kit.clock import utcnow
from homeport.kit.tenancy import tenant_select_columns
from homeport.models.search import SearchDocument
from homeport.sync.repository import SyncRepository
from tests.realtime.conftest import Live, receive, send
from tests.search.conftest import NOTE_SCHEMA, World, hit_ids, note, push_ok, searchable


async def _documents(world: World) -> dict[str, str]:
    async with world.harness.state.database.transaction() as session:
        rows = await session.execute(
            tenant_select_columns(
                SearchDocument, world.tenant.id, SearchDocument.record_id, SearchDocument.body
            )
        )
        return {record_id: body for record_id, body in rows.all()}


async def test_push_create_update_delete(world: World) -> None:
    await searchable(world)
    await push_ok(world.owner, [note("n1", "broken pump", tags=["north"])])
    assert await hit_ids(world.owner, "pump") == ["n1"]
    assert await _documents(world) == {"n1": "broken pump north"}

    await push_ok(world.owner, [{**note("n1", "fixed valve"), "base_version": 1}])
    assert await hit_ids(world.owner, "pump") == []
    assert await hit_ids(world.owner, "valve") == ["n1"]

    delete = {"collection": "notes", "id": "n1", "op": "delete", "base_version": 2}
    await push_ok(world.owner, [delete])
    assert await hit_ids(world.owner, "valve") == []
    assert await _documents(world) == {}

    # A record with no text in its searchable fields has no document.
    await push_ok(world.owner, [note("n2", "", status="open")])
    assert await _documents(world) == {}


async def test_merge_patch_push_reindexes(world: World) -> None:
    await searchable(world)
    await push_ok(world.owner, [note("n1", "first words", "body text")])
    patch: dict[str, Any] = {
        "collection": "notes",
        "id": "n1",
        "op": "patch",
        "data": {"title": "second"},
        "base_version": 1,
    }
    await push_ok(world.owner, [patch])
    assert await hit_ids(world.owner, "second") == ["n1"]
    assert await hit_ids(world.owner, "first") == []
    assert await hit_ids(world.owner, "body") == ["n1"]


async def test_conflict_resolution_reindexes(world: World) -> None:
    await searchable(world)
    policy = await world.harness.client.put(
        "/api/v1/sync/policies/" + world.tenant.id + "/notes",
        json={"resolution_policy": "manual"},
        headers=world.owner.headers,
    )
    assert policy.status_code == 200, policy.text
    await push_ok(world.owner, [note("n1", "original")])
    await push_ok(world.owner, [{**note("n1", "server side"), "base_version": 1}])
    stale = await world.owner.push([{**note("n1", "client side"), "base_version": 1}])
    [conflict] = stale.json()["conflicts"]
    assert conflict["status"] == "pending"
    assert await hit_ids(world.owner, "client") == []
    resolved = await world.harness.client.post(
        f"/api/v1/sync/conflicts/{conflict['conflict_id']}/resolve",
        json={"resolution": "accept_client"},
        headers=world.owner.headers,
    )
    assert resolved.status_code == 200, resolved.text
    assert await hit_ids(world.owner, "client") == ["n1"]
    assert await hit_ids(world.owner, "server") == []


def _update(fields: list[str]) -> dict[str, Any]:
    return {
        "schema": NOTE_SCHEMA,
        "read": "tenant",
        "write": "tenant",
        "searchable": fields,
        "facets": ["status"],
    }


async def test_a_changed_searchable_list_reindexes_the_collection(world: World) -> None:
    await searchable(world, fields=("title",))
    await push_ok(world.owner, [note("n1", "visible title", "secret body"), note("n2", "other")])
    assert await hit_ids(world.owner, "secret") == []

    url = "/api/v1/collections/notes"
    changed = await world.harness.client.put(
        url, json=_update(["title", "body"]), headers=world.owner.headers
    )
    assert changed.status_code == 200, changed.text
    assert await hit_ids(world.owner, "secret") == ["n1"]

    changed = await world.harness.client.put(
        url, json=_update(["body"]), headers=world.owner.headers
    )
    assert changed.status_code == 200, changed.text
    assert await hit_ids(world.owner, "visible") == []
    assert await hit_ids(world.owner, "secret") == ["n1"]
    assert await _documents(world) == {"n1": "secret body"}  # n2 has no body

    changed = await world.harness.client.put(url, json=_update([]), headers=world.owner.headers)
    assert changed.status_code == 200, changed.text
    assert await _documents(world) == {}
    refused = await world.harness.client.get(
        "/api/v1/search",
        params={"q": "secret", "collections": "notes"},
        headers=world.owner.headers,
    )
    assert refused.status_code == 400  # no longer searchable


async def test_a_deleted_collection_leaves_no_documents(world: World) -> None:
    await searchable(world)
    await push_ok(world.owner, [note("n1", "pump")])
    deleted = await world.harness.client.delete(
        "/api/v1/collections/notes", params={"force": "true"}, headers=world.owner.headers
    )
    assert deleted.status_code == 204, deleted.text
    assert await _documents(world) == {}
    await searchable(world)  # the same name again starts empty
    assert await hit_ids(world.owner, "pump") == []


async def test_tombstone_compaction_keeps_the_index_consistent(world: World) -> None:
    await searchable(world)
    await push_ok(world.owner, [note("n1", "pump"), note("n2", "pump")])
    await push_ok(
        world.owner, [{"collection": "notes", "id": "n1", "op": "delete", "base_version": 1}]
    )
    async with world.harness.state.database.transaction() as session:
        removed = await SyncRepository(session).compact_tombstones(utcnow() + timedelta(days=1))
    assert removed == 1
    assert await hit_ids(world.owner, "pump") == ["n2"]
    assert set(await _documents(world)) == {"n2"}


@pytest.mark.timeout(60)
async def test_a_websocket_push_is_indexed(live: Live) -> None:
    schema = {"type": "object", "properties": {"title": {"type": "string"}}}
    await live.collection("tasks", schema=schema, searchable=["title"])
    device = await live.login(live.owner_email)
    change = {"collection": "tasks", "id": "w1", "op": "upsert", "data": {"title": "socket pump"}}
    async with live.connect(device) as ws:
        await send(ws, "sync", {"idempotency_key": "ws-search", "changes": [change]})
        answer = (await receive(ws, "sync_response"))["payload"]
    assert answer["synced_items"] == 1
    found = await live.http.get(
        "/api/v1/search",
        params={"q": "pump"},
        headers={"Authorization": f"Bearer {device.token}"},
    )
    assert found.status_code == 200, found.text
    assert [hit["id"] for hit in found.json()["hits"]] == ["w1"]
