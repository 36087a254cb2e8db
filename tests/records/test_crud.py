"""Create, read, replace, merge-patch and delete one record; ETags and preconditions."""

from __future__ import annotations

from urllib.parse import quote

from tests.records.conftest import ORDERS, Rest


async def test_create_then_read_with_etag_and_304(rest: Rest) -> None:
    answer = await rest.client.post(
        ORDERS, json={"id": "o1", "title": "Pump", "priority": 2}, headers=rest.owner.headers
    )
    assert answer.status_code == 201, answer.text
    assert answer.headers["etag"] == '"1"'
    assert answer.headers["location"] == f"{ORDERS}/o1"
    assert answer.json()["data"] == {"id": "o1", "title": "Pump", "priority": 2}
    assert answer.json()["version"] == 1

    got = await rest.client.get(f"{ORDERS}/o1", headers=rest.owner.headers)
    assert got.status_code == 200
    assert got.headers["etag"] == '"1"'
    assert "private" in got.headers["cache-control"]
    assert got.headers["api-version"] == "1"
    assert got.json()["id"] == "o1"

    same = await rest.client.get(
        f"{ORDERS}/o1", headers={**rest.owner.headers, "If-None-Match": '"1"'}
    )
    assert same.status_code == 304
    assert same.content == b""
    assert same.headers["etag"] == '"1"'
    weak = await rest.client.get(
        f"{ORDERS}/o1", headers={**rest.owner.headers, "If-None-Match": 'W/"1", "7"'}
    )
    assert weak.status_code == 304
    stale = await rest.client.get(
        f"{ORDERS}/o1", headers={**rest.owner.headers, "If-None-Match": '"0"'}
    )
    assert stale.status_code == 200


async def test_generated_id_and_duplicate_is_409(rest: Rest) -> None:
    created = await rest.create({"title": "No id"})
    assert len(created["id"]) == 36
    again = await rest.client.post(
        ORDERS, json={"id": "dup", "title": "a"}, headers=rest.owner.headers
    )
    assert again.status_code == 201
    duplicate = await rest.client.post(
        ORDERS, json={"id": "dup", "title": "b"}, headers=rest.owner.headers
    )
    assert duplicate.status_code == 409
    assert duplicate.json()["code"] == "VALIDATION_002"
    kept = await rest.client.get(f"{ORDERS}/dup", headers=rest.owner.headers)
    assert kept.json()["data"]["title"] == "a"


async def test_put_replaces_whole_record(rest: Rest) -> None:
    await rest.create({"id": "o1", "title": "Pump", "priority": 2, "status": "open"})
    answer = await rest.client.put(
        f"{ORDERS}/o1", json={"title": "Valve"}, headers=rest.owner.headers
    )
    assert answer.status_code == 200, answer.text
    assert answer.json()["data"] == {"title": "Valve"}
    assert answer.json()["version"] == 2
    assert answer.headers["etag"] == '"2"'
    missing = await rest.client.put(
        f"{ORDERS}/nope", json={"title": "x"}, headers=rest.owner.headers
    )
    assert missing.status_code == 404
    assert missing.json()["code"] == "NOT_FOUND"


async def test_merge_patch_null_deletes_a_field_and_objects_merge(rest: Rest) -> None:
    await rest.create(
        {
            "id": "o1",
            "title": "Pump",
            "status": "open",
            "tags": ["a", "b"],
            "address": {"city": "Lyon", "zip": "69001", "geo": {"lat": 1, "lon": 2}},
        }
    )
    answer = await rest.client.patch(
        f"{ORDERS}/o1",
        content=b'{"status": null, "tags": ["c"], "address": {"zip": null, "geo": {"lat": 5}}}',
        headers={**rest.owner.headers, "Content-Type": "application/merge-patch+json"},
    )
    assert answer.status_code == 200, answer.text
    assert answer.json()["data"] == {
        "id": "o1",
        "title": "Pump",
        "tags": ["c"],
        "address": {"city": "Lyon", "geo": {"lat": 5, "lon": 2}},
    }
    stored = await rest.client.get(f"{ORDERS}/o1", headers=rest.owner.headers)
    assert "status" not in stored.json()["data"]
    assert stored.json()["version"] == 2


async def test_patch_result_is_validated_against_the_schema(rest: Rest) -> None:
    await rest.create({"id": "o1", "title": "Pump"})
    answer = await rest.client.patch(
        f"{ORDERS}/o1", json={"title": None}, headers=rest.owner.headers
    )
    assert answer.status_code == 422
    assert answer.json()["code"] == "VALIDATION_001"
    wrong_type = await rest.client.patch(
        f"{ORDERS}/o1", json={"priority": "high"}, headers=rest.owner.headers
    )
    assert wrong_type.status_code == 422
    unchanged = await rest.client.get(f"{ORDERS}/o1", headers=rest.owner.headers)
    assert unchanged.json()["version"] == 1


