"""Hybrid logical clock: ``f"{wall_ms:013d}:{counter:05d}:{device_id}"``."""

from __future__ import annotations

import time
from collections.abc import Callable

__all__ = ["HybridLogicalClock", "format_hlc", "parse_hlc"]

_MAX_COUNTER = 99_999


def format_hlc(wall_ms: int, counter: int, device_id: str) -> str:
    return f"{wall_ms:013d}:{counter:05d}:{device_id}"


def parse_hlc(value: str) -> tuple[int, int, str]:
    """Split an HLC string into ``(wall_ms, counter, device_id)``; ``ValueError`` if malformed."""
    parts = value.split(":", 2)
    if len(parts) != 3 or len(parts[0]) != 13 or len(parts[1]) != 5:
        raise ValueError(f"malformed HLC: {value!r}")
    return int(parts[0]), int(parts[1]), parts[2]


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


class HybridLogicalClock:
    """A per-device hybrid logical clock.

    The lexicographic order of the strings it produces is their time order, with the device id
    breaking ties. ``state`` can be persisted and given back to keep the clock monotonic across
    restarts.
    """

    def __init__(
        self,
        device_id: str,
        last: str | None = None,
        *,
        clock: Callable[[], int] = _now_ms,
    ) -> None:
        self.device_id = device_id
        self._clock = clock
        self._wall = 0
        self._counter = 0
        if last is not None:
            self._wall, self._counter, _ = parse_hlc(last)

    @property
    def state(self) -> str:
        """The last timestamp issued or observed (for persistence)."""
        return format_hlc(self._wall, self._counter, self.device_id)

    def _set(self, wall: int, counter: int) -> str:
        if counter > _MAX_COUNTER:  # keep the fixed-width format: move to the next millisecond
            wall, counter = wall + 1, 0
        self._wall, self._counter = wall, counter
        return format_hlc(wall, counter, self.device_id)

    def now(self) -> str:
        """A timestamp for a new local event, greater than every earlier one."""
        wall = max(self._clock(), self._wall)
        counter = self._counter + 1 if wall == self._wall else 0
        return self._set(wall, counter)

    def receive(self, remote: str) -> str:
        """Merge a timestamp received from elsewhere; returns the new local timestamp."""
        r_wall, r_counter, _ = parse_hlc(remote)
        l_wall, l_counter = self._wall, self._counter
        wall = max(self._clock(), l_wall, r_wall)
        if wall == l_wall and wall == r_wall:
            counter = max(l_counter, r_counter) + 1
        elif wall == l_wall:
            counter = l_counter + 1
        elif wall == r_wall:
            counter = r_counter + 1
        else:
            counter = 0
        return self._set(wall, counter)
