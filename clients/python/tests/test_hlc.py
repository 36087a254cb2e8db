from __future__ import annotations

import pytest

from homeport_client import HomeportClient, HybridLogicalClock, format_hlc, parse_hlc


class FakeTime:
    def __init__(self, now: int) -> None:
        self.now = now

    def __call__(self) -> int:
        return self.now


def test_format_and_parse() -> None:
    value = format_hlc(1_700_000_000_000, 7, "dev:a")
    assert value == "1700000000000:00007:dev:a"
    assert parse_hlc(value) == (1_700_000_000_000, 7, "dev:a")
    with pytest.raises(ValueError, match="malformed"):
        parse_hlc("12:3:x")


def test_local_events_are_strictly_increasing() -> None:
    clock = FakeTime(1_000)
    hlc = HybridLogicalClock("d", clock=clock)
    first = hlc.now()
    second = hlc.now()  # same millisecond: counter goes up
    assert first == "0000000001000:00000:d"
    assert second == "0000000001000:00001:d"
    clock.now = 900  # wall clock went backwards
    third = hlc.now()
    assert third == "0000000001000:00002:d"
    clock.now = 2_000
    assert hlc.now() == "0000000002000:00000:d"
    assert first < second < third < hlc.state


def test_receive_remote_ahead_and_tie() -> None:
    clock = FakeTime(1_000)
    hlc = HybridLogicalClock("a", clock=clock)
    hlc.now()
    assert hlc.receive("0000000005000:00003:b") == "0000000005000:00004:a"
    assert hlc.now() == "0000000005000:00005:a"
    # a remote timestamp behind us only bumps the counter
    assert hlc.receive("0000000000001:00000:b") == "0000000005000:00006:a"
    clock.now = 9_000
    assert hlc.receive("0000000005000:00099:b") == "0000000009000:00000:a"


def test_counter_overflow_keeps_order() -> None:
    hlc = HybridLogicalClock("d", "0000000001000:99999:d", clock=FakeTime(1_000))
    nxt = hlc.now()
    assert nxt == "0000000001001:00000:d"
    assert nxt > "0000000001000:99999:d"


def test_device_id_breaks_ties() -> None:
    assert format_hlc(1, 0, "a") < format_hlc(1, 0, "b") < format_hlc(1, 1, "a")


@pytest.mark.anyio
async def test_clock_is_monotonic_across_restarts(store_path: str) -> None:
    async with HomeportClient("http://x", store_path, "dev") as c:
        c.put("notes", "n1", {"v": 1})
        before = c.last_hlc
    # pretend the wall clock went far back: the stored HLC still wins
    async with HomeportClient("http://x", store_path, "dev") as c:
        c._clock._clock = lambda: 0
        c.put("notes", "n2", {"v": 2})
        assert c.last_hlc > before
