"""Conflict policies, the conflict log and its endpoints, on SQLite and PostgreSQL.

Every scenario starts from one record (version 1) that two devices have both seen; device A
changes it first (version 2), then device B pushes a change still based on version 1. Explicit
HLC stamps decide who is "later".
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import pytest

from tests.sync.conftest import Device, World, upsert

POLICIES = ["server_wins", "client_wins", "last_write_wins", "field_merge", "manual"]
CONFLICTS = "/api/v1/sync/conflicts"
PROBLEM_JSON = "application/problem+json"


def now_ms() -> int:
    return int(time.time() * 1000)


def stamp(wall_ms: int, device_id: str, counter: int = 0) -> str:
    return f"{wall_ms:013d}:{counter:05d}:{device_id}"


async def feed(
    device: Device, cursor: str | None, ready: Any = bool, wait_s: float = 10.0
) -> tuple[list[dict[str, Any]], str]:
    """``pull_all`` until ``ready(changes)``. On PostgreSQL the feed only serves changes below
    the cluster's oldest running transaction, so any other busy database on the server can hold
    a just-committed change back for a moment."""
    deadline = time.monotonic() + wait_s
    while True:
        changes, after = await device.pull_all(cursor)
        if ready(changes) or time.monotonic() > deadline:
            return changes, after
        await asyncio.sleep(0.05)


def has_version(version: int, record_id: str = "t1") -> Any:
    return lambda changes: any(c["id"] == record_id and c["version"] == version for c in changes)


def assert_code(answer: Any, status: int, code: str) -> None:
    assert answer.status_code == status, answer.text
    assert answer.headers["content-type"].startswith(PROBLEM_JSON)
    assert answer.json()["code"] == code


def patch(record_id: str, data: dict[str, Any], **fields: Any) -> dict[str, Any]:
    return {"collection": "tasks", "id": record_id, "op": "patch", "data": data, **fields}


def delete(record_id: str, **fields: Any) -> dict[str, Any]:
    return {"collection": "tasks", "id": record_id, "op": "delete", **fields}


@dataclass
class Scene:
    world: World
    a: Device
    b: Device
    t0: int  # a base wall time, a few minutes in the past

    async def push_ok(self, device: Device, changes: list[dict[str, Any]]) -> dict[str, Any]:
        answer = await device.push(changes)
        assert answer.status_code == 200, answer.text
        body: dict[str, Any] = answer.json()
        assert body["errors"] == [], body
        return body

    async def state(self, record_id: str = "t1") -> dict[str, Any]:
        """The record as the feed serves it (latest state)."""
        changes, _ = await feed(
            self.world.owner, None, lambda cs: any(c["id"] == record_id for c in cs)
        )
        found = [c for c in changes if c["id"] == record_id]
        assert len(found) == 1, changes
        return dict(found[0])

    async def conflicts(self, **params: Any) -> dict[str, Any]:
        answer = await self.world.harness.client.get(
            CONFLICTS, params=params, headers=self.world.owner.headers
        )
        assert answer.status_code == 200, answer.text
        return dict(answer.json())


async def scene(world: World, policy: str = "server_wins", **spec: Any) -> Scene:
    """Collection ``tasks`` with ``policy``; t1 at version 1 written at t0 by device A."""
    await world.collection("tasks", conflict_policy=policy, **spec)
    a = await world.device("a@acme.example.com", device_id="dev-a")
    b = await world.device("b@acme.example.com", device_id="dev-b")
    t0 = now_ms() - 120_000
    s = Scene(world, a, b, t0)
    body = await s.push_ok(
        a, [upsert("tasks", "t1", {"title": "base", "done": False}, hlc=stamp(t0, "dev-a"))]
    )
    assert body["results"][0]["version"] == 1
    return s


async def a_updates(s: Scene, wall: int) -> None:
    body = await s.push_ok(
        s.a,
        [
            upsert(
                "tasks",
                "t1",
                {"title": "from A", "done": False},
                base_version=1,
                hlc=stamp(wall, "dev-a"),
            )
        ],
    )
    assert body["results"][0] == {
        "collection": "tasks",
        "id": "t1",
        "status": "applied",
        "version": 2,
        "resolution": None,
    }
    assert body["conflicts"] == []


# Update against update

# (policy, B is later than A, expected winner, final title, final version, status)
UPDATE_VS_UPDATE = [
    ("server_wins", True, "server", "from A", 2, "resolved"),
    ("server_wins", False, "server", "from A", 2, "resolved"),
    ("client_wins", True, "client", "from B", 3, "resolved"),
    ("client_wins", False, "client", "from B", 3, "resolved"),
    ("last_write_wins", True, "client", "from B", 3, "resolved"),
    ("last_write_wins", False, "server", "from A", 2, "resolved"),
    ("most_recent_wins", True, "client", "from B", 3, "resolved"),
    ("most_recent_wins", False, "server", "from A", 2, "resolved"),
    ("timestamp", True, "client", "from B", 3, "resolved"),
    ("timestamp", False, "server", "from A", 2, "resolved"),
    ("field_merge", True, "merged", "from B", 3, "resolved"),
    ("field_merge", False, "server", "from A", 2, "resolved"),
    ("manual", True, "server", "from A", 2, "pending"),
    ("manual", False, "server", "from A", 2, "pending"),
]


@pytest.mark.parametrize(
    ("policy", "b_later", "winner", "title", "version", "status"), UPDATE_VS_UPDATE
)
async def test_update_against_update(
    world: World, policy: str, b_later: bool, winner: str, title: str, version: int, status: str
) -> None:
    s = await scene(world, policy)
    await a_updates(s, s.t0 + 60_000)
    b_wall = s.t0 + (90_000 if b_later else 30_000)
    answer = await s.b.push(
        [
            upsert(
                "tasks",
                "t1",
                {"title": "from B", "done": True},
                base_version=1,
                hlc=stamp(b_wall, "dev-b"),
            )
        ]
    )
    assert answer.status_code == 200, answer.text
    body = answer.json()
    strategy = {"most_recent_wins": "last_write_wins", "timestamp": "last_write_wins"}.get(
        policy, policy
    )
    assert body["synced_items"] == 1
    assert body["errors"] == []
    assert body["results"] == [
        {
            "collection": "tasks",
            "id": "t1",
            "status": "conflict",
            "version": version,
            "resolution": strategy,
        }
    ]
    [conflict] = body["conflicts"]
    assert conflict["resolution"] == strategy
    assert conflict["winner"] == winner
    assert conflict["status"] == status
    assert conflict["server"]["version"] == version
    assert conflict["server"]["data"]["title"] == title

    record = await s.state()
    assert record["version"] == version
    assert record["data"]["title"] == title
    assert record["data"]["done"] is (title == "from B")

    log = await s.conflicts()
    assert log["total"] == 1
    [entry] = log["conflicts"]
    assert entry["id"] == conflict["conflict_id"]
    assert entry["resolution_strategy"] == strategy
    assert entry["resolution_result"] == status
    assert entry["winning_version"] == winner
    assert entry["client_version"]["data"] == {"title": "from B", "done": True}
    assert entry["client_version"]["base_version"] == 1
    assert entry["client_version"]["hlc"] == stamp(b_wall, "dev-b")


# Client delete against a server update

DELETE_VS_UPDATE = [
    ("server_wins", True, "server", False),
    ("server_wins", False, "server", False),
    ("client_wins", True, "client", True),
    ("client_wins", False, "client", True),
    ("last_write_wins", True, "client", True),
    ("last_write_wins", False, "server", False),
    ("field_merge", True, "client", True),
    ("field_merge", False, "server", False),
    ("manual", True, "server", False),
    ("manual", False, "server", False),
]


@pytest.mark.parametrize(("policy", "b_later", "winner", "deleted"), DELETE_VS_UPDATE)
async def test_client_delete_against_server_update(
    world: World, policy: str, b_later: bool, winner: str, deleted: bool
) -> None:
    s = await scene(world, policy)
    await a_updates(s, s.t0 + 60_000)
    b_wall = s.t0 + (90_000 if b_later else 30_000)
    body = await s.push_ok(s.b, [delete("t1", base_version=1, hlc=stamp(b_wall, "dev-b"))])
    [result] = body["results"]
    assert result["status"] == "conflict"
    assert result["version"] == (3 if deleted else 2)
    [conflict] = body["conflicts"]
    assert conflict["winner"] == winner
    assert conflict["status"] == ("pending" if policy == "manual" else "resolved")
    assert conflict["server"]["deleted"] is deleted

    record = await s.state()
    assert record["deleted"] is deleted
    assert record["op"] == ("delete" if deleted else "upsert")
    if not deleted:
        assert record["data"]["title"] == "from A"

    [entry] = (await s.conflicts())["conflicts"]
    assert entry["client_version"]["op"] == "delete"
    assert entry["winning_version"] == winner


# Client update against a server delete: the tombstone stays, under every policy


@pytest.mark.parametrize("auto_resolve", [True, False])
@pytest.mark.parametrize("policy", POLICIES)
@pytest.mark.parametrize("op", ["upsert", "patch"])
async def test_update_against_tombstone_stays_deleted(
    world: World, policy: str, op: str, auto_resolve: bool
) -> None:
    s = await scene(world, policy)
    if not auto_resolve:
        await put_policy(world, policy, auto_resolve=False)
    body = await s.push_ok(s.a, [delete("t1", base_version=1, hlc=stamp(s.t0 + 10_000, "dev-a"))])
    assert body["results"][0]["version"] == 2
    # B's change is later than the deletion and even claims to be based on it.
    for base in (1, 2, None):
        change = (
            upsert("tasks", "t1", {"title": "revived"}, hlc=stamp(s.t0 + 90_000, "dev-b"))
            if op == "upsert"
            else patch("t1", {"title": "revived"}, hlc=stamp(s.t0 + 90_000, "dev-b"))
        )
        if base is not None:
            change["base_version"] = base
        body = await s.push_ok(s.b, [change])
        assert body["results"][0]["status"] == "conflict", body
        assert body["results"][0]["version"] == 2
        [conflict] = body["conflicts"]
        assert conflict["resolution"] == "deleted"
        assert conflict["winner"] == "deleted"
        assert conflict["status"] == "resolved"
        assert conflict["server"]["deleted"] is True
    record = await s.state()
    assert record["deleted"] is True
    assert record["data"] is None
    assert record["version"] == 2


async def test_deleting_a_tombstone_is_a_quiet_noop(world: World) -> None:
    s = await scene(world, "client_wins")
    await s.push_ok(s.a, [delete("t1", base_version=1)])
    body = await s.push_ok(s.b, [delete("t1", base_version=1)])
    assert body["results"][0]["status"] == "applied"
    assert body["conflicts"] == []
    assert (await s.state())["version"] == 2


# Timestamps: ties and clock skew


@pytest.mark.parametrize(
    ("first", "second", "second_wins"),
    [("dev-a", "dev-b", True), ("dev-b", "dev-a", False)],
)
async def test_same_time_is_broken_by_device_id(
    world: World, first: str, second: str, second_wins: bool
) -> None:
    await world.collection("tasks", conflict_policy="last_write_wins")
    devices = {
        "dev-a": await world.device("a@acme.example.com", device_id="dev-a"),
        "dev-b": await world.device("b@acme.example.com", device_id="dev-b"),
    }
    t0 = now_ms() - 60_000
    await devices[first].push([upsert("tasks", "t1", {"title": "v1"}, hlc=stamp(t0, first))])
    same = t0 + 1_000
    await devices[first].push(
        [upsert("tasks", "t1", {"title": first}, base_version=1, hlc=stamp(same, first, 3))]
    )
    answer = await devices[second].push(
        [upsert("tasks", "t1", {"title": second}, base_version=1, hlc=stamp(same, second, 3))]
    )
    body = answer.json()
    assert body["conflicts"][0]["winner"] == ("client" if second_wins else "server")
    changes, _ = await feed(world.owner, None)
    assert changes[0]["data"]["title"] == (second if second_wins else first)


async def test_a_clock_far_ahead_is_clamped(world: World) -> None:
    s = await scene(world, "last_write_wins")
    # A's clock claims to be ten minutes ahead (more than the 5 minutes allowed).
    far = now_ms() + 10 * 60_000
    await a_updates(s, far)
    # B writes afterwards without a stamp (server time): later than A's clamped stamp.
    body = await s.push_ok(s.b, [upsert("tasks", "t1", {"title": "from B"}, base_version=1)])
    assert body["conflicts"][0]["winner"] == "client"
    assert (await s.state())["data"]["title"] == "from B"


async def test_a_clock_ahead_within_the_allowed_skew_is_trusted(world: World) -> None:
    s = await scene(world, "last_write_wins")
    await a_updates(s, now_ms() + 4 * 60_000)
    body = await s.push_ok(s.b, [upsert("tasks", "t1", {"title": "from B"}, base_version=1)])
    assert body["conflicts"][0]["winner"] == "server"
    assert (await s.state())["data"]["title"] == "from A"


async def test_a_clamped_stamp_is_logged_clamped(world: World) -> None:
    s = await scene(world, "last_write_wins")
    await a_updates(s, s.t0 + 60_000)
    before = now_ms()
    far = before + 60 * 60_000
    await s.push_ok(
        s.b, [upsert("tasks", "t1", {"title": "from B"}, base_version=1, hlc=stamp(far, "dev-b"))]
    )
    after = now_ms()
    [entry] = (await s.conflicts())["conflicts"]
    wall, counter, node = entry["client_version"]["hlc"].split(":")
    assert before <= int(wall) <= after
    assert (counter, node) == ("00000", "dev-b")


# Field merge


async def test_field_merge_merges_disjoint_fields(world: World) -> None:
    s = await scene(world, "field_merge")
    t0 = s.t0
    await s.push_ok(
        s.a, [patch("t1", {"notes": "n"}, base_version=1, hlc=stamp(t0 + 1_000, "dev-a"))]
    )
    # Both devices saw version 2; A changes the title, B (earlier clock) changes done.
    await s.push_ok(
        s.a, [patch("t1", {"title": "A title"}, base_version=2, hlc=stamp(t0 + 20_000, "dev-a"))]
    )
    body = await s.push_ok(
        s.b, [patch("t1", {"done": True}, base_version=2, hlc=stamp(t0 + 10_000, "dev-b"))]
    )
    [conflict] = body["conflicts"]
    assert conflict["resolution"] == "field_merge"
    assert conflict["winner"] == "merged"
    assert body["results"][0]["version"] == 4
    record = await s.state()
    assert record["version"] == 4
    assert record["data"] == {"title": "A title", "done": True, "notes": "n"}


async def test_field_merge_takes_the_later_stamp_per_field(world: World) -> None:
    s = await scene(world, "field_merge")
    t0 = s.t0
    # Field clocks after these: title t0+50s (A), done t0+20s (B).
    await s.push_ok(
        s.a, [patch("t1", {"title": "A"}, base_version=1, hlc=stamp(t0 + 50_000, "dev-a"))]
    )
    await s.push_ok(
        s.b, [patch("t1", {"done": True}, base_version=1, hlc=stamp(t0 + 20_000, "dev-b"))]
    )
    assert (await s.state())["data"] == {"title": "A", "done": True}
    # A stale device (t0+30s): later than done's clock, earlier than title's.
    c = await world.device("c@acme.example.com", device_id="dev-c")
    body = await s.push_ok(
        c,
        [
            upsert(
                "tasks",
                "t1",
                {"title": "C", "done": False},
                base_version=1,
                hlc=stamp(t0 + 30_000, "dev-c"),
            )
        ],
    )
    assert body["conflicts"][0]["winner"] == "merged"
    record = await s.state()
    assert record["data"] == {"title": "A", "done": False}
    # Older than every field: nothing taken, the server record is kept.
    body = await s.push_ok(
        c,
        [
            patch(
                "t1", {"title": "old", "done": True}, base_version=1, hlc=stamp(t0 + 5_000, "dev-c")
            )
        ],
    )
    assert body["conflicts"][0]["winner"] == "server"
    assert (await s.state())["data"] == record["data"]


async def test_field_merge_result_is_validated(world: World) -> None:
    s = await scene(world, "field_merge")
    await a_updates(s, s.t0 + 10_000)
    answer = await s.b.push(
        [patch("t1", {"title": "x" * 300}, base_version=1, hlc=stamp(s.t0 + 20_000, "dev-b"))]
    )
    body = answer.json()
    assert body["results"][0]["status"] == "rejected"
    assert body["errors"][0]["error"] == "VALIDATION_001"
    assert body["errors"][0]["fields"] == ["title"]
    assert (await s.state())["data"]["title"] == "from A"


# Base version


@pytest.mark.parametrize("policy", POLICIES)
async def test_missing_base_version_on_an_existing_record_conflicts(
    world: World, policy: str
) -> None:
    s = await scene(world, policy)
    body = await s.push_ok(
        s.b, [upsert("tasks", "t1", {"title": "blind"}, hlc=stamp(s.t0 + 1, "dev-b"))]
    )
    assert body["results"][0]["status"] == "conflict"
    assert len(body["conflicts"]) == 1
    [entry] = (await s.conflicts())["conflicts"]
    assert entry["client_version"]["base_version"] is None


async def test_current_base_version_applies_without_conflict(world: World) -> None:
    s = await scene(world, "manual")
    body = await s.push_ok(s.b, [upsert("tasks", "t1", {"title": "next"}, base_version=1)])
    assert body["results"][0]["status"] == "applied"
    assert body["results"][0]["version"] == 2
    assert (await s.conflicts())["total"] == 0


# auto_resolve=false


async def put_policy(world: World, policy: str, **body: Any) -> Any:
    answer = await world.harness.client.put(
        f"/api/v1/sync/policies/{world.tenant.id}/tasks",
        json={"resolution_policy": policy, **body},
        headers=world.owner.headers,
    )
    assert answer.status_code == 200, answer.text
    return answer.json()


@pytest.mark.parametrize("policy", POLICIES)
async def test_auto_resolve_off_leaves_every_conflict_pending(world: World, policy: str) -> None:
    s = await scene(world, policy)
    await put_policy(world, policy, auto_resolve=False)
    await a_updates(s, s.t0 + 10_000)
    body = await s.push_ok(
        s.b,
        [
            upsert(
                "tasks",
                "t1",
                {"title": "from B"},
                base_version=1,
                hlc=stamp(s.t0 + 90_000, "dev-b"),
            ),
        ],
    )
    [conflict] = body["conflicts"]
    assert conflict["status"] == "pending"
    assert conflict["winner"] == "server"
    assert (await s.state())["data"]["title"] == "from A"
    [entry] = (await s.conflicts())["conflicts"]
    assert entry["resolution_result"] == "pending"
    assert entry["resolved_at"] is None


# The conflict log


async def test_conflict_log_holds_both_sides(world: World) -> None:
    s = await scene(world, "server_wins")
    await a_updates(s, s.t0 + 10_000)
    b_stamp = stamp(s.t0 + 20_000, "dev-b")
    await s.push_ok(s.b, [upsert("tasks", "t1", {"title": "from B"}, base_version=1, hlc=b_stamp)])
    log = await s.conflicts()
    [entry] = log["conflicts"]
    assert entry["mobile_id"] == "t1"
    assert entry["domain"] == "tasks"
    assert entry["device_id"] == "dev-b"
    assert entry["server_version"] == {
        "version": 2,
        "data": {"title": "from A", "done": False},
        "deleted": False,
    }
    assert entry["client_version"] == {
        "op": "upsert",
        "data": {"title": "from B"},
        "base_version": 1,
        "hlc": b_stamp,
    }
    assert entry["resolution_strategy"] == "server_wins"
    assert entry["resolution_result"] == "resolved"
    assert entry["winning_version"] == "server"
    assert entry["created_at"]
    assert entry["resolved_at"]


async def test_conflict_log_filters_and_rate(world: World) -> None:
    s = await scene(world, "server_wins")  # 1 item pushed
    await world.collection("notes", conflict_policy="client_wins")
    await s.push_ok(
        s.a, [upsert("notes", "n1", {"title": "n"}), upsert("tasks", "t2", {"title": "x"})]
    )
    await s.push_ok(s.b, [upsert("tasks", "t1", {"title": "blind"})])  # conflict 1
    await asyncio.sleep(0.05)
    middle = datetime.now(UTC)
    await asyncio.sleep(0.05)
    await s.push_ok(
        s.b,
        [
            upsert("notes", "n1", {"title": "blind"}),  # conflict 2
            upsert("tasks", "t2", {"title": "y"}, base_version=1),  # applied
            upsert("tasks", "t3", {"title": "z"}),  # applied
        ],
    )
    # 7 items pushed in all, 2 conflicts.
    everything = await s.conflicts()
    assert everything["total"] == 2
    assert [e["domain"] for e in everything["conflicts"]] == ["notes", "tasks"]  # newest first
    assert everything["conflict_rate_pct"] == round(100 * 2 / 7, 2)

    assert (await s.conflicts(tenant_id=world.tenant.id))["total"] == 2
    other = await s.conflicts(tenant_id="someone-else")
    assert other == {"conflicts": [], "total": 0, "conflict_rate_pct": 0.0}

    tasks = await s.conflicts(domain="tasks")
    assert tasks["total"] == 1
    assert [e["mobile_id"] for e in tasks["conflicts"]] == ["t1"]
    # The rate of one collection: its conflicts over its pushed items (tasks: 5, notes: 2).
    assert tasks["conflict_rate_pct"] == 20.0
    notes = await s.conflicts(domain="notes")
    assert (notes["total"], notes["conflict_rate_pct"]) == (1, 50.0)
    assert (await s.conflicts(domain="nothing"))["total"] == 0

    recent = await s.conflicts(since=middle.isoformat())
    assert recent["total"] == 1
    assert [e["mobile_id"] for e in recent["conflicts"]] == ["n1"]
    # Since then: 3 items pushed, 1 conflict.
    assert recent["conflict_rate_pct"] == round(100 * 1 / 3, 2)
    future = await s.conflicts(since="2999-01-01T00:00:00Z")
    assert future == {"conflicts": [], "total": 0, "conflict_rate_pct": 0.0}

    limited = await s.conflicts(limit=1)
    assert len(limited["conflicts"]) == 1
    assert limited["total"] == 2

    naive = await world.harness.client.get(
        CONFLICTS, params={"since": "2024-01-01T00:00:00"}, headers=world.owner.headers
    )
    assert naive.status_code == 422
    assert naive.json()["code"] == "VALIDATION_001"


async def test_no_pushes_no_rate(world: World) -> None:
    await world.collection("tasks")
    log = await world.harness.client.get(CONFLICTS, headers=world.owner.headers)
    assert log.json() == {"conflicts": [], "total": 0, "conflict_rate_pct": 0.0}


# Resolving


async def pending_conflict(world: World, op: str = "upsert") -> tuple[Scene, str]:
    s = await scene(world, "manual")
    await a_updates(s, s.t0 + 10_000)
    change = (
        delete("t1", base_version=1)
        if op == "delete"
        else upsert("tasks", "t1", {"title": "from B", "done": True}, base_version=1)
        if op == "upsert"
        else patch("t1", {"done": True}, base_version=1)
    )
    body = await s.push_ok(s.b, [change])
    [conflict] = body["conflicts"]
    assert conflict["status"] == "pending"
    return s, str(conflict["conflict_id"])


async def resolve(
    world: World, conflict_id: str, headers: dict[str, str] | None = None, **body: Any
) -> Any:
    return await world.harness.client.post(
        f"{CONFLICTS}/{conflict_id}/resolve", json=body, headers=headers or world.owner.headers
    )


async def test_resolve_accept_server(world: World) -> None:
    s, conflict_id = await pending_conflict(world)
    _, cursor = await feed(world.owner, None, has_version(2))
    answer = await resolve(world, conflict_id, resolution="accept_server")
    assert answer.status_code == 200, answer.text
    out = answer.json()
    assert out["id"] == conflict_id
    assert out["resolution_result"] == "resolved"
    assert out["winning_version"] == "server"
    assert out["resolved_at"]
    changes, _ = await world.owner.pull_all(cursor)
    assert changes == []  # nothing written
    assert (await s.state())["version"] == 2

    again = await resolve(world, conflict_id, resolution="accept_client")
    assert again.status_code == 409
    assert again.headers["content-type"].startswith(PROBLEM_JSON)
    assert again.json()["code"] == "VALIDATION_003"
    assert (await s.state())["version"] == 2


@pytest.mark.parametrize(
    ("op", "expected"),
    [
        ("upsert", {"title": "from B", "done": True}),
        ("patch", {"title": "from A", "done": True}),
        ("delete", None),
    ],
)
async def test_resolve_accept_client(
    world: World, op: str, expected: dict[str, Any] | None
) -> None:
    s, conflict_id = await pending_conflict(world, op)
    _, cursor = await feed(world.owner, None, has_version(2))
    answer = await resolve(world, conflict_id, resolution="accept_client")
    assert answer.status_code == 200, answer.text
    assert answer.json()["winning_version"] == "client"
    changes, _ = await feed(world.owner, cursor)
    assert [(c["id"], c["version"], c["deleted"]) for c in changes] == [("t1", 3, expected is None)]
    assert changes[0]["data"] == expected
    [entry] = (await s.conflicts())["conflicts"]
    assert entry["resolution_result"] == "resolved"
    assert entry["winning_version"] == "client"
    # Devices keep syncing from the resolved version.
    if expected is not None:
        body = await s.push_ok(s.a, [upsert("tasks", "t1", {"title": "after"}, base_version=3)])
        assert body["results"][0] == {
            "collection": "tasks",
            "id": "t1",
            "status": "applied",
            "version": 4,
            "resolution": None,
        }


async def test_resolve_merge(world: World) -> None:
    s, conflict_id = await pending_conflict(world)
    _, cursor = await feed(world.owner, None, has_version(2))

    missing = await resolve(world, conflict_id, resolution="merge")
    assert missing.status_code == 400
    assert missing.json()["code"] == "SYNC_002"

    invalid = await resolve(world, conflict_id, resolution="merge", data={"title": 5, "done": "y"})
    assert invalid.status_code == 422
    assert invalid.headers["content-type"].startswith(PROBLEM_JSON)
    problem = invalid.json()
    assert problem["code"] == "VALIDATION_001"
    assert {e["field"] for e in problem["errors"]} == {"title", "done"}
    still = (await s.conflicts())["conflicts"][0]
    assert still["resolution_result"] == "pending"

    answer = await resolve(
        world, conflict_id, resolution="merge", data={"title": "both", "done": True}
    )
    assert answer.status_code == 200, answer.text
    assert answer.json()["winning_version"] == "merged"
    changes, _ = await feed(world.owner, cursor)
    assert [(c["id"], c["version"]) for c in changes] == [("t1", 3)]
    assert changes[0]["data"] == {"title": "both", "done": True}
    # Another device sees it too.
    seen, _ = await feed(s.a, None)
    assert seen[0]["data"]["title"] == "both"

    twice = await resolve(world, conflict_id, resolution="merge", data={"title": "again"})
    assert twice.status_code == 409
    assert twice.json()["code"] == "VALIDATION_003"


async def test_resolving_onto_a_deleted_record_is_refused(world: World) -> None:
    s, conflict_id = await pending_conflict(world)
    await s.push_ok(s.a, [delete("t1", base_version=2)])
    for body in (
        {"resolution": "accept_client"},
        {"resolution": "merge", "data": {"title": "merged"}},
    ):
        answer = await resolve(world, conflict_id, **body)
        assert_code(answer, 409, "VALIDATION_003")
    [entry] = (await s.conflicts())["conflicts"]
    assert entry["resolution_result"] == "pending"
    record = await s.state()
    assert (record["version"], record["deleted"]) == (3, True)
    # Keeping the server side (the tombstone) is still possible.
    answer = await resolve(world, conflict_id, resolution="accept_server")
    assert answer.status_code == 200, answer.text


JOB_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {"title": {"type": "string"}, "assignee": {"type": "string"}},
    "required": ["title"],
    "x-owner-field": "assignee",
}


@pytest.mark.parametrize("resolution", ["accept_client", "merge"])
async def test_resolution_that_renames_the_owner_moves_the_record(
    world: World, resolution: str
) -> None:
    """The owner field decides who owns (and, with read=owner, who sees) a record; a resolved
    version naming another user must belong to that user, as the same push would."""
    await world.collection(
        "jobs", schema=JOB_SCHEMA, read="owner", write="tenant", conflict_policy="manual"
    )
    alice = await world.device("alice@acme.example.com", device_id="dev-alice")
    bob = await world.device("bob@acme.example.com", device_id="dev-bob")
    job = {"title": "fix", "assignee": alice.user_id}
    await alice.push([upsert("jobs", "j1", job)])
    await alice.push([upsert("jobs", "j1", {**job, "title": "fix pump"}, base_version=1)])
    handed = {"title": "fix", "assignee": bob.user_id}
    answer = await world.owner.push([upsert("jobs", "j1", handed, base_version=1)])
    [conflict] = answer.json()["conflicts"]
    body: dict[str, Any] = {"resolution": resolution}
    if resolution == "merge":
        body["data"] = {"title": "fix pump", "assignee": bob.user_id}
    resolved = await resolve(world, conflict["conflict_id"], **body)
    assert resolved.status_code == 200, resolved.text
    seen = await feed(bob, None, lambda cs: bool(cs), wait_s=2.0)
    assert [(c["id"], c["version"], c["data"]["assignee"]) for c in seen[0]] == [
        ("j1", 3, bob.user_id)
    ]


async def test_resolve_unknown_field_values(world: World) -> None:
    _, conflict_id = await pending_conflict(world)
    bad = await resolve(world, conflict_id, resolution="pick_one")
    assert bad.status_code == 422
    assert bad.json()["code"] == "VALIDATION_001"
    unknown = await resolve(world, "no-such-conflict", resolution="accept_server")
    assert unknown.status_code == 404
    assert unknown.json()["code"] == "NOT_FOUND"


async def test_dismiss(world: World) -> None:
    s, conflict_id = await pending_conflict(world)
    answer = await world.harness.client.delete(
        f"{CONFLICTS}/{conflict_id}", headers=world.owner.headers
    )
    assert answer.status_code == 204
    [entry] = (await s.conflicts())["conflicts"]
    assert entry["resolution_result"] == "dismissed"
    assert entry["resolved_at"]
    late = await resolve(world, conflict_id, resolution="accept_client")
    assert late.status_code == 409
    assert late.json()["code"] == "VALIDATION_003"
    assert (await s.state())["data"]["title"] == "from A"
    gone = await world.harness.client.delete(f"{CONFLICTS}/nope", headers=world.owner.headers)
    assert gone.status_code == 404


async def test_conflicts_are_not_visible_to_another_tenant(world: World) -> None:
    _, conflict_id = await pending_conflict(world)
    other = await world.harness.create_tenant("globex")
    headers = await world.harness.owner_headers(other)
    log = await world.harness.client.get(CONFLICTS, headers=headers)
    assert log.json()["total"] == 0
    answer = await resolve(world, conflict_id, headers, resolution="accept_client")
    assert answer.status_code == 404
    gone = await world.harness.client.delete(f"{CONFLICTS}/{conflict_id}", headers=headers)
    assert gone.status_code == 404


async def test_members_cannot_see_or_resolve_conflicts_managers_can(world: World) -> None:
    s, conflict_id = await pending_conflict(world)
    member = s.b  # role member
    listing = await world.harness.client.get(CONFLICTS, headers=member.headers)
    assert listing.status_code == 403
    assert listing.headers["content-type"].startswith(PROBLEM_JSON)
    assert listing.json()["code"] == "AUTH_006"
    refused = await resolve(world, conflict_id, member.headers, resolution="accept_client")
    assert refused.status_code == 403
    assert refused.json()["code"] == "AUTH_006"
    dismissed = await world.harness.client.delete(
        f"{CONFLICTS}/{conflict_id}", headers=member.headers
    )
    assert dismissed.status_code == 403
    assert (await s.conflicts())["conflicts"][0]["resolution_result"] == "pending"

    manager = await world.device("boss@acme.example.com", role="manager")
    listing = await world.harness.client.get(CONFLICTS, headers=manager.headers)
    assert listing.status_code == 200
    assert listing.json()["total"] == 1
    answer = await resolve(world, conflict_id, manager.headers, resolution="accept_client")
    assert answer.status_code == 200, answer.text
    assert (await s.state())["data"]["title"] == "from B"


# Policies


async def test_policy_get_and_put(world: World) -> None:
    await world.collection("tasks")
    client = world.harness.client
    url = f"/api/v1/sync/policies/{world.tenant.id}/tasks"
    member = await world.device("tech@acme.example.com")
    got = await client.get(url, headers=member.headers)
    assert got.status_code == 200
    assert got.json() == {
        "tenant_id": world.tenant.id,
        "domain": "tasks",
        "resolution_policy": "server_wins",
        "auto_resolve": True,
        "notify_on_conflict": False,
    }
    out = await put_policy(world, "field_merge", auto_resolve=False, notify_on_conflict=True)
    assert out == {
        "tenant_id": world.tenant.id,
        "domain": "tasks",
        "resolution_policy": "field_merge",
        "auto_resolve": False,
        "notify_on_conflict": True,
    }
    assert (await client.get(url, headers=member.headers)).json() == out
    collection = await client.get("/api/v1/collections/tasks", headers=world.owner.headers)
    assert collection.json()["conflict_policy"] == "field_merge"

    admin = await world.device("admin@acme.example.com", role="admin")
    answer = await client.put(url, json={"resolution_policy": "manual"}, headers=admin.headers)
    assert answer.status_code == 200
    assert answer.json()["resolution_policy"] == "manual"
    # Fields left out keep their values.
    assert answer.json()["auto_resolve"] is False
    assert answer.json()["notify_on_conflict"] is True

    manager = await world.device("boss@acme.example.com", role="manager")
    for headers in (manager.headers, member.headers):
        refused = await client.put(url, json={"resolution_policy": "client_wins"}, headers=headers)
        assert refused.status_code == 403
        assert refused.json()["code"] == "AUTH_006"
    assert (await client.get(url, headers=member.headers)).json()["resolution_policy"] == "manual"


@pytest.mark.parametrize("alias", ["most_recent_wins", "timestamp", "last_write_wins"])
async def test_policy_aliases_are_normalised(world: World, alias: str) -> None:
    await world.collection("tasks")
    assert (await put_policy(world, alias))["resolution_policy"] == "last_write_wins"
    created = await world.collection("notes", conflict_policy=alias)
    assert created["collection"]["conflict_policy"] == "last_write_wins"


async def test_policy_errors(world: World) -> None:
    await world.collection("tasks")
    client = world.harness.client
    url = f"/api/v1/sync/policies/{world.tenant.id}/tasks"
    for body in (
        {"resolution_policy": "newest"},
        {"resolution_policy": "server_wins", "extra": 1},
        {},
    ):
        answer = await client.put(url, json=body, headers=world.owner.headers)
        assert answer.status_code == 422, body
        assert answer.headers["content-type"].startswith(PROBLEM_JSON)
        assert answer.json()["code"] == "VALIDATION_001"
    got = await client.get(url, headers=world.owner.headers)
    assert got.json()["resolution_policy"] == "server_wins"

    unknown = await client.get(
        f"/api/v1/sync/policies/{world.tenant.id}/nothing", headers=world.owner.headers
    )
    assert unknown.status_code == 404
    other = await world.harness.create_tenant("globex")
    await client.post(
        "/api/v1/collections",
        json={"name": "tasks"},
        headers=await world.harness.owner_headers(other),
    )
    for method in ("GET", "PUT"):
        foreign = await client.request(
            method,
            f"/api/v1/sync/policies/{other.id}/tasks",
            json={"resolution_policy": "client_wins"} if method == "PUT" else None,
            headers=world.owner.headers,
        )
        assert foreign.status_code == 404, method
