"""Group commit: concurrent units of work that arrive while one group runs go together into the
next, so N callers share one transaction and its statements instead of paying for N.

No work waits for a timer: a caller alone runs at once; callers who arrive while a group runs
form the next group. When a whole group fails (an error none of its works' own answers
explains, such as a lost connection), every work of it runs again alone, so one bad work never
fails the others.
"""

from __future__ import annotations

import asyncio
import contextvars
from collections.abc import Awaitable, Callable, Sequence
from typing import Generic, TypeVar

Work = TypeVar("Work")
Answer = TypeVar("Answer")

# Runs a group and answers each work in order: a value, or the exception its caller gets.
GroupRunner = Callable[[list[Work]], Awaitable[Sequence["Answer | BaseException"]]]


class GroupCommit(Generic[Work, Answer]):
    """``concurrency``: how many groups may run at once. One where the database has one writer
    (SQLite); more where a group can wait on another transaction's lock (PostgreSQL), so that
    one stuck group does not hold up every other write."""

    def __init__(
        self, run: GroupRunner[Work, Answer], max_group: int = 256, concurrency: int = 1
    ) -> None:
        self._run = run
        self._max_group = max_group
        self._concurrency = concurrency
        self._waiting: list[tuple[Work, asyncio.Future[Answer]]] = []
        # Counted by the drains themselves, as they start and stop (a task's done callbacks
        # run a loop turn later: counted by those, a work arriving in between found every
        # drain "running" and waited forever).
        self._drains = 0
        self._tasks: set[asyncio.Task[None]] = set()  # strong references to the drains
        self.groups_run = 0  # how many groups ran (for tests and metrics)

    async def submit(self, work: Work) -> Answer:
        future: asyncio.Future[Answer] = asyncio.get_running_loop().create_future()
        self._waiting.append((work, future))
        if self._drains < self._concurrency:
            self._drains += 1
            # In a context of its own: the group is no single request's (logs, trace ids).
            task = asyncio.create_task(self._drain(), context=contextvars.Context())
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        # Shielded: a caller that gives up (client gone) must not cancel the group's others.
        return await asyncio.shield(future)

    async def _drain(self) -> None:
        try:
            while self._waiting:
                group = self._waiting[: self._max_group]
                del self._waiting[: self._max_group]
                await self._answer(group)
        finally:
            # No await between the last look at the queue and this: a work queued after it
            # starts a drain of its own.
            self._drains -= 1

    async def _answer(self, group: list[tuple[Work, asyncio.Future[Answer]]]) -> None:
        works = [work for work, _future in group]
        try:
            self.groups_run += 1
            answers = await self._run(works)
        except Exception as exc:
            if len(group) == 1:
                _settle(group[0][1], exc)
                return
            for single in group:
                await self._answer([single])
            return
        except BaseException as exc:  # cancelled with the app: nobody gets an answer
            for _work, future in group:
                _settle(future, exc)
            raise
        for (_work, future), answer in zip(group, answers, strict=True):
            _settle(future, answer)


def _settle(future: asyncio.Future[Answer], answer: Answer | BaseException) -> None:
    if future.done():
        return
    if isinstance(answer, BaseException):
        future.set_exception(answer)
    else:
        future.set_result(answer)
