"""Durable jobs on real SQLite and PostgreSQL: outbox semantics, retries, leases, cron, runners."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import func, select, update

from homeport.app import build_registry
from homeport.auth.tasks import CLEANUP_KIND
from homeport.kit.clock import utcnow
from homeport.kit.db import Database
from homeport.kit.jobs import JobContext, JobInput, JobRegistry, JobRunner, enqueue
from homeport.models.auth import DeviceSession
from homeport.models.jobs import Job, JobSchedule
from tests.conftest import Harness

EFFECT_KIND = "test.effect"  # rows written by handlers as a database side effect; never run


async def _open(database_url: str) -> AsyncIterator[Database]:
    db = Database(database_url)
    try:
        yield db
    finally:
        await db.dispose()


@pytest.fixture
async def database(database_url: str) -> AsyncIterator[Database]:
    async for db in _open(database_url):
        yield db


@pytest.fixture
async def second_database(database_url: str) -> AsyncIterator[Database]:
    """Another engine on the same database: a second server instance."""
    async for db in _open(database_url):
        yield db


class Recorder:
    """Handlers that record each call in memory (and, for ``effect``, in the database)."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, str, int]] = []  # (job_id, kind, attempt)

    async def record(self, ctx: JobContext) -> None:
        self.calls.append((ctx.job_id, ctx.kind, ctx.attempt))

    async def fail(self, ctx: JobContext) -> None:
        self.calls.append((ctx.job_id, ctx.kind, ctx.attempt))
        raise RuntimeError(f"boom on attempt {ctx.attempt}")

    async def effect(self, ctx: JobContext) -> None:
        """Writes a row in the job's transaction, then succeeds."""
        self.calls.append((ctx.job_id, ctx.kind, ctx.attempt))
        enqueue(
            ctx.session, EFFECT_KIND, {"parent": ctx.job_id}, run_at=utcnow() + timedelta(days=1)
        )

    async def effect_then_fail(self, ctx: JobContext) -> None:
        await self.effect(ctx)
        raise RuntimeError("after writing")

    def registry(self) -> JobRegistry:
        registry = JobRegistry()
        registry.register("test.record", self.record)
        registry.register("test.fail", self.fail)
        registry.register("test.effect_parent", self.effect)
        registry.register("test.effect_then_fail", self.effect_then_fail)
        return registry

    def ids(self) -> list[str]:
        return [job_id for job_id, _, _ in self.calls]


async def _enqueue(database: Database, kind: str, **kwargs: Any) -> str:
    async with database.transaction() as session:
        return enqueue(session, kind, **kwargs)


async def _job(database: Database, job_id: str) -> Job | None:
    async with database.transaction() as session:
        return await session.get(Job, job_id)


async def _effects(database: Database, parent: str | None = None) -> list[Job]:
    async with database.transaction() as session:
        rows = (await session.execute(select(Job).where(Job.kind == EFFECT_KIND))).scalars().all()
    return [row for row in rows if parent is None or row.payload.get("parent") == parent]


async def _make_due(database: Database, job_id: str) -> None:
    async with database.transaction() as session:
        await session.execute(
            update(Job).where(Job.id == job_id).values(run_at=utcnow() - timedelta(seconds=1))
        )


async def _drain(runner: JobRunner) -> int:
    total = 0
    while ran := await runner.run_once():
        total += ran
    return total


# Transactional outbox


async def test_rolled_back_enqueue_never_exists_committed_one_runs_once(
    database: Database,
) -> None:
    recorder = Recorder()
    runner = JobRunner(database, recorder.registry())

    lost = ""

    async def failing_request() -> None:
        nonlocal lost
        async with database.transaction() as session:
            lost = enqueue(session, "test.record", {"n": 1})
            raise RuntimeError("the request failed")

    with pytest.raises(RuntimeError, match="the request failed"):
        await failing_request()
    assert lost

    assert await _job(database, lost) is None
    assert await runner.run_once() == 0
    assert recorder.calls == []

    kept = await _enqueue(database, "test.record", payload={"n": 2})
    assert await runner.run_once() == 1
    assert await runner.run_once() == 0  # done jobs are not claimed again
    assert recorder.calls == [(kept, "test.record", 1)]

    job = await _job(database, kept)
    assert job is not None
    assert job.status == "done"
    assert job.attempts == 1
    assert job.finished_at is not None
    assert job.locked_until is None
    assert job.last_error is None
    assert job.payload == {"n": 2}


