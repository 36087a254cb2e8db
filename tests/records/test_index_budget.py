"""Which declared field indexes the budget keeps: those that exist, then the oldest
declarations'; never one dropped to make room for another."""

from __future__ import annotations

from homeport.records.indexes import within_budget

# In declaration order (oldest first), as wanted_indexes gives them.
WANTED = {"a": "CREATE a", "b": "CREATE b", "c": "CREATE c", "d": "CREATE d"}


def test_the_oldest_declarations_get_the_budget() -> None:
    assert within_budget([], WANTED, 2) == {"a": "CREATE a", "b": "CREATE b"}
    assert within_budget([], WANTED, 10) == WANTED
    assert within_budget([], WANTED, 0) == {}


def test_an_index_that_exists_is_never_dropped_for_an_older_declaration() -> None:
    # "d" exists (built when there was room); "a" was declared earlier but waits.
    assert set(within_budget(["d", "unrelated"], WANTED, 2)) == {"d", "a"}
    assert set(within_budget(["c", "d"], WANTED, 2)) == {"c", "d"}


def test_a_lower_budget_keeps_the_oldest_of_those_that_exist() -> None:
    assert set(within_budget(["a", "b", "c", "d"], WANTED, 2)) == {"a", "b"}
