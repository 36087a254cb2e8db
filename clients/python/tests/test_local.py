from __future__ import annotations

import hashlib
import json
import sqlite3
from collections.abc import AsyncIterator

import pytest
import rfc8785

from homeport_client import HomeportClient, canonical_json, data_hash


@pytest.fixture
async def local() -> AsyncIterator[HomeportClient]:
    async with HomeportClient("http://x", ":memory:", "dev") as c:
        yield c


def outbox(c: HomeportClient) -> list[tuple[object, ...]]:
    db: sqlite3.Connection = c._store._db
    return db.execute(
        "SELECT collection, id, op, data, hash, base_version, inflight FROM outbox ORDER BY seq"
    ).fetchall()


@pytest.mark.anyio
async def test_put_get_all_delete(local: HomeportClient) -> None:
    local.put("people", "p2", {"verification_id": "V2", "name": "Bo"})
    local.put("people", "p1", {"verification_id": "V1", "name": "Al"})
    assert local.get("people", "p1") == {"verification_id": "V1", "name": "Al"}
    assert local.all("people") == [
        {"verification_id": "V1", "name": "Al"},
        {"verification_id": "V2", "name": "Bo"},
    ]
    assert local.items("people")[0][0] == "p1"
    assert local.get("people", "nope") is None
    assert local.pending() == 2
    local.delete("people", "p1")
    assert local.get("people", "p1") is None
    assert [d["name"] for d in local.all("people")] == ["Bo"]
    assert local.pending() == 2


@pytest.mark.anyio
async def test_collapse_upsert_then_patch_is_one_merged_upsert(local: HomeportClient) -> None:
    local.put("people", "p1", {"name": "Al", "age": 1})
    local.patch("people", "p1", {"age": 2, "city": "Oslo"})
    rows = outbox(local)
    assert len(rows) == 1
    _, _, op, data, digest, base, _ = rows[0]
    assert op == "upsert"
    assert json.loads(str(data)) == {"name": "Al", "age": 2, "city": "Oslo"}
    assert digest == hashlib.sha256(rfc8785.dumps(json.loads(str(data)))).hexdigest()
    assert base is None
    assert local.get("people", "p1") == {"name": "Al", "age": 2, "city": "Oslo"}


@pytest.mark.anyio
async def test_collapse_rules(local: HomeportClient) -> None:
    local.patch("c", "a", {"x": 1})
    local.patch("c", "a", {"y": 2})
    local.put("c", "b", {"x": 1})
    local.delete("c", "b")
    local.delete("c", "d")
    local.put("c", "d", {"z": 3})
    local.delete("c", "e")
    local.patch("c", "e", {"w": 4})
    ops = {row[1]: (row[2], row[3], row[4]) for row in outbox(local)}
    assert ops["a"][0] == "patch"
    assert json.loads(str(ops["a"][1])) == {"x": 1, "y": 2}
    assert ops["b"] == ("delete", None, None)
    assert ops["d"][0] == "upsert"
    assert ops["e"][0] == "upsert"  # a patch after a delete re-creates the record
    assert json.loads(str(ops["e"][1])) == {"w": 4}
    assert local.pending() == 4


def test_canonical_hash() -> None:
    text = canonical_json({"b": 1, "a": [1.5, "é"]})
    assert text == '{"a":[1.5,"é"],"b":1}'
    assert data_hash(text) == hashlib.sha256(text.encode()).hexdigest()


@pytest.mark.anyio
async def test_invalid_data_is_refused_and_nothing_is_queued(local: HomeportClient) -> None:
    with pytest.raises(ValueError):  # noqa: PT011 - rfc8785's error is a ValueError
        local.put("c", "a", {"x": float("nan")})
    with pytest.raises(TypeError):
        local.put("c", "a", ["not", "an", "object"])  # type: ignore[arg-type]
    assert local.pending() == 0


@pytest.mark.anyio
async def test_outbox_survives_reopen(store_path: str) -> None:
    async with HomeportClient("http://x", store_path, "dev") as c:
        c.put("notes", "n1", {"text": "hello"})
        c.patch("notes", "n2", {"text": "patched"})
        c.delete("notes", "n3")
    async with HomeportClient("http://x", store_path, "dev") as c:
        assert c.pending() == 3
        assert c.get("notes", "n1") == {"text": "hello"}
        assert c.get("notes", "n2") == {"text": "patched"}


@pytest.mark.anyio
async def test_transaction_groups_writes(store_path: str) -> None:
    async with HomeportClient("http://x", store_path, "dev") as c:

        def failing_batch() -> None:
            with c.transaction():
                c.put("notes", "n1", {"v": 1})
                raise RuntimeError("boom")

        with pytest.raises(RuntimeError):
            failing_batch()
        assert c.pending() == 0
        with c.transaction():
            for i in range(100):
                c.put("notes", f"n{i}", {"v": i})
        assert c.pending() == 100


@pytest.mark.anyio
async def test_store_is_bound_to_its_device(store_path: str) -> None:
    async with HomeportClient("http://x", store_path, "dev") as c:
        c.put("notes", "n1", {"v": 1})
    with pytest.raises(ValueError, match="belongs to device"):
        HomeportClient("http://x", store_path, "other")