async def test_handler_writes_commit_with_done(database: Database) -> None:
    recorder = Recorder()
    runner = JobRunner(database, recorder.registry())
    job_id = await _enqueue(database, "test.effect_parent")

    assert await runner.run_once() == 1
    job = await _job(database, job_id)
    assert job is not None
    assert job.status == "done"
    assert len(await _effects(database, job_id)) == 1


async def test_failing_handler_rolls_back_its_writes(database: Database) -> None:
    recorder = Recorder()
    runner = JobRunner(database, recorder.registry())
    job_id = await _enqueue(database, "test.effect_then_fail", max_attempts=1)

    assert await runner.run_once() == 1
    assert len(recorder.calls) == 1  # the handler did run and write before raising
    assert await _effects(database) == []
    job = await _job(database, job_id)
    assert job is not None
    assert job.status == "failed"
    assert job.last_error == "RuntimeError: after writing"


# Retries and backoff


async def test_failure_backs_off_then_fails_after_max_attempts(database: Database) -> None:
    recorder = Recorder()
    runner = JobRunner(database, recorder.registry(), default_max_attempts=8)
    job_id = await _enqueue(database, "test.fail", max_attempts=3)

    for attempt in (1, 2):
        before = utcnow()
        assert await runner.run_once() == 1
        job = await _job(database, job_id)
        assert job is not None
        assert job.status == "queued"
        assert job.attempts == attempt
        assert job.run_at > before  # backed off into the future
        assert job.run_at > utcnow()
        assert job.locked_until is None
        assert job.finished_at is None
        assert job.last_error == f"RuntimeError: boom on attempt {attempt}"
        assert await runner.run_once() == 0  # not due yet
        await _make_due(database, job_id)

    assert await runner.run_once() == 1
    job = await _job(database, job_id)
    assert job is not None
    assert job.status == "failed"
    assert job.attempts == 3
    assert job.finished_at is not None
    assert job.last_error == "RuntimeError: boom on attempt 3"
    await _make_due(database, job_id)
    assert await runner.run_once() == 0  # a failed job is never claimed again
    assert [attempt for _, _, attempt in recorder.calls] == [1, 2, 3]


async def test_runner_default_max_attempts_applies_when_enqueue_gives_none(
    database: Database,
) -> None:
    recorder = Recorder()
    runner = JobRunner(database, recorder.registry(), default_max_attempts=2)
    job_id = await _enqueue(database, "test.fail")  # max_attempts=None
    stored = await _job(database, job_id)
    assert stored is not None
    assert stored.max_attempts is None

    assert await runner.run_once() == 1
    job = await _job(database, job_id)
    assert job is not None
    assert job.status == "queued"
    assert job.attempts == 1
    await _make_due(database, job_id)

    assert await runner.run_once() == 1
    job = await _job(database, job_id)
    assert job is not None
    assert job.status == "failed"
    assert job.attempts == 2
    assert len(recorder.calls) == 2


async def test_unknown_kind_records_a_failure_instead_of_crashing(database: Database) -> None:
    recorder = Recorder()
    runner = JobRunner(database, recorder.registry(), default_max_attempts=2)
    retried = await _enqueue(database, "test.nobody_handles_this")
    dead = await _enqueue(database, "test.nobody_handles_this", max_attempts=1)
    healthy = await _enqueue(database, "test.record")

    assert await runner.run_once() == 3  # no exception escapes; the other job still runs

    job = await _job(database, retried)
    assert job is not None
    assert job.status == "queued"
    assert job.run_at > utcnow()
    assert job.last_error is not None
    assert job.last_error.startswith("LookupError")
    assert "test.nobody_handles_this" in job.last_error

    job = await _job(database, dead)
    assert job is not None
    assert job.status == "failed"
    assert job.last_error is not None
    assert job.last_error.startswith("LookupError")

    job = await _job(database, healthy)
    assert job is not None
    assert job.status == "done"
    assert recorder.ids() == [healthy]


# Leases


