"""Ids are UUIDv7 strings (RFC 9562) in the standard form, ordered by creation time."""

from __future__ import annotations

import time
import uuid

from homeport.kit.ids import new_id


def test_ids_are_uuid7_in_the_standard_form() -> None:
    ids = [new_id() for _ in range(2000)]
    assert len(set(ids)) == len(ids)
    for each in ids:
        parsed = uuid.UUID(each)
        assert str(parsed) == each  # lower case, 8-4-4-4-12
        assert parsed.version == 7
        assert parsed.variant == uuid.RFC_4122


def test_ids_carry_their_creation_time_first() -> None:
    before = time.time_ns() // 1_000_000
    first = new_id()
    time.sleep(0.003)
    second = new_id()
    after = time.time_ns() // 1_000_000
    millis = [uuid.UUID(each).int >> 80 for each in (first, second)]
    assert before <= millis[0] < millis[1] <= after
    assert first < second  # as text too: new rows append to indexes
