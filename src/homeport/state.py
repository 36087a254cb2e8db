"""What the lifespan owns, and the request dependencies that hand it out."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Annotated, Any

from fastapi import Depends, Request
from sqlalchemy.ext.asyncio import AsyncSession

from homeport.config import Settings
from homeport.kit.broker import Broker, take_after_commit
from homeport.kit.db import Database
from homeport.kit.jobs import ENQUEUED_FLAG, JobRunner
from homeport.kit.ratelimit import RateLimiter, RecentlyVerified
from homeport.kit.security import KeyRing, PasswordHashing


@dataclass
class AppState:
    settings: Settings
    database: Database
    keyring: KeyRing
    secret_key: str
    passwords: PasswordHashing
    rate_limiter: RateLimiter
    redis: Any | None
    job_runner: JobRunner | None
    # API keys (by hash) that authenticated lately; only they get a rate-limit counter of their own.
    verified_api_keys: RecentlyVerified = field(default_factory=RecentlyVerified)
    broker: Broker | None = None
    hub: Any = None  # homeport.realtime.hub.Hub (typed loosely: state imports no domain)
    storage: Any = None  # homeport.kit.storage.Storage
    upload_digests: Any = None  # homeport.uploads.digests.RunningDigests
    known_uploads: Any = None  # homeport.uploads.known.KnownUploads
    record_writes: Any = None  # homeport.records.writes.GroupedWrites


async def get_state(request: Request) -> AppState:
    state: AppState = request.app.state.homeport
    return state


StateDep = Annotated[AppState, Depends(get_state)]


@asynccontextmanager
async def unit_of_work(state: AppState, *, durable: bool = True) -> AsyncIterator[AsyncSession]:
    """One transaction of a request or job; after it commits, jobs are woken and realtime
    messages published. Endpoints that stream large bodies (uploads) open short ones of these
    instead of holding one for the whole request (SQLite has a single writer). ``durable``: see
    :meth:`homeport.kit.db.Database.transaction`."""
    async with state.database.transaction(durable=durable) as session:
        yield session
        enqueued = session.info.pop(ENQUEUED_FLAG, False)
        messages = take_after_commit(session)
    await after_commit(state, enqueued, messages)


async def get_session(state: StateDep) -> AsyncIterator[AsyncSession]:
    """The request owns the transaction: commit when the endpoint returns, else roll back."""
    async with unit_of_work(state) as session:
        yield session


async def after_commit(state: AppState, enqueued: bool, messages: list[dict[str, Any]]) -> None:
    """Wake the job runner and publish realtime messages, once the commit succeeded."""
    if enqueued and state.job_runner is not None:
        state.job_runner.notify()
    if state.broker is not None:
        for message in messages:
            await state.broker.publish(message)


SessionDep = Annotated[AsyncSession, Depends(get_session, scope="function")]
