"""Hybrid logical clock stamps: ``"<wall ms, 13 digits>:<counter, 5 digits>:<node>"``.

Lexicographic order is time order, and the node (a device id) breaks ties, so two stamps can be
compared as strings. The server never trusts a client's wall clock further than the allowed skew.
"""

from __future__ import annotations

from dataclasses import dataclass

from homeport.kit.text import is_plain_text, whole_number

WALL_DIGITS = 13
COUNTER_DIGITS = 5
MAX_COUNTER = 10**COUNTER_DIGITS - 1


class HLCError(ValueError):
    pass


@dataclass(frozen=True, order=True)
class HLC:
    wall_ms: int
    counter: int
    node: str

    def __str__(self) -> str:
        return f"{self.wall_ms:0{WALL_DIGITS}d}:{self.counter:0{COUNTER_DIGITS}d}:{self.node}"


def parse_hlc(text: str) -> HLC:
    wall, sep1, rest = text.partition(":")
    counter, sep2, node = rest.partition(":")
    wall_ms = whole_number(wall, WALL_DIGITS) if len(wall) == WALL_DIGITS else None
    count = whole_number(counter, COUNTER_DIGITS) if len(counter) == COUNTER_DIGITS else None
    if (
        not sep1
        or not sep2
        or wall_ms is None
        or count is None
        or not node
        # A node is a device id (or ``api-key:<id>``): no control character (NUL among them)
        # and no lone surrogate (no UTF-8).
        or not is_plain_text(node)
    ):
        raise HLCError(f"not a hybrid logical clock stamp: {text[:80]!r}")
    return HLC(wall_ms, count, node)


def clamp_hlc(stamp: HLC, now_ms: int, max_skew_ms: int) -> HLC:
    """A stamp from a clock running too far ahead is pulled back to the server's time, so one
    device with a wrong clock cannot win every later conflict."""
    if stamp.wall_ms > now_ms + max_skew_ms:
        return HLC(now_ms, 0, stamp.node)
    return stamp


def server_hlc(now_ms: int, node: str = "server") -> HLC:
    return HLC(now_ms, 0, node)
