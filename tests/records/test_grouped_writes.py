"""Concurrent single writes share transactions (group commit), yet each request gets exactly the
answer it would have got alone, and a failing write changes nothing of the others."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
from sqlalchemy import event

from tests.records.conftest import ORDERS, ORDERS_SCHEMA, Rest
from tests.sync.conftest import Device

NOTES = "/api/v1/collections/notes/records"


def _groups(rest: Rest) -> int:
    groups: int = rest.harness.state.record_writes.group.groups_run
    return groups


async def _create(rest: Rest, path: str, data: dict[str, Any], device: Device) -> httpx.Response:
    return await rest.client.post(path, json=data, headers=device.headers)


async def test_concurrent_creates_share_groups_and_are_written_as_their_callers(
    rest: Rest,
) -> None:
    # read "owner": a record is visible to its writer only, so the owner stamped on each record
    # shows whose write it was.
    await rest.world.collection("notes", schema=ORDERS_SCHEMA, read="owner", write="owner")
    callers = [rest.owner, await rest.world.device("ann@acme.example.com")]
    callers.append(await rest.world.device("bob@acme.example.com"))
    before = _groups(rest)
    writes = [
        (caller, {"id": f"{number}-{index}", "title": f"note {index} of {number}"})
        for number, caller in enumerate(callers)
        for index in range(10)
    ]
    answers = await asyncio.gather(*(_create(rest, NOTES, data, caller) for caller, data in writes))
    assert [answer.status_code for answer in answers] == [201] * 30
    for (_caller, data), answer in zip(writes, answers, strict=True):
        assert answer.json()["id"] == data["id"]
        assert answer.json()["data"] == data
        assert answer.json()["version"] == 1
        assert answer.headers["etag"] == '"1"'
    assert _groups(rest) - before < 30  # they were grouped, not run one by one

    for number, caller in enumerate(callers):
        own = sorted(f"{number}-{index}" for index in range(10))
        listed = await rest.client.get(NOTES, params={"limit": 100}, headers=caller.headers)
        assert sorted(item["id"] for item in listed.json()["data"]) == own
        changes, _cursor = await caller.pull_all()  # the sync feed, under the same rule
        assert sorted(c["id"] for c in changes if c["collection"] == "notes") == own


async def test_creates_naming_their_ids_in_the_data_are_written_together(rest: Rest) -> None:
    # Ids given in the body (not the path) still tell the records apart: a group writes all of
    # its creates in one statement, and only two writes of one id wait for each other.
    inserts: list[int] = []

    def count(_conn: Any, _cursor: Any, statement: str, parameters: Any, *_rest: Any) -> None:
        if statement.startswith("INSERT INTO sync_records"):
            inserts.append(len(parameters) if isinstance(parameters, list) else 1)

    engine = rest.harness.state.database.engine.sync_engine
    event.listen(engine, "before_cursor_execute", count)
    try:
        before = _groups(rest)
        bodies = [{"id": f"d{index}", "title": f"order {index}"} for index in range(24)]
        bodies.append({"id": "d3", "title": "the same id again"})
        answers = await asyncio.gather(
            *(rest.client.post(ORDERS, json=body, headers=rest.owner.headers) for body in bodies)
        )
        groups = _groups(rest) - before
    finally:
        event.remove(engine, "before_cursor_execute", count)
    statuses = [answer.status_code for answer in answers]
    assert statuses == [201] * 24 + [409]
    assert answers[-1].json()["code"] == "VALIDATION_002"
    assert sum(inserts) == 24
    # One records write per group (plus none for the refused duplicate), not one per record.
    assert len(inserts) <= groups < 24
    final = await rest.client.get(f"{ORDERS}/d3", headers=rest.owner.headers)
    assert final.json()["data"]["title"] == "order 3"


async def test_concurrent_patches_of_one_record_apply_one_after_the_other(rest: Rest) -> None:
    await rest.create({"id": "o1", "title": "Pump"})
    answers = await asyncio.gather(
        *(
            rest.client.patch(
                f"{ORDERS}/o1", json={"tags": [f"t{index}"]}, headers=rest.owner.headers
            )
            for index in range(8)
        )
    )
    assert [answer.status_code for answer in answers] == [200] * 8
    versions = [answer.json()["version"] for answer in answers]
    # Each answer shows the version its own patch made, not the group's last one.
    assert sorted(versions) == list(range(2, 10))
    for answer in answers:
        assert answer.headers["etag"] == f'"{answer.json()["version"]}"'
    final = await rest.client.get(f"{ORDERS}/o1", headers=rest.owner.headers)
    assert final.json()["version"] == 9
    last = max(answers, key=lambda answer: answer.json()["version"])
    assert final.json()["data"] == last.json()["data"]


async def test_if_match_race_has_one_winner(rest: Rest) -> None:
    await rest.create({"id": "o1", "title": "Pump"})
    answers = await asyncio.gather(
        *(
            rest.client.patch(
                f"{ORDERS}/o1",
                json={"title": f"by {index}"},
                headers={**rest.owner.headers, "If-Match": '"1"'},
            )
            for index in range(5)
        )
    )
    statuses = sorted(answer.status_code for answer in answers)
    assert statuses == [200, 412, 412, 412, 412]
    refused = [answer for answer in answers if answer.status_code == 412]
    assert {answer.json()["code"] for answer in refused} == {"SYNC_004"}
    [winner] = [answer for answer in answers if answer.status_code == 200]
    final = await rest.client.get(f"{ORDERS}/o1", headers=rest.owner.headers)
    assert final.json()["data"]["title"] == winner.json()["data"]["title"]
    assert final.json()["version"] == 2


async def test_failing_writes_in_a_group_change_nothing_of_the_others(rest: Rest) -> None:
    await rest.world.collection("ledger", schema=ORDERS_SCHEMA, read="tenant", write="role:admin")
    await rest.create({"id": "taken", "title": "first"})
    member = await rest.world.device("ann@acme.example.com")
    gone = await rest.world.device("bob@acme.example.com")
    logout = await rest.client.post("/api/v1/auth/logout", headers=gone.headers)
    assert logout.status_code == 204, logout.text
    attempts = [
        (ORDERS, {"id": "good-1", "title": "kept"}, rest.owner),
        (ORDERS, {"id": "bad-schema", "title": 7}, rest.owner),
        (ORDERS, {"id": "taken", "title": "second"}, member),
        (ORDERS, {"id": "revoked", "title": "x"}, gone),
        ("/api/v1/collections/nowhere/records", {"id": "lost", "title": "x"}, member),
        ("/api/v1/collections/ledger/records", {"id": "not-mine", "title": "x"}, member),
        (ORDERS, {"id": "good-2", "title": "kept too"}, member),
    ]
    answers = await asyncio.gather(
        *(_create(rest, path, data, device) for path, data, device in attempts)
    )
    codes = [
        (answer.status_code, answer.json().get("code") if answer.status_code >= 400 else None)
        for answer in answers
    ]
    assert codes == [
        (201, None),
        (422, "VALIDATION_001"),
        (409, "VALIDATION_002"),
        (401, "AUTH_001"),
        (404, "NOT_FOUND"),
        (403, "AUTH_006"),
        (201, None),
    ]
    listed = await rest.list({"limit": 100})
    assert sorted(item["id"] for item in listed.json()["data"]) == ["good-1", "good-2", "taken"]
    taken = await rest.client.get(f"{ORDERS}/taken", headers=rest.owner.headers)
    assert taken.json()["data"]["title"] == "first"
    ledger = await rest.client.get("/api/v1/collections/ledger/records", headers=rest.owner.headers)
    assert ledger.json()["data"] == []


async def test_two_tenants_in_one_group_stay_apart(rest: Rest) -> None:
    other = await rest.harness.create_tenant("globex")
    other_headers = await rest.harness.owner_headers(other)
    created = await rest.client.post(
        "/api/v1/collections",
        json={"name": "orders", "schema": ORDERS_SCHEMA, "read": "tenant", "write": "tenant"},
        headers=other_headers,
    )
    assert created.status_code == 201, created.text
    answers = await asyncio.gather(
        rest.client.post(ORDERS, json={"id": "same", "title": "acme"}, headers=rest.owner.headers),
        rest.client.post(ORDERS, json={"id": "same", "title": "globex"}, headers=other_headers),
    )
    assert [answer.status_code for answer in answers] == [201, 201]
    mine = await rest.client.get(f"{ORDERS}/same", headers=rest.owner.headers)
    theirs = await rest.client.get(f"{ORDERS}/same", headers=other_headers)
    assert mine.json()["data"]["title"] == "acme"
    assert theirs.json()["data"]["title"] == "globex"


async def test_no_valid_token_is_401_before_the_body_is_validated(rest: Rest) -> None:
    # JSON, but not a record (an object): a 422 only for a caller with a valid token.
    as_json = {"Content-Type": "application/json"}
    anonymous = await rest.client.post(ORDERS, content=b"[1]", headers=as_json)
    assert anonymous.status_code == 401
    assert anonymous.json()["code"] == "AUTH_001"
    garbled = await rest.client.post(
        ORDERS, content=b"[1]", headers={**as_json, "Authorization": "Bearer x.y.z"}
    )
    assert garbled.status_code == 401
    assert garbled.json()["code"] == "AUTH_001"
    authenticated = await rest.client.post(
        ORDERS, content=b"[1]", headers={**as_json, **rest.owner.headers}
    )
    assert authenticated.status_code == 422
