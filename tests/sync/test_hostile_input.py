"""Hostile input to push, pull, force-sync and conflict resolution, on SQLite and PostgreSQL.

Each answer is a clean problem or item error (never a 500), the same on both databases, and
nothing is stored. Bodies are sent as raw bytes: ``json.dumps`` writes a lone surrogate as the
six characters ``\\ud800`` and NaN / Infinity as bare tokens, as a hostile client would.
"""

from __future__ import annotations

import json
import uuid
from typing import Any

import httpx
import pytest

from tests.sync.conftest import Device, World, upsert
from tests.sync.test_conflicts import CONFLICTS, feed, has_version, now_ms, pending_conflict

PUSH = "/api/v1/sync/push"
PROBLEM_JSON = "application/problem+json"


def deep(levels: int) -> Any:
    nested: Any = "leaf"
    for _ in range(levels):
        nested = {"n": nested}
    return nested


async def post_raw(
    device: Device, path: str, body: Any, headers: dict[str, Any] | None = None
) -> httpx.Response:
    return await device.harness.client.post(
        path,
        content=json.dumps(body).encode(),
        headers={**device.headers, "Content-Type": "application/json", **(headers or {})},
    )


async def push_raw(device: Device, body: dict[str, Any]) -> httpx.Response:
    return await post_raw(device, PUSH, body)


def assert_problem(answer: httpx.Response, status: int, code: str) -> dict[str, Any]:
    assert answer.status_code == status, answer.text
    assert answer.headers["content-type"].startswith(PROBLEM_JSON)
    problem: dict[str, Any] = answer.json()
    assert problem["code"] == code, problem
    return problem


async def stored(device: Device, expect: int = 0) -> list[tuple[str, int]]:
    """The records the device pulls (waiting for ``expect`` of them: PostgreSQL's feed holds a
    just-committed change back while an older transaction of the cluster runs)."""
    changes, _cursor = await feed(device, None, lambda found: len(found) >= expect)
    return [(change["id"], change["version"]) for change in changes]


# Conflict resolution: merged data passes the push's data checks

HOSTILE_DATA: dict[str, tuple[dict[str, Any], str]] = {
    "nested_900_levels": ({"title": "x", "n": deep(900)}, "nested"),
    "nul_in_a_value": ({"title": "a\x00"}, "NUL"),
    "nul_in_a_key": ({"title": "x", "k\x00": 1}, "NUL"),
    "nan": ({"title": "x", "n": float("nan")}, "exactly"),
    "infinity": ({"title": "x", "n": float("inf")}, "exactly"),
    "integer_2_70": ({"title": "x", "n": 2**70}, "exactly"),
    "surrogate_in_a_value": ({"title": "a\ud800"}, "surrogate"),
    "surrogate_in_a_key": ({"title": "x", "\ud800": 1}, "surrogate"),
}


@pytest.mark.parametrize("case", list(HOSTILE_DATA))
async def test_merged_data_is_checked_like_pushed_data(world: World, case: str) -> None:
    data, named = HOSTILE_DATA[case]
    s, conflict_id = await pending_conflict(world)
    _, cursor = await feed(world.owner, None, has_version(2))
    answer = await post_raw(
        world.owner, f"{CONFLICTS}/{conflict_id}/resolve", {"resolution": "merge", "data": data}
    )
    problem = assert_problem(answer, 422, "VALIDATION_001")
    assert named in problem["detail"], problem
    # Nothing stored: the record is still at version 2 and the conflict still waits.
    changes, _ = await world.owner.pull_all(cursor)
    assert changes == []
    assert (await s.state())["data"]["title"] == "from A"
    assert (await s.conflicts())["conflicts"][0]["resolution_result"] == "pending"
    # The same data pushed is refused too (one set of checks).
    pushed = await push_raw(
        s.b,
        {
            "idempotency_key": uuid.uuid4().hex,
            "changes": [{"collection": "tasks", "id": "n1", "op": "upsert", "data": data}],
        },
    )
    assert pushed.status_code == 200, pushed.text
    [error] = pushed.json()["errors"]
    assert error["error"] == "SYNC_001"
    assert named in error["message"]