async def test_expired_lease_is_taken_over_and_the_old_owner_cannot_commit(
    database: Database, second_database: Database
) -> None:
    recorder = Recorder()
    runner_a = JobRunner(database, recorder.registry(), worker_id="worker-a")
    runner_b = JobRunner(second_database, recorder.registry(), worker_id="worker-b")
    job_id = await _enqueue(database, "test.effect_parent")

    claimed = await runner_a._claim()
    assert [job.id for job in claimed] == [job_id]
    job = await _job(database, job_id)
    assert job is not None
    assert (job.status, job.locked_by, job.attempts) == ("running", "worker-a", 1)
    assert job.locked_until is not None
    assert job.locked_until > utcnow()

    assert await runner_b.run_once() == 0  # a live lease is not taken

    async with database.transaction() as session:  # worker-a stalls past its lease
        await session.execute(
            update(Job).where(Job.id == job_id).values(locked_until=utcnow() - timedelta(seconds=1))
        )

    assert await runner_b.run_once() == 1
    job = await _job(database, job_id)
    assert job is not None
    assert (job.status, job.locked_by, job.attempts) == ("done", "worker-b", 2)

    await runner_a._run(claimed[0])  # worker-a wakes up and finishes: its commit must lose

    assert len(recorder.calls) == 2  # both handlers ran ...
    effects = await _effects(database, job_id)
    assert len(effects) == 1  # ... but only worker-b's transaction committed
    job = await _job(database, job_id)
    assert job is not None
    assert (job.status, job.locked_by, job.attempts) == ("done", "worker-b", 2)
    assert job.last_error is None


async def test_job_whose_worker_died_on_its_last_attempt_is_given_up(
    database: Database, second_database: Database
) -> None:
    recorder = Recorder()
    runner_a = JobRunner(database, recorder.registry(), worker_id="worker-a")
    runner_b = JobRunner(second_database, recorder.registry(), worker_id="worker-b")
    job_id = await _enqueue(database, "test.effect_parent", max_attempts=1)

    assert [job.id for job in await runner_a._claim()] == [job_id]  # worker-a dies running it
    async with database.transaction() as session:
        await session.execute(
            update(Job).where(Job.id == job_id).values(locked_until=utcnow() - timedelta(seconds=1))
        )

    assert await runner_b.run_once() == 0  # not reclaimed: it had no attempt left
    job = await _job(database, job_id)
    assert job is not None
    assert (job.status, job.attempts) == ("failed", 1)
    assert job.last_error is not None
    assert "lease expired" in job.last_error
    assert recorder.calls == []


async def test_expired_lease_failure_of_old_owner_does_not_requeue(
    database: Database, second_database: Database
) -> None:
    recorder = Recorder()
    runner_a = JobRunner(database, recorder.registry(), worker_id="worker-a")
    runner_b = JobRunner(second_database, recorder.registry(), worker_id="worker-b")
    job_id = await _enqueue(database, "test.fail", max_attempts=5)

    claimed = await runner_a._claim()
    async with database.transaction() as session:
        await session.execute(
            update(Job).where(Job.id == job_id).values(locked_until=utcnow() - timedelta(seconds=1))
        )
    # worker-b takes over and the job is now running under its lease ...
    [taken] = await runner_b._claim()
    assert taken.attempts == 2
    # ... when worker-a's handler fails: its failure must not touch worker-b's row.
    await runner_a._run(claimed[0])
    job = await _job(database, job_id)
    assert job is not None
    assert (job.status, job.locked_by) == ("running", "worker-b")
    assert job.last_error is None


# Cron schedules


async def _due_schedule(database: Database, name: str = "tick", cron: str = "* * * * *") -> None:
    async with database.transaction() as session:
        row = await session.get(JobSchedule, name)
        past = utcnow() - timedelta(minutes=5)
        if row is None:
            session.add(JobSchedule(name=name, kind="test.record", cron=cron, next_run_at=past))
        else:
            row.next_run_at = past


async def _count_jobs(database: Database, kind: str) -> int:
    async with database.transaction() as session:
        return int(
            (
                await session.execute(select(func.count()).select_from(Job).where(Job.kind == kind))
            ).scalar_one()
        )


async def test_due_schedule_enqueued_once_by_two_runners_in_turn(
    database: Database, second_database: Database
) -> None:
    recorder = Recorder()
    registry = recorder.registry()
    registry.schedule("tick", "test.record", "* * * * *")
    runner_a = JobRunner(database, registry)
    runner_b = JobRunner(second_database, registry)
    await runner_a.sync_schedules()
    await runner_b.sync_schedules()  # idempotent
    async with database.transaction() as session:
        assert len((await session.execute(select(JobSchedule))).scalars().all()) == 1
    assert await runner_a.enqueue_due_schedules() == 0  # synced to the next minute: not due

    await _due_schedule(database)
    assert await runner_a.enqueue_due_schedules() == 1
    assert await runner_b.enqueue_due_schedules() == 0
    assert await runner_a.enqueue_due_schedules() == 0
    assert await _count_jobs(database, "test.record") == 1

    async with database.transaction() as session:
        schedule = await session.get(JobSchedule, "tick")
        job = (await session.execute(select(Job).where(Job.kind == "test.record"))).scalar_one()
    assert schedule is not None
    assert schedule.next_run_at > utcnow()
    assert schedule.last_enqueued_at is not None
    assert job.payload == {"schedule": "tick"}

    assert await runner_b.run_once() == 1
    assert recorder.ids() == [job.id]