async def test_if_match_moved_version_is_412_sync_004(rest: Rest) -> None:
    await rest.create({"id": "o1", "title": "Pump"})
    first = await rest.client.patch(
        f"{ORDERS}/o1", json={"status": "open"}, headers={**rest.owner.headers, "If-Match": '"1"'}
    )
    assert first.status_code == 200
    for method, body in (("PUT", {"title": "x"}), ("PATCH", {"status": "x"}), ("DELETE", None)):
        stale = await rest.client.request(
            method,
            f"{ORDERS}/o1",
            json=body,
            headers={**rest.owner.headers, "If-Match": '"1"'},
        )
        assert stale.status_code == 412, (method, stale.text)
        assert stale.json()["code"] == "SYNC_004"
    weak = await rest.client.put(
        f"{ORDERS}/o1", json={"title": "x"}, headers={**rest.owner.headers, "If-Match": 'W/"2"'}
    )
    assert weak.status_code == 412
    garbage = await rest.client.put(
        f"{ORDERS}/o1", json={"title": "x"}, headers={**rest.owner.headers, "If-Match": "2"}
    )
    assert garbage.status_code == 412
    other_digits = await rest.client.put(
        f"{ORDERS}/o1",
        json={"title": "x"},
        headers={**rest.owner.headers, "If-Match": '"³"'.encode("latin-1")},  # type: ignore[dict-item]
    )
    assert other_digits.status_code == 412, other_digits.text  # was a 500
    current = await rest.client.get(f"{ORDERS}/o1", headers=rest.owner.headers)
    assert current.json()["version"] == 2
    assert current.json()["data"] == {"id": "o1", "title": "Pump", "status": "open"}
    star = await rest.client.put(
        f"{ORDERS}/o1", json={"title": "y"}, headers={**rest.owner.headers, "If-Match": "*"}
    )
    assert star.status_code == 200
    deleted = await rest.client.delete(
        f"{ORDERS}/o1", headers={**rest.owner.headers, "If-Match": '"3"'}
    )
    assert deleted.status_code == 204


async def test_delete_is_a_tombstone(rest: Rest) -> None:
    await rest.create({"id": "o1", "title": "Pump"})
    assert (await rest.client.delete(f"{ORDERS}/o1", headers=rest.owner.headers)).status_code == 204
    assert (await rest.client.get(f"{ORDERS}/o1", headers=rest.owner.headers)).status_code == 404
    again = await rest.client.delete(f"{ORDERS}/o1", headers=rest.owner.headers)
    assert again.status_code == 404
    # The id stays taken: creating it again would resurrect a deletion devices have seen.
    recreate = await rest.client.post(
        ORDERS, json={"id": "o1", "title": "again"}, headers=rest.owner.headers
    )
    assert recreate.status_code == 409
    changes, _cursor = await rest.owner.pull_all()
    assert [(c["id"], c["op"], c["version"]) for c in changes] == [("o1", "delete", 2)]


async def test_id_in_body_must_match_the_path(rest: Rest) -> None:
    await rest.create({"id": "o1", "title": "Pump"})
    answer = await rest.client.put(
        f"{ORDERS}/o1", json={"id": "o2", "title": "x"}, headers=rest.owner.headers
    )
    assert answer.status_code == 400
    assert answer.json()["code"] == "SYNC_001"
    not_string = await rest.client.post(
        ORDERS, json={"id": 5, "title": "x"}, headers=rest.owner.headers
    )
    assert not_string.status_code == 400


async def test_unknown_collection_is_404(rest: Rest) -> None:
    answer = await rest.client.get(
        "/api/v1/collections/nothing/records", headers=rest.owner.headers
    )
    assert answer.status_code == 404
    assert answer.json()["code"] == "NOT_FOUND"


async def test_ids_with_slashes_and_reserved_characters_are_addressable(rest: Rest) -> None:
    """Ids may hold "/" (``orders/2026/17``) and other reserved characters: escaped in the
    path they name the record, and ``Location`` gives them escaped."""
    for record_id in ("orders/2026/17", "a?b#c", "100%", "ü 1"):
        answer = await rest.client.post(
            ORDERS, json={"id": record_id, "title": "Pump"}, headers=rest.owner.headers
        )
        assert answer.status_code == 201, answer.text
        escaped = quote(record_id, safe="")
        assert answer.headers["location"] == f"{ORDERS}/{escaped}"
        url = f"{ORDERS}/{escaped}"
        got = await rest.client.get(url, headers=rest.owner.headers)
        assert got.status_code == 200, (record_id, got.text)
        assert got.json()["id"] == record_id
        patched = await rest.client.patch(
            url,
            json={"title": "Valve"},
            headers={**rest.owner.headers, "If-Match": '"1"'},
        )
        assert patched.status_code == 200, patched.text
        assert patched.json()["data"] == {"id": record_id, "title": "Valve"}
        replaced = await rest.client.put(url, json={"title": "Hose"}, headers=rest.owner.headers)
        assert replaced.status_code == 200, replaced.text
        deleted = await rest.client.delete(url, headers=rest.owner.headers)
        assert deleted.status_code == 204, deleted.text
        gone = await rest.client.get(url, headers=rest.owner.headers)
        assert gone.status_code == 404
    # The neighbouring id is another record, not a prefix match.
    await rest.create({"id": "orders/2026", "title": "Parent"})
    missing = await rest.client.get(f"{ORDERS}/orders%2F2026%2F1", headers=rest.owner.headers)
    assert missing.status_code == 404
    assert missing.json()["code"] == "NOT_FOUND"