# Push: lone surrogates and NUL


@pytest.mark.parametrize("key", ["k-\ud800", "k-\x00"])
async def test_an_idempotency_key_that_cannot_be_stored_is_refused(world: World, key: str) -> None:
    await world.collection("tasks")
    phone = await world.device("tech@acme.example.com")
    body = {"idempotency_key": key, "changes": [upsert("tasks", "t1", {"title": "A"})]}
    problem = assert_problem(await push_raw(phone, body), 422, "VALIDATION_001")
    assert "idempotency_key" in problem["detail"]
    assert await stored(phone) == []


async def test_lone_surrogates_in_an_item_are_item_errors(world: World) -> None:
    await world.collection("tasks")
    phone = await world.device("tech@acme.example.com")
    stamp = f"{now_ms():013d}:00000:"
    good = upsert("tasks", "ok", {"title": "fine"})
    hostile = [
        {"collection": "tasks", "id": "t\ud800", "data": {"title": "x"}},
        {"collection": "ta\ud800sks", "id": "t2", "data": {"title": "x"}},
        {"collection": "tasks", "id": "t3", "op": "up\ud800", "data": {"title": "x"}},
        {"collection": "tasks", "id": "t4", "data": {"title": "x"}, "hlc": stamp + "dev\ud800"},
        {"collection": "tasks", "id": "t5", "data": {"title": "x"}, "hash": "\ud800"},
        {"collection": "tasks", "id": "t6", "data": {"title": "x", "\ud800": 1}},
        {"collection": "tasks", "id": "t7", "data": {"title": "a\ud800"}},
        {"collection": "tasks", "data": {"id": "t\ud800", "title": "x"}},
        {"collection": "tasks", "id": "t9", "data": {"title": "x", "list": ["\udfff"]}},
    ]
    body = {"idempotency_key": uuid.uuid4().hex, "changes": [*hostile, good]}
    answer = await push_raw(phone, body)
    assert answer.status_code == 200, answer.text
    result = answer.json()
    assert result["synced_items"] == 1
    assert [e["error"] for e in result["errors"]] == ["SYNC_001"] * len(hostile)
    assert [e["item_id"] for e in result["errors"]] == [
        None,
        "t2",
        "t3",
        "t4",
        "t5",
        "t6",
        "t7",
        None,
        "t9",
    ]
    assert result["errors"][1]["collection"] is None  # nothing without UTF-8 is echoed
    assert await stored(phone, 1) == [("ok", 1)]
    # A replay of the same body is recognised (the request hash copes with such text).
    again = await push_raw(phone, body)
    assert again.status_code == 200, again.text
    assert again.headers.get("idempotent-replay") == "true"
    assert again.json() == result


async def test_a_seed_key_with_a_lone_surrogate_is_an_item_error(world: World) -> None:
    await world.collection("tasks")
    phone = await world.device("tech@acme.example.com")
    body = {"idempotency_key": uuid.uuid4().hex, "ta\ud800sks": [{"id": "s1", "title": "x"}]}
    answer = await push_raw(phone, body)
    assert answer.status_code == 200, answer.text
    [error] = answer.json()["errors"]
    assert error["error"] == "SYNC_001"
    assert error["collection"] is None
    assert await stored(phone) == []


async def test_nul_in_an_hlc_node_is_an_item_error(world: World) -> None:
    await world.collection("tasks")
    phone = await world.device("tech@acme.example.com")
    stamp = f"{now_ms():013d}:00000:dev\x00"
    answer = await phone.push([upsert("tasks", "t1", {"title": "x"}, hlc=stamp)])
    assert answer.status_code == 200, answer.text
    [error] = answer.json()["errors"]
    assert (error["error"], error["fields"]) == ("SYNC_001", ["hlc"])
    assert await stored(phone) == []