async def test_due_schedule_enqueued_once_by_concurrent_runners(
    database: Database, second_database: Database
) -> None:
    # Yearly: each runner reads the clock when it starts, and with a schedule every minute a
    # runner starting just past a minute boundary would rightly find it due again.
    yearly = "0 0 1 1 *"
    registry = Recorder().registry()
    registry.schedule("tick", "test.record", yearly)
    runners = [
        JobRunner(database, registry),
        JobRunner(second_database, registry),
        JobRunner(database, registry),
    ]
    for round_number in range(1, 6):
        await _due_schedule(database, cron=yearly)
        results = await asyncio.gather(*(runner.enqueue_due_schedules() for runner in runners))
        assert sorted(results) == [0, 0, 1]
        assert await _count_jobs(database, "test.record") == round_number
        async with database.transaction() as session:
            schedule = await session.get(JobSchedule, "tick")
        assert schedule is not None
        assert schedule.next_run_at > utcnow()


# Two instances, many jobs


async def _run_two_instances(
    database: Database, second_database: Database, *, yield_in_handler: bool
) -> tuple[Counter[str], Counter[str], set[str]]:
    ran: Counter[str] = Counter()
    by_worker: Counter[str] = Counter()

    def registry_for(worker: str) -> JobRegistry:
        async def handler(ctx: JobContext) -> None:
            if yield_in_handler:
                await asyncio.sleep(0)  # let the other instance claim meanwhile
            ran[ctx.job_id] += 1
            by_worker[worker] += 1

        registry = JobRegistry()
        registry.register("test.many", handler)
        return registry

    async with database.transaction() as session:
        ids = {enqueue(session, "test.many", {"i": i}) for i in range(50)}

    runners = [
        JobRunner(database, registry_for("a"), worker_id="a", batch_size=3),
        JobRunner(second_database, registry_for("b"), worker_id="b", batch_size=3),
    ]
    await asyncio.wait_for(asyncio.gather(*(_drain(runner) for runner in runners)), timeout=15)
    async with database.transaction() as session:
        statuses = Counter(
            (await session.execute(select(Job.status).where(Job.kind == "test.many"))).scalars()
        )
    assert statuses == {"done": 50}
    return ran, by_worker, ids


async def test_two_instances_run_every_job_exactly_once(
    database: Database, second_database: Database
) -> None:
    ran, by_worker, ids = await _run_two_instances(
        database, second_database, yield_in_handler=False
    )
    assert set(ran) == ids
    assert set(ran.values()) == {1}
    assert sum(by_worker.values()) == 50


@pytest.mark.postgres_only
async def test_two_instances_interleave_with_skip_locked(
    database: Database, second_database: Database
) -> None:
    ran, by_worker, ids = await _run_two_instances(database, second_database, yield_in_handler=True)
    assert set(ran) == ids
    assert set(ran.values()) == {1}
    assert by_worker["a"] > 0
    assert by_worker["b"] > 0


@pytest.mark.postgres_only
async def test_claim_skips_rows_locked_by_another_transaction(
    database: Database, second_database: Database
) -> None:
    """While one instance holds a row lock mid-claim, another claims past it, not on it."""
    registry = Recorder().registry()
    first = await _enqueue(database, "test.record", run_at=utcnow() - timedelta(seconds=10))
    second = await _enqueue(database, "test.record")
    runner_b = JobRunner(second_database, registry, worker_id="b")

    async with database.transaction() as session:
        locked = (
            await session.execute(select(Job.id).where(Job.id == first).with_for_update())
        ).scalar_one()
        assert locked == first
        claimed = await asyncio.wait_for(runner_b._claim(), timeout=5)
        assert [job.id for job in claimed] == [second]


# The auth cleanup job


