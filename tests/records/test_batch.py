"""records:batch: atomic or best effort, idempotent with Idempotency-Key like a sync push."""

from __future__ import annotations

from tests.records.conftest import ORDERS, Rest

BATCH = f"{ORDERS}:batch"


async def test_best_effort_reports_each_operation(rest: Rest) -> None:
    await rest.create({"id": "old", "title": "Pump"})
    body = {
        "mode": "best_effort",
        "operations": [
            {"op": "create", "data": {"id": "n1", "title": "New"}},
            {"op": "create", "data": {"id": "old", "title": "Dup"}},
            {"op": "patch", "id": "old", "data": {"status": "open"}, "if_match": 1},
            {"op": "replace", "id": "missing", "data": {"title": "x"}},
            {"op": "create", "data": {"priority": "high"}},
            {"op": "delete", "id": "n1"},
            {"op": "patch", "id": "old", "data": {"status": "late"}, "if_match": 1},
        ],
    }
    answer = await rest.client.post(BATCH, json=body, headers=rest.owner.headers)
    assert answer.status_code == 200, answer.text
    result = answer.json()
    assert [(r["status"], r["code"]) for r in result["results"]] == [
        (201, None),
        (409, "VALIDATION_002"),
        (200, None),
        (404, "NOT_FOUND"),
        (422, "VALIDATION_001"),
        (204, None),
        (412, "SYNC_004"),
    ]
    assert result["succeeded"] == 3
    assert result["failed"] == 4
    assert result["applied"] is True
    assert result["results"][2]["version"] == 2
    old = (await rest.client.get(f"{ORDERS}/old", headers=rest.owner.headers)).json()
    assert old["data"]["status"] == "open"
    assert (await rest.client.get(f"{ORDERS}/n1", headers=rest.owner.headers)).status_code == 404


async def test_atomic_applies_nothing_when_one_fails(rest: Rest) -> None:
    body = {
        "mode": "atomic",
        "operations": [
            {"op": "create", "data": {"id": "a", "title": "A"}},
            {"op": "create", "data": {"id": "b"}},  # no title: invalid
        ],
    }
    answer = await rest.client.post(BATCH, json=body, headers=rest.owner.headers)
    result = answer.json()
    assert result["applied"] is False
    assert [(r["status"], r["code"]) for r in result["results"]] == [
        (424, "ATOMIC_ABORTED"),
        (422, "VALIDATION_001"),
    ]
    assert (await rest.list({})).json()["data"] == []
    changes, _ = await rest.owner.pull_all()
    assert changes == []


async def test_idempotency_key_replays_and_refuses_another_body(rest: Rest) -> None:
    headers = {**rest.owner.headers, "Idempotency-Key": "batch-1"}
    body = {"operations": [{"op": "create", "data": {"title": "once"}}]}
    first = await rest.client.post(BATCH, json=body, headers=headers)
    assert first.status_code == 200
    assert "idempotent-replayed" not in first.headers
    again = await rest.client.post(BATCH, json=body, headers=headers)
    assert again.status_code == 200
    assert again.headers["idempotent-replayed"] == "true"
    assert again.json() == first.json()
    assert len((await rest.list({})).json()["data"]) == 1
    other = await rest.client.post(
        BATCH, json={"operations": [{"op": "create", "data": {"title": "other"}}]}, headers=headers
    )
    assert other.status_code == 409
    assert other.json()["code"] == "SYNC_003"
    assert len((await rest.list({})).json()["data"]) == 1


async def test_batch_limit_and_shape(rest: Rest) -> None:
    too_many = {"operations": [{"op": "create", "data": {"title": "t"}}] * 1001}
    answer = await rest.client.post(BATCH, json=too_many, headers=rest.owner.headers)
    assert answer.status_code == 400
    assert answer.json()["code"] == "SYNC_001"
    empty = await rest.client.post(BATCH, json={"operations": []}, headers=rest.owner.headers)
    assert empty.status_code == 422
    wrong = await rest.client.post(
        BATCH, json={"operations": [{"op": "upsert"}]}, headers=rest.owner.headers
    )
    assert wrong.status_code == 422
    exactly = {"operations": [{"op": "create", "data": {"title": f"t{i}"}} for i in range(1000)]}
    answer = await rest.client.post(BATCH, json=exactly, headers=rest.owner.headers)
    assert answer.status_code == 200
    assert answer.json()["succeeded"] == 1000
