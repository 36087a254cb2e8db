"""Durable jobs: enqueued in the caller's transaction, run after commit, retried with backoff.

- ``enqueue`` adds a row to the caller's session, so the job exists iff the write that caused it
  committed (transactional outbox).
- A :class:`JobRunner` per server instance claims due jobs. On PostgreSQL the claim uses
  ``FOR UPDATE SKIP LOCKED``; on SQLite ``BEGIN IMMEDIATE`` already serialises writers.
- A job's handler and the row's move to ``done`` commit in one transaction, guarded by the lease
  owner, so a job whose lease was taken over can never commit twice.
- Cron schedules: each instance tries to advance ``next_run_at`` with a compare-and-set; the one
  that wins enqueues the run.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from croniter import croniter
from sqlalchemy import func, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from homeport.kit.clock import utcnow
from homeport.kit.db import Database
from homeport.kit.errors import ErrorCode, ProblemError
from homeport.kit.ids import new_id
from homeport.kit.logging import get_logger
from homeport.models.jobs import Job, JobSchedule

log = get_logger("homeport.jobs")

ENQUEUED_FLAG = "homeport_jobs_enqueued"


@dataclass(frozen=True)
class JobContext:
    session: AsyncSession
    job_id: str
    kind: str
    payload: dict[str, Any]
    tenant_id: str | None
    attempt: int
    # What the kind's preparation step returned (None without one).
    prepared: Any = None


@dataclass(frozen=True)
class JobInput:
    """A job as its preparation step sees it: no session, no transaction open."""

    job_id: str
    kind: str
    payload: dict[str, Any]
    tenant_id: str | None
    attempt: int


JobHandler = Callable[[JobContext], Awaitable[None]]
# Slow work without database writes (image resizing, network calls) runs here, before the
# handler's transaction, so it never holds SQLite's single writer.
JobPreparer = Callable[[JobInput], Awaitable[Any]]


@dataclass(frozen=True)
class CronSchedule:
    name: str
    kind: str
    cron: str


@dataclass
class JobRegistry:
    handlers: dict[str, JobHandler] = field(default_factory=dict)
    schedules: dict[str, CronSchedule] = field(default_factory=dict)
    preparers: dict[str, JobPreparer] = field(default_factory=dict)

    def register(
        self, kind: str, handler: JobHandler, *, prepare: JobPreparer | None = None
    ) -> None:
        if kind in self.handlers:
            raise ValueError(f"job kind {kind!r} registered twice")
        self.handlers[kind] = handler
        if prepare is not None:
            self.preparers[kind] = prepare

    def schedule(self, name: str, kind: str, cron: str) -> None:
        if not croniter.is_valid(cron):
            raise ValueError(f"invalid cron expression for {name!r}: {cron!r}")
        self.schedules[name] = CronSchedule(name=name, kind=kind, cron=cron)


def enqueue(
    session: AsyncSession,
    kind: str,
    payload: dict[str, Any] | None = None,
    *,
    tenant_id: str | None = None,
    run_at: datetime | None = None,
    max_attempts: int | None = None,
    dedupe_key: str | None = None,
) -> str:
    """Add a job to the caller's transaction. It runs only if that transaction commits.

    ``max_attempts`` left ``None`` means the runner's default (``HOMEPORT_JOBS_MAX_ATTEMPTS``).
    """
    now = utcnow()
    job_id = new_id()
    session.add(
        Job(
            id=job_id,
            kind=kind,
            payload=payload or {},
            tenant_id=tenant_id,
            status="queued",
            attempts=0,
            max_attempts=max_attempts,
            run_at=run_at or now,
            dedupe_key=dedupe_key,
            created_at=now,
        )
    )
    session.info[ENQUEUED_FLAG] = True
    return job_id


def next_cron_time(cron: str, after: datetime) -> datetime:
    result: datetime = croniter(cron, after).get_next(datetime)
    return result


def backoff_seconds(attempt: int, base: float = 2.0, cap: float = 3600.0) -> float:
    """Exponential backoff with full jitter: attempt 1 -> up to 2 s, 2 -> 4 s, ..."""
    return random.uniform(0.5, 1.0) * min(cap, base**attempt)


@dataclass(frozen=True)
class _Claimed:
    id: str
    kind: str
    payload: dict[str, Any]
    tenant_id: str | None
    attempts: int
    max_attempts: int | None


class JobRunner:
    def __init__(
        self,
        database: Database,
        registry: JobRegistry,
        *,
        worker_id: str | None = None,
        poll_interval: float = 1.0,
        lease_seconds: int = 300,
        batch_size: int = 10,
        default_max_attempts: int = 8,
    ) -> None:
        self.database = database
        self.registry = registry
        self.worker_id = worker_id or f"worker-{new_id()}"
        self.poll_interval = poll_interval
        self.lease_seconds = lease_seconds
        self.batch_size = batch_size
        self.default_max_attempts = default_max_attempts
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._stopping = False

    def notify(self) -> None:
        """Called after a commit that enqueued jobs: run them now instead of at the next poll."""
        self._wake.set()

    async def start(self) -> None:
        await self.sync_schedules()
        self._stopping = False
        self._task = asyncio.create_task(self._loop(), name=f"jobs:{self.worker_id}")

    async def stop(self) -> None:
        self._stopping = True
        self._wake.set()
        if self._task is not None:
            await self._task
            self._task = None

    async def sync_schedules(self) -> None:
        """Create schedule rows for registered cron entries; keep a changed expression."""
        try:
            await self._sync_schedules()
        except ProblemError as exc:
            # Another instance starting at the same time inserted the same rows first (the
            # unit of work reports the unique violation as VALIDATION_002); they are committed
            # and visible now, so a second pass only reconciles them.
            if exc.code is not ErrorCode.VALIDATION_002:
                raise
            await self._sync_schedules()

    async def _sync_schedules(self) -> None:
        now = utcnow()
        async with self.database.transaction() as session:
            existing = {
                row.name: row
                for row in (await session.execute(select(JobSchedule))).scalars().all()
            }
            for schedule in self.registry.schedules.values():
                row = existing.get(schedule.name)
                if row is None:
                    session.add(
                        JobSchedule(
                            name=schedule.name,
                            kind=schedule.kind,
                            cron=schedule.cron,
                            next_run_at=next_cron_time(schedule.cron, now),
                        )
                    )
                elif row.cron != schedule.cron or row.kind != schedule.kind:
                    row.cron = schedule.cron
                    row.kind = schedule.kind
                    row.next_run_at = next_cron_time(schedule.cron, now)

    async def _loop(self) -> None:
        while not self._stopping:
            try:
                await self.enqueue_due_schedules()
                ran = await self.run_once()
            except Exception:  # a broken database must not kill the worker loop
                log.exception("jobs_loop_error", worker=self.worker_id)
                ran = 0
            if ran == 0 and not self._stopping:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), timeout=self.poll_interval)
                self._wake.clear()

    async def enqueue_due_schedules(self) -> int:
        now = utcnow()
        enqueued = 0
        async with self.database.transaction() as session:
            due = (
                (await session.execute(select(JobSchedule).where(JobSchedule.next_run_at <= now)))
                .scalars()
                .all()
            )
            for schedule in due:
                advanced = await session.execute(
                    update(JobSchedule)
                    .where(
                        JobSchedule.name == schedule.name,
                        JobSchedule.next_run_at == schedule.next_run_at,
                    )
                    .values(next_run_at=next_cron_time(schedule.cron, now), last_enqueued_at=now)
                    .execution_options(synchronize_session=False)
                )
                if advanced.rowcount == 1:  # type: ignore[attr-defined]
                    enqueue(session, schedule.kind, {"schedule": schedule.name})
                    enqueued += 1
        return enqueued

    async def _claim(self) -> list[_Claimed]:
        now = utcnow()
        lease = now + timedelta(seconds=self.lease_seconds)
        async with self.database.transaction() as session:
            # A lease that ran out on the last allowed attempt means the worker died running it
            # (a job that crashes its process): give it up instead of reclaiming it forever.
            await session.execute(
                update(Job)
                .where(
                    Job.status == "running",
                    Job.locked_until < now,
                    Job.attempts >= func.coalesce(Job.max_attempts, self.default_max_attempts),
                )
                .values(
                    status="failed",
                    finished_at=now,
                    locked_until=None,
                    last_error="lease expired on the last attempt (the worker stopped)",
                )
                .execution_options(synchronize_session=False)
            )
            due_ids = (
                select(Job.id)
                .where(
                    or_(
                        (Job.status == "queued") & (Job.run_at <= now),
                        (Job.status == "running") & (Job.locked_until < now),
                    )
                )
                .order_by(Job.run_at)
                .limit(self.batch_size)
                .with_for_update(skip_locked=True)
            )
            ids = list((await session.execute(due_ids)).scalars().all())
            if not ids:
                return []
            await session.execute(
                update(Job)
                .where(Job.id.in_(ids))
                .values(
                    status="running",
                    attempts=Job.attempts + 1,
                    locked_by=self.worker_id,
                    locked_until=lease,
                )
                .execution_options(synchronize_session=False)
            )
            rows = (
                await session.execute(
                    select(
                        Job.id,
                        Job.kind,
                        Job.payload,
                        Job.tenant_id,
                        Job.attempts,
                        Job.max_attempts,
                    ).where(Job.id.in_(ids))
                )
            ).all()
        return [_Claimed(*row) for row in rows]

    async def run_once(self) -> int:
        """Claim and run one batch of due jobs; returns how many were claimed."""
        claimed = await self._claim()
        for job in claimed:
            await self._run(job)
        return len(claimed)

    async def _run(self, job: _Claimed) -> None:
        handler = self.registry.handlers.get(job.kind)
        try:
            if handler is None:
                raise LookupError(f"no handler registered for job kind {job.kind!r}")
            prepare = self.registry.preparers.get(job.kind)
            prepared = None
            if prepare is not None:
                prepared = await prepare(
                    JobInput(job.id, job.kind, job.payload, job.tenant_id, job.attempts)
                )
            async with self.database.transaction() as session:
                await handler(
                    JobContext(
                        session=session,
                        job_id=job.id,
                        kind=job.kind,
                        payload=job.payload,
                        tenant_id=job.tenant_id,
                        attempt=job.attempts,
                        prepared=prepared,
                    )
                )
                finished = await session.execute(
                    update(Job)
                    .where(Job.id == job.id, Job.locked_by == self.worker_id)
                    .values(status="done", finished_at=utcnow(), locked_until=None)
                    .execution_options(synchronize_session=False)
                )
                if finished.rowcount != 1:  # type: ignore[attr-defined]
                    raise _LeaseLost(job.id)
        except _LeaseLost:
            log.warning("job_lease_lost", job_id=job.id, kind=job.kind)
        except Exception as exc:
            await self._record_failure(job, exc)
        else:
            log.info("job_done", job_id=job.id, kind=job.kind, attempt=job.attempts)

    async def _record_failure(self, job: _Claimed, exc: Exception) -> None:
        dead = job.attempts >= (job.max_attempts or self.default_max_attempts)
        error = f"{type(exc).__name__}: {exc}"[:2000]
        values: dict[str, Any] = {"last_error": error, "locked_until": None}
        if dead:
            values.update(status="failed", finished_at=utcnow())
        else:
            values.update(
                status="queued",
                run_at=utcnow() + timedelta(seconds=backoff_seconds(job.attempts)),
            )
        async with self.database.transaction() as session:
            await session.execute(
                update(Job)
                .where(Job.id == job.id, Job.locked_by == self.worker_id)
                .values(**values)
                .execution_options(synchronize_session=False)
            )
        log.warning(
            "job_failed", job_id=job.id, kind=job.kind, attempt=job.attempts, dead=dead, error=error
        )


class _LeaseLost(Exception):
    pass