async def test_expired_session_cleanup_job(harness: Harness) -> None:
    tenant = await harness.create_tenant("acme")
    logins = {
        name: await harness.login(tenant.owner_email, tenant.owner_password, device_id=name)
        for name in ("live", "expired_long_ago", "revoked_long_ago", "expired_recently")
    }
    sessions = {name: tokens["session_id"] for name, tokens in logins.items()}
    now = utcnow()
    database: Database = harness.state.database
    async with database.transaction() as session:
        changes: dict[str, dict[str, Any]] = {
            "expired_long_ago": {"expires_at": now - timedelta(days=2)},
            "revoked_long_ago": {"revoked_at": now - timedelta(days=2), "revoked_reason": "logout"},
            "expired_recently": {"expires_at": now - timedelta(hours=1)},
        }
        for name, values in changes.items():
            await session.execute(
                update(DeviceSession).where(DeviceSession.id == sessions[name]).values(**values)
            )

    registry = build_registry(harness.settings)
    assert CLEANUP_KIND in registry.handlers
    runner = JobRunner(database, registry)
    job_id = await _enqueue(database, CLEANUP_KIND)
    assert await runner.run_once() == 1

    job = await _job(database, job_id)
    assert job is not None
    assert job.status == "done", job.last_error
    async with database.transaction() as session:
        remaining = set((await session.execute(select(DeviceSession.id))).scalars())
    assert remaining == {sessions["live"], sessions["expired_recently"]}

    me = await harness.client.get(
        "/api/v1/auth/me",
        headers={"Authorization": f"Bearer {logins['live']['access_token']}"},
    )
    assert me.status_code == 200  # the live session still works


# The background loop


async def test_started_runner_wakes_on_notify(database: Database) -> None:
    done = asyncio.Event()

    async def handler(ctx: JobContext) -> None:
        done.set()

    registry = JobRegistry()
    registry.register("test.wake", handler)
    runner = JobRunner(database, registry, poll_interval=30)
    await runner.start()
    try:
        await asyncio.sleep(0.2)  # the loop found nothing and is now waiting on its poll
        assert not done.is_set()
        job_id = await _enqueue(database, "test.wake")
        started = time.monotonic()
        runner.notify()
        await asyncio.wait_for(done.wait(), timeout=5)
        assert time.monotonic() - started < 5
        for _ in range(50):  # the done commit follows the handler
            job = await _job(database, job_id)
            if job is not None and job.status == "done":
                break
            await asyncio.sleep(0.05)
        assert job is not None
        assert job.status == "done"
    finally:
        await asyncio.wait_for(runner.stop(), timeout=5)
    assert runner._task is None


async def test_two_instances_sync_schedules_at_the_same_time(
    database: Database, second_database: Database
) -> None:
    registry = Recorder().registry()
    registry.schedule("tick", "test.record", "* * * * *")
    registry.schedule("tock", "test.record", "0 * * * *")
    runners = [JobRunner(database, registry), JobRunner(second_database, registry)]
    await asyncio.gather(*(runner.sync_schedules() for runner in runners))
    async with database.transaction() as session:
        names = sorted((await session.execute(select(JobSchedule.name))).scalars())
    assert names == ["tick", "tock"]


async def test_a_preparation_step_runs_before_the_transaction(database: Database) -> None:
    """Its result reaches the handler; while it runs no transaction is open (SQLite's single
    writer stays free), and when it fails the job is retried like a failing handler."""
    seen: list[Any] = []
    writer_free_during_prepare: list[bool] = []
    failures = {"left": 1}

    async def prepare(job: JobInput) -> dict[str, Any]:
        writer = database.unit_of_work_lock()
        writer_free_during_prepare.append(not getattr(writer, "locked", lambda: False)())
        if failures["left"]:
            failures["left"] -= 1
            raise RuntimeError("prepare failed once")
        return {"doubled": job.payload["n"] * 2}

    async def handle(ctx: JobContext) -> None:
        seen.append(ctx.prepared)

    registry = JobRegistry()
    registry.register("test.prepared", handle, prepare=prepare)
    runner = JobRunner(database, registry)
    job_id = await _enqueue(database, "test.prepared", payload={"n": 21})
    assert await runner.run_once() == 1
    failed = await _job(database, job_id)
    assert failed is not None
    assert failed.status == "queued"
    assert "prepare failed once" in (failed.last_error or "")
    assert seen == []
    await _make_due(database, job_id)
    assert await runner.run_once() == 1
    done = await _job(database, job_id)
    assert done is not None
    assert done.status == "done"
    assert seen == [{"doubled": 42}]
    assert writer_free_during_prepare == [True, True]