async def test_a_collection_name_with_nul_is_unknown_on_both_databases(world: World) -> None:
    await world.collection("tasks")
    phone = await world.device("tech@acme.example.com")
    answer = await phone.push(
        [upsert("tasks\x00", "t1", {"title": "x"}), upsert("tasks", "t2", {"title": "y"})]
    )
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert [r["status"] for r in body["results"]] == ["rejected", "applied"]
    [error] = body["errors"]
    assert (error["item_id"], error["error"]) == ("t1", "NOT_FOUND")
    assert await stored(phone, 1) == [("t2", 1)]


# Non-ASCII digits


@pytest.mark.parametrize(
    "stamp", ["²²²²²²²²²²²²²:00000:x", "1795626452733:¹¹¹¹¹:x", "١٧٩٥٦٢٦٤٥٢٧٣٣:00000:x"]
)
async def test_an_hlc_with_non_ascii_digits_is_an_item_error(world: World, stamp: str) -> None:
    await world.collection("tasks")
    phone = await world.device("tech@acme.example.com")
    answer = await phone.push([upsert("tasks", "t1", {"title": "x"}, hlc=stamp)])
    assert answer.status_code == 200, answer.text
    [error] = answer.json()["errors"]
    assert (error["item_id"], error["error"], error["fields"]) == ("t1", "SYNC_001", ["hlc"])
    assert await stored(phone) == []


@pytest.mark.parametrize(
    "version",
    ["³".encode("latin-1"), b"1\xb2", b"9" * 5000],
    ids=["superscript_three", "one_superscript_two", "5000_digits"],
)
async def test_a_protocol_header_that_is_not_a_small_ascii_number_is_a_400(
    world: World, version: bytes
) -> None:
    await world.collection("tasks")
    phone = await world.device("tech@acme.example.com")
    client = world.harness.client
    headers = {name.encode(): value.encode() for name, value in phone.headers.items()}
    headers[b"X-Homeport-Protocol"] = version  # raw bytes, as a client may send them
    answers = [
        await client.post(
            PUSH,
            json={"idempotency_key": "k1", "changes": [upsert("tasks", "t1", {"title": "x"})]},
            headers=headers,
        ),
        await client.get("/api/v1/sync/pull", headers=headers),
        await client.post("/api/v1/sync/force-sync", headers=headers),
    ]
    for answer in answers:
        assert_problem(answer, 400, "SYNC_001")
    assert await stored(phone) == []


# Strict types and bounds


@pytest.mark.parametrize("base_version", ["1", True, 1.0, 2**70, 2**31], ids=repr)
async def test_base_version_is_a_strict_bounded_integer(world: World, base_version: Any) -> None:
    await world.collection("tasks", conflict_policy="manual")
    phone = await world.device("tech@acme.example.com")
    first = await phone.push([upsert("tasks", "t1", {"title": "A"})])
    assert first.json()["errors"] == []
    answer = await phone.push([upsert("tasks", "t1", {"title": "B"}, base_version=base_version)])
    assert answer.status_code == 200, answer.text
    [error] = answer.json()["errors"]
    assert (error["item_id"], error["error"]) == ("t1", "SYNC_001")
    assert "base_version" in error["message"]
    assert await stored(phone, 1) == [("t1", 1)]
    log = await world.harness.client.get(CONFLICTS, headers=world.owner.headers)
    assert log.json()["total"] == 0


@pytest.mark.parametrize(
    "body",
    [{"auto_resolve": "yes"}, {"auto_resolve": 1}, {"notify_on_conflict": "true"}],
    ids=repr,
)
async def test_policy_flags_are_strict_booleans(world: World, body: dict[str, Any]) -> None:
    await world.collection("tasks")
    url = f"/api/v1/sync/policies/{world.tenant.id}/tasks"
    client = world.harness.client
    answer = await client.put(
        url, json={"resolution_policy": "manual", **body}, headers=world.owner.headers
    )
    assert_problem(answer, 422, "VALIDATION_001")
    policy = (await client.get(url, headers=world.owner.headers)).json()
    assert (policy["resolution_policy"], policy["auto_resolve"]) == ("server_wins", True)
    assert policy["notify_on_conflict"] is False
