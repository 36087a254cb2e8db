"""The change feed is gapless: a reader never passes a change that commits later with an
earlier position, sees every change exactly once, and its cursors never go back.

PostgreSQL: writers hold transactions open (a second ``Database`` on the same URL, through the
real push path) while later transactions commit; the reader pages the feed over HTTP with tiny
pages during and after. SQLite: one writer, positions are commit order; a transaction held open
blocks readers instead of being skipped.

PostgreSQL serves a change once no older transaction in the whole cluster can still commit, so
another session's transaction (a parallel test run) may delay a change: "eventually" below
polls until the change is served, with a deadline. It never waits to *not* see something.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import pytest

from homeport.auth.principal import Principal, Role
from homeport.kit.db import Database
from homeport.sync.cursor import START, FeedPoint, decode_cursor
from homeport.sync.service import SyncService
from tests.sync.conftest import Device, World, upsert

DEADLINE_SECONDS = 60


class Reader:
    """A device paging the feed with small pages, recording every change and cursor."""

    def __init__(self, world: World, device: Device, limit: int = 1) -> None:
        self.world = world
        self.device = device
        self.limit = limit
        self.cursor: str | None = None
        self.seen: list[tuple[str, int]] = []  # (id, version) in the order served
        self.cursors: list[tuple[str, int]] = []  # (cursor, len(seen) when it was answered)

    def point(self, cursor: str | None) -> FeedPoint:
        if cursor is None:
            return START
        secret = self.world.harness.state.secret_key
        return decode_cursor(secret, self.world.tenant.id, cursor)

    async def page_all(self) -> None:
        """Page until the server says there is no more (what an SDK pull does)."""
        while True:
            answer = await self.device.pull(self.cursor, limit=self.limit)
            assert answer.status_code == 200, answer.text
            body = answer.json()
            assert len(body["changes"]) <= self.limit
            self.seen.extend((c["id"], c["version"]) for c in body["changes"])
            assert self.point(body["cursor"]) >= self.point(self.cursor), "cursor went back"
            if body["changes"]:
                assert self.point(body["cursor"]) > self.point(self.cursor)
            self.cursor = body["cursor"]
            self.cursors.append((self.cursor, len(self.seen)))
            if not body["has_more"]:
                return

    async def eventually(self, ids: set[str]) -> None:
        """Page until every id in ``ids`` was served (PostgreSQL may delay, never drop)."""
        await self.until(lambda: ids <= set(self.ids()), f"never served: {ids}")

    async def until(self, done: Callable[[], bool], message: str) -> None:
        deadline = time.monotonic() + DEADLINE_SECONDS
        while True:
            await self.page_all()
            if done():
                return
            assert time.monotonic() < deadline, message
            await asyncio.sleep(0.01)

    def ids(self) -> list[str]:
        return [record_id for record_id, _ in self.seen]

    async def check_every_cursor_resumes(self) -> None:
        """Pulling again from any cursor answered earlier yields exactly what followed it."""
        for cursor, served_before in self.cursors:
            again = Reader(self.world, self.device, limit=2)
            again.cursor = cursor
            await again.page_all()
            assert again.seen == self.seen[served_before:], (
                f"resuming from an earlier cursor lost or repeated changes: "
                f"{again.seen} != {self.seen[served_before:]}"
            )


def principal_of(world: World, device: Device) -> Principal:
    return Principal(
        kind="user",
        tenant_id=world.tenant.id,
        user_id=device.user_id,
        role=Role.MEMBER,
        device_id=device.device_id,
    )


@asynccontextmanager
async def held_push(
    database_url: str, world: World, device: Device, changes: list[dict[str, Any]]
) -> AsyncIterator[dict[str, Any]]:
    """A push through the real push path in a transaction of its own, committed on exit."""
    database = Database(database_url)
    try:
        async with database.transaction() as session:
            service = SyncService(session, world.harness.settings, world.harness.state.secret_key)
            answer = await service.push(
                principal_of(world, device),
                {"idempotency_key": uuid.uuid4().hex, "changes": changes},
            )
            assert [r["status"] for r in answer.body["results"]] == ["applied"] * len(changes)
            yield answer.body
    finally:
        await database.dispose()


def titled(prefix: str, count: int) -> list[dict[str, Any]]:
    return [upsert("tasks", f"{prefix}{i}", {"title": f"{prefix} {i}"}) for i in range(count)]


async def pushed(device: Device, changes: list[dict[str, Any]]) -> dict[str, Any]:
    answer = await device.push(changes)
    assert answer.status_code == 200, answer.text
    body: dict[str, Any] = answer.json()
    assert [r["status"] for r in body["results"]] == ["applied"] * len(changes)
    return body


# PostgreSQL: out-of-order commits


@pytest.mark.postgres_only
async def test_reader_never_passes_a_transaction_that_commits_late(
    world: World, database_url: str
) -> None:
    await world.collection("tasks")
    writer = await world.device("writer@acme.example.com")
    late = await world.device("late@acme.example.com")
    reader = Reader(world, await world.device("reader@acme.example.com"))
    await pushed(writer, titled("z", 2))  # history before the race
    await reader.eventually({"z0", "z1"})

    async with held_push(database_url, world, late, titled("a", 3)) as first:
        held_at = reader.point(first["cursor"])  # T1: lower xid and positions, still open
        # T2 starts after T1 and commits first: higher xid, higher positions.
        second = await pushed(writer, titled("b", 3))
        assert reader.point(second["cursor"]) > held_at
        for _round in range(3):
            await reader.page_all()
            assert not {"a0", "a1", "a2", "b0", "b1", "b2"} & set(reader.ids()), (
                "the reader was served changes at or after a transaction still open"
            )
            assert reader.point(reader.cursor) < FeedPoint(held_at.xid, 0), (
                f"cursor {reader.point(reader.cursor)} passed the open transaction {held_at}"
            )
    # T1 committed last: everything arrives, exactly once, T1's changes first.
    await reader.eventually({"a0", "a1", "a2", "b0", "b1", "b2"})
    assert reader.ids() == ["z0", "z1", "a0", "a1", "a2", "b0", "b1", "b2"]
    assert len(set(reader.ids())) == len(reader.ids())
    await reader.check_every_cursor_resumes()


@pytest.mark.postgres_only
async def test_horizon_advances_only_past_committed_transactions(
    world: World, database_url: str
) -> None:
    """T1 open, T2 commits, T3 open; T1 commits: T1 and T2 are served, T3 is not (yet)."""
    await world.collection("tasks")
    writer = await world.device("writer@acme.example.com")
    one = await world.device("one@acme.example.com")
    three = await world.device("three@acme.example.com")
    reader = Reader(world, await world.device("reader@acme.example.com"), limit=2)

    t1 = held_push(database_url, world, one, titled("a", 2))
    first = await t1.__aenter__()
    try:
        await pushed(writer, titled("b", 2))
        async with held_push(database_url, world, three, titled("c", 2)) as third:
            await reader.page_all()
            assert reader.ids() == []
            await t1.__aexit__(None, None, None)
            t1 = None
            await reader.eventually({"a0", "a1", "b0", "b1"})
            assert reader.ids() == ["a0", "a1", "b0", "b1"]
            assert reader.point(reader.cursor) < reader.point(third["cursor"])
            for _round in range(3):
                await reader.page_all()
                assert not {"c0", "c1"} & set(reader.ids()), "served an open transaction"
        await reader.eventually({"c0", "c1"})
    finally:
        if t1 is not None:
            await t1.__aexit__(None, None, None)
    assert reader.point(first["cursor"]) < reader.point(third["cursor"])
    assert reader.ids() == ["a0", "a1", "b0", "b1", "c0", "c1"]
    await reader.check_every_cursor_resumes()


@pytest.mark.postgres_only
async def test_many_interleaved_writers_every_change_exactly_once(
    world: World, database_url: str
) -> None:
    """Writers open in one order and commit in a scrambled one while the reader keeps paging;
    rewritten records come back in their latest version only."""
    await world.collection("tasks")
    devices = [await world.device(f"w{i}@acme.example.com") for i in range(4)]
    reader = Reader(world, await world.device("reader@acme.example.com"), limit=1)
    # Each writer touches its own records and one shared record ("shared").
    gates = [asyncio.Event() for _ in devices]
    opened = [asyncio.Event() for _ in devices]
    answers: list[dict[str, Any]] = [{} for _ in devices]

    async def writer(index: int) -> None:
        changes = titled(f"w{index}-", 2)
        async with held_push(database_url, world, devices[index], changes) as body:
            answers[index] = body
            opened[index].set()
            await gates[index].wait()

    tasks = []
    for index in range(len(devices)):
        tasks.append(asyncio.ensure_future(writer(index)))
        await opened[index].wait()
    for index in (2, 0, 3, 1):  # commit order unrelated to xid order
        await reader.page_all()
        open_points = [
            reader.point(answers[i]["cursor"]) for i in range(len(devices)) if not gates[i].is_set()
        ]
        lowest_open = min(open_points)
        assert reader.point(reader.cursor) < FeedPoint(lowest_open.xid, 0)
        gates[index].set()
        await tasks[index]
    expected = {f"w{i}-{j}" for i in range(len(devices)) for j in range(2)}
    await reader.eventually(expected)
    assert sorted(reader.ids()) == sorted(expected)
    # Feed order is xid order: writer 0 opened first.
    assert reader.ids() == [f"w{i}-{j}" for i in range(len(devices)) for j in range(2)]
    await reader.check_every_cursor_resumes()


# SQLite: one writer, positions in commit order


async def test_sequential_writers_positions_are_commit_order(world: World) -> None:
    await world.collection("tasks")
    first = await world.device("first@acme.example.com")
    second = await world.device("second@acme.example.com")
    reader = Reader(world, await world.device("reader@acme.example.com"), limit=1)
    committed: list[FeedPoint] = []
    for round_number in range(3):
        for device, name in ((second, "s"), (first, "f")):
            body = await pushed(device, titled(f"{name}{round_number}-", 2))
            committed.append(reader.point(body["cursor"]))
        await reader.page_all()
    assert committed == sorted(committed), "feed points are not in commit order"
    assert len(set(committed)) == len(committed)
    expected = [f"{n}{r}-{j}" for r in range(3) for n in ("s", "f") for j in range(2)]
    await reader.eventually(set(expected))
    assert reader.ids() == expected
    # A rewrite moves the record to the end of the feed, in its latest version only.
    changed = await first.push(
        [upsert("tasks", "s0-0", {"title": "again"}, base_version=1)], key="again"
    )
    assert changed.json()["results"][0]["status"] == "applied"
    await reader.until(lambda: ("s0-0", 2) in reader.seen, "the rewrite was never served")
    assert reader.seen[-1] == ("s0-0", 2)
    assert reader.seen[-1] == ("s0-0", 2)
    await reader.check_every_cursor_resumes()
    fresh = Reader(world, reader.device, limit=3)
    await fresh.page_all()
    assert [i for i, _ in fresh.seen] == [*expected[1:], "s0-0"]


async def test_open_write_transaction_is_never_read_partially(world: World) -> None:
    """SQLite: a transaction holding the writer lock blocks the reader; it is never skipped.
    PostgreSQL: the same write, held open, is simply not served yet."""
    await world.collection("tasks")
    writer = await world.device("writer@acme.example.com")
    reader = Reader(world, await world.device("reader@acme.example.com"), limit=1)
    await pushed(writer, titled("z", 1))
    await reader.eventually({"z0"})
    database = world.harness.state.database
    release = asyncio.Event()
    written = asyncio.Event()

    async def held() -> None:
        async with database.transaction() as session:
            service = SyncService(session, world.harness.settings, world.harness.state.secret_key)
            await service.push(
                principal_of(world, writer),
                {"idempotency_key": "held", "changes": titled("a", 2)},
            )
            written.set()
            await release.wait()

    task = asyncio.ensure_future(held())
    await written.wait()
    pull = asyncio.ensure_future(reader.page_all())
    for _ in range(50):  # let the reader run as far as it can
        await asyncio.sleep(0)
    if database.dialect == "sqlite":
        assert not pull.done(), "a reader ran while the single writer held its transaction"
    else:
        await pull
        assert "a0" not in reader.ids()
    release.set()
    await task
    await pull
    await reader.eventually({"a0", "a1"})
    assert reader.ids() == ["z0", "a0", "a1"]
    await reader.check_every_cursor_resumes()


async def test_stale_cursor_never_loses_later_changes(world: World) -> None:
    """Any cursor handed out earlier, used again much later, yields every later change."""
    await world.collection("tasks")
    writer = await world.device("writer@acme.example.com")
    reader = Reader(world, await world.device("reader@acme.example.com"), limit=2)
    kept: list[str | None] = [None]
    for round_number in range(4):
        await pushed(writer, titled(f"r{round_number}-", 3))
        await reader.eventually({f"r{round_number}-{j}" for j in range(3)})
        kept.append(reader.cursor)
    final = set(reader.ids())
    for index, cursor in enumerate(kept):
        later = Reader(world, reader.device, limit=1)
        later.cursor = cursor
        await later.page_all()
        assert set(later.ids()) == {f"r{r}-{j}" for r in range(index, 4) for j in range(3)}
        assert set(later.ids()) <= final
