"""Group commit: concurrent works share a run; a failing group falls back to runs of one."""

from __future__ import annotations

import asyncio

import pytest

from homeport.kit.groupcommit import GroupCommit


class Recorder:
    """Doubles numbers; a negative one is refused (its own answer); 13 breaks the whole run."""

    def __init__(self) -> None:
        self.runs: list[list[int]] = []

    async def run(self, works: list[int]) -> list[int | BaseException]:
        self.runs.append(list(works))
        await asyncio.sleep(0.01)  # the time a transaction takes: others queue meanwhile
        if 13 in works:
            raise RuntimeError("the run failed")
        return [ValueError(f"refused {work}") if work < 0 else work * 2 for work in works]


async def test_a_caller_alone_runs_at_once_and_concurrent_ones_share_runs() -> None:
    recorder = Recorder()
    group: GroupCommit[int, int] = GroupCommit(recorder.run)
    assert await group.submit(1) == 2
    assert recorder.runs == [[1]]

    answers = await asyncio.gather(*(group.submit(n) for n in range(2, 12)))
    assert answers == [n * 2 for n in range(2, 12)]
    # All ten were waiting before the run started: one run.
    assert recorder.runs[1:] == [list(range(2, 12))]
    assert group.groups_run == 2


async def test_groups_are_bounded() -> None:
    recorder = Recorder()
    group: GroupCommit[int, int] = GroupCommit(recorder.run, max_group=4)
    answers = await asyncio.gather(*(group.submit(n) for n in range(10)))
    assert answers == [n * 2 for n in range(10)]
    assert [len(run) for run in recorder.runs] == [4, 4, 2]


async def test_a_work_refused_gets_its_own_error_and_the_others_their_answers() -> None:
    recorder = Recorder()
    group: GroupCommit[int, int] = GroupCommit(recorder.run)
    answers = await asyncio.gather(*(group.submit(n) for n in (1, -5, 3)), return_exceptions=True)
    assert answers[0] == 2
    assert isinstance(answers[1], ValueError)
    assert str(answers[1]) == "refused -5"
    assert answers[2] == 6
    assert len(recorder.runs) == 1


async def test_a_failed_run_is_retried_work_by_work() -> None:
    recorder = Recorder()
    group: GroupCommit[int, int] = GroupCommit(recorder.run)
    blocker = asyncio.ensure_future(group.submit(0))  # holds the first run so the rest queue
    await asyncio.sleep(0)
    answers = await asyncio.gather(*(group.submit(n) for n in (4, 13, 5)), return_exceptions=True)
    assert await blocker == 0
    assert answers[0] == 8
    assert isinstance(answers[1], RuntimeError)
    assert answers[2] == 10
    assert recorder.runs == [[0], [4, 13, 5], [4], [13], [5]]


async def test_a_caller_that_gives_up_does_not_cancel_the_others() -> None:
    recorder = Recorder()
    group: GroupCommit[int, int] = GroupCommit(recorder.run)
    first = asyncio.ensure_future(group.submit(1))
    await asyncio.sleep(0)
    leaving = asyncio.ensure_future(group.submit(2))
    staying = asyncio.ensure_future(group.submit(3))
    await asyncio.sleep(0)
    leaving.cancel()
    with pytest.raises(asyncio.CancelledError):
        await leaving
    assert await first == 2
    assert await staying == 6
    assert recorder.runs == [[1], [2, 3]]  # the work that was left still ran with the others


class Overlap:
    """A run that records how many runs were in flight at once."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.running = 0
        self.most = 0

    async def run(self, works: list[int]) -> list[int | BaseException]:
        self.running += 1
        self.most = max(self.most, self.running)
        await asyncio.sleep(self.seconds)
        self.running -= 1
        return [work * 2 for work in works]


async def test_with_concurrency_groups_run_side_by_side() -> None:
    overlap = Overlap(0.01)
    group: GroupCommit[int, int] = GroupCommit(overlap.run, concurrency=2)
    first = asyncio.ensure_future(group.submit(1))
    await asyncio.sleep(0)  # the first group runs; a second may start beside it
    answers = await asyncio.gather(*(group.submit(n) for n in range(2, 8)))
    assert await first == 2
    assert answers == [n * 2 for n in range(2, 8)]
    assert overlap.most == 2
    assert group.groups_run == 2  # the six that queued went together into the second


async def test_one_group_at_a_time_by_default() -> None:
    overlap = Overlap(0.005)
    group: GroupCommit[int, int] = GroupCommit(overlap.run)
    for _ in range(3):
        await asyncio.gather(*(group.submit(n) for n in range(5)))
        await asyncio.gather(group.submit(9), asyncio.sleep(0), group.submit(10))
    assert overlap.most == 1


@pytest.mark.parametrize("concurrency", [1, 2])
async def test_a_work_queued_as_a_drain_ends_starts_a_new_one(concurrency: int) -> None:
    async def run(works: list[int]) -> list[int | BaseException]:
        return list(works)  # ends without suspending: the drain stops in the same step

    group: GroupCommit[int, int] = GroupCommit(run, concurrency=concurrency)

    async def late() -> int:
        await asyncio.sleep(0)  # resumes right after the drain's last step, before its callbacks
        return await group.submit(2)

    first = asyncio.ensure_future(group.submit(1))
    second = asyncio.ensure_future(late())
    assert await asyncio.wait_for(asyncio.gather(first, second), timeout=2) == [1, 2]
