"""Applying one client mutation to the server's state of a record, conflicts included.

Pure functions (no I/O): the push service feeds them the current state and gets back what to
store. A mutation conflicts when its ``base_version`` is not the record's current version (or it
has none and the record exists). How a conflict ends depends on the collection's policy:

| policy | update vs update | client delete vs server update |
|---|---|---|
| server_wins | server kept | server kept |
| client_wins | client applied | deleted |
| last_write_wins | later HLC wins (device id breaks ties) | later HLC wins |
| field_merge | per field, later HLC wins | later HLC wins |
| manual | server kept, conflict pending | server kept, conflict pending |

Under every policy a deleted record stays deleted: an update against a tombstone (or against a
record that no longer exists but that the client had seen) is a conflict that ends ``deleted``.
Record ids are client-generated, so bringing a record back would resurrect someone's deletion.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Any

POLICY_ALIASES = {"most_recent_wins": "last_write_wins", "timestamp": "last_write_wins"}
POLICIES = ("server_wins", "client_wins", "last_write_wins", "field_merge", "manual")


def normalise_policy(name: str) -> str:
    policy = POLICY_ALIASES.get(name, name)
    if policy not in POLICIES:
        raise ValueError(
            f"unknown conflict policy {name!r}: use one of {', '.join(POLICIES)} "
            "(or the aliases most_recent_wins, timestamp)"
        )
    return policy


class Op(enum.StrEnum):
    UPSERT = "upsert"
    PATCH = "patch"
    DELETE = "delete"


@dataclass(frozen=True)
class Current:
    """The server's state of a record."""

    version: int
    data: dict[str, Any] | None
    deleted: bool
    field_hlc: dict[str, str]
    hlc: str


@dataclass(frozen=True)
class Mutation:
    op: Op
    data: dict[str, Any] | None
    base_version: int | None
    hlc: str  # already clamped to the allowed clock skew


class Result(enum.StrEnum):
    APPLIED = "applied"  # written, no conflict
    NOOP = "noop"  # nothing to write (deleting what is already gone)
    CONFLICT = "conflict"


@dataclass(frozen=True)
class Outcome:
    result: Result
    write: bool  # store new state (version + 1)
    data: dict[str, Any] | None = None
    deleted: bool = False
    field_hlc: dict[str, str] = field(default_factory=dict)
    hlc: str = ""
    resolution: str | None = None  # the policy that decided, or "deleted"
    winner: str | None = None  # server | client | merged | deleted
    pending: bool = False


def _written(current: Current | None, mutation: Mutation) -> tuple[dict[str, Any], dict[str, str]]:
    """Data and field clocks after applying ``mutation`` without any conflict logic."""
    incoming = mutation.data or {}
    if mutation.op is Op.PATCH and current is not None and current.data is not None:
        data = {**current.data, **incoming}
        clocks = {**current.field_hlc, **dict.fromkeys(incoming, mutation.hlc)}
    else:
        data = dict(incoming)
        clocks = dict.fromkeys(incoming, mutation.hlc)
    return data, clocks


def _apply(current: Current | None, mutation: Mutation, result: Result, **extra: Any) -> Outcome:
    latest = max(mutation.hlc, current.hlc) if current is not None else mutation.hlc
    if mutation.op is Op.DELETE:
        return Outcome(result, True, None, True, {}, latest, **extra)
    data, clocks = _written(current, mutation)
    return Outcome(result, True, data, False, clocks, latest, **extra)


def _keep(policy: str, winner: str, *, pending: bool = False) -> Outcome:
    return Outcome(Result.CONFLICT, False, resolution=policy, winner=winner, pending=pending)


def _field_merge(current: Current, mutation: Mutation) -> Outcome:
    assert current.data is not None
    data = dict(current.data)
    clocks = dict(current.field_hlc)
    took_any = False
    for name, value in (mutation.data or {}).items():
        if mutation.hlc > clocks.get(name, current.hlc):
            data[name] = value
            clocks[name] = mutation.hlc
            took_any = True
    if not took_any:
        return _keep("field_merge", "server")
    return Outcome(
        Result.CONFLICT,
        True,
        data,
        False,
        clocks,
        max(mutation.hlc, current.hlc),
        resolution="field_merge",
        winner="merged",
    )


def decide(current: Current | None, mutation: Mutation, policy: str, auto_resolve: bool) -> Outcome:
    """What ``mutation`` does to the record under ``policy``."""
    if current is None:
        if mutation.base_version is not None:
            # The client had seen this record; it is gone (deleted and compacted).
            if mutation.op is Op.DELETE:
                return Outcome(Result.NOOP, False)
            return _keep("deleted", "deleted")
        if mutation.op is Op.DELETE:
            return Outcome(Result.NOOP, False)
        return _apply(None, mutation, Result.APPLIED)

    if current.deleted:
        if mutation.op is Op.DELETE:
            return Outcome(Result.NOOP, False)
        return _keep("deleted", "deleted")

    if mutation.base_version == current.version:
        return _apply(current, mutation, Result.APPLIED)

    if not auto_resolve or policy == "manual":
        return _keep("manual", "server", pending=True)
    if policy == "server_wins":
        return _keep(policy, "server")
    if policy == "client_wins":
        return _apply(current, mutation, Result.CONFLICT, resolution=policy, winner="client")
    client_later = mutation.hlc > current.hlc
    if policy == "last_write_wins" or mutation.op is Op.DELETE:
        if client_later:
            return _apply(current, mutation, Result.CONFLICT, resolution=policy, winner="client")
        return _keep(policy, "server")
    return _field_merge(current, mutation)
