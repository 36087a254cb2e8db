"""What the lifespan owns, and the request dependencies that hand it out."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Annotated, Any

from fastapi import Depends, Request
from sqlalchemy.ext.asyncio import AsyncSession

from homeport.config import Settings
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


async def get_state(request: Request) -> AppState:
    state: AppState = request.app.state.homeport
    return state


StateDep = Annotated[AppState, Depends(get_state)]


async def get_session(state: StateDep) -> AsyncIterator[AsyncSession]:
    """The request owns the transaction: commit when the endpoint returns, else roll back."""
    async with state.database.transaction() as session:
        yield session
        enqueued = session.info.pop(ENQUEUED_FLAG, False)
    if enqueued and state.job_runner is not None:
        state.job_runner.notify()


SessionDep = Annotated[AsyncSession, Depends(get_session, scope="function")]
