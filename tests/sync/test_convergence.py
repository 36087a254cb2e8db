"""Many offline devices converge, under every conflict policy, through a faulty network.

Property-based (hypothesis): each example is a new tenant with 3-6 devices (SDK clients, some
sharing a user, users of different roles), a shared collection (read/write ``tenant``) and a
private one (read/write ``owner``) under the policy under test. A generated scenario makes
offline edits on a small pool of record ids and syncs random devices in random order through a
wire that loses answers (the server applied the push, the client gets ``ReadTimeout`` and
resends the same body under the same idempotency key later), duplicates requests and delays
delivery (a push held before the server, or its answer held, while another device syncs).

After quiescence (every outbox empty, then every device pulls twice) the test checks, against
the database itself, the conflict log and a fresh pull per user:

(a) every acknowledged write is the final state or was superseded by a later acknowledged write
    (each version 1..V of a record is claimed by exactly one write), and every losing write is
    in the conflict log (exactly once);
(b) each device's view equals the server's state for its scope; others' private records never
    reach it;
(c) replays changed nothing: a replayed key returns the first answer byte for byte, and a
    record's version is the number of writes acknowledged on it;
(d) an acknowledged delete is final on the server and on every device;
(e) pull cursors are monotonic.

Deterministic: scenarios are derandomized, the devices' hybrid logical clocks run on a step
counter, and "concurrency" is explicit hand-over between tasks (no sleeps, no timing).
``HOMEPORT_PROPERTY_EXAMPLES`` raises the number of examples (nightly runs).
"""

from __future__ import annotations

import asyncio
import json
import os
import time
import uuid
from collections import defaultdict
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from homeport_client import HomeportClient, HomeportNetworkError, HybridLogicalClock
from hypothesis import HealthCheck, Phase, event, example, given, note
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st
from sqlalchemy import text

from homeport.auth.principal import Principal, Role
from homeport.kit.db import Database
from homeport.kit.tenancy import tenant_select
from homeport.models.sync import SyncRecord
from homeport.sync.cursor import FeedPoint, decode_cursor
from homeport.sync.service import SyncService
from tests.conftest import Harness, Tenant, make_settings, running_harness
from tests.sync.conftest import TASK_SCHEMA, upsert
from tests.sync.conftest import World as SyncWorld

BASE_URL = "http://homeport.test"
PUSH = "/api/v1/sync/push"
PULL = "/api/v1/sync/pull"
EXAMPLES = int(os.environ.get("HOMEPORT_PROPERTY_EXAMPLES", "15"))
PHASES = [Phase.explicit, Phase.reuse, Phase.generate]
if os.environ.get("HOMEPORT_PROPERTY_SHRINK"):
    PHASES.append(Phase.shrink)
POLICIES = ["server_wins", "client_wins", "last_write_wins", "field_merge", "manual"]
SHARED, PRIVATE = "shared", "private"
KEYS = [(SHARED, "s1"), (SHARED, "s2"), (SHARED, "s3"), (PRIVATE, "p1"), (PRIVATE, "p2")]
MEMBER_PASSWORD = "member-password-1"

Key = tuple[str, str]


# Scenarios


@dataclass(frozen=True)
class Scenario:
    roles: list[str]  # per user; user 0 is the tenant owner
    device_users: list[int]  # per device: its user
    steps: list[tuple[Any, ...]]

    def __repr__(self) -> str:
        lines = [f"Scenario(roles={self.roles}, device_users={self.device_users}, steps=["]
        lines += [f"    {step!r}," for step in self.steps]
        return "\n".join([*lines, "])"])


_titles = st.sampled_from(["alpha", "beta", "gamma"])
_records = st.fixed_dictionaries(
    {"title": _titles},
    optional={"done": st.booleans(), "notes": st.sampled_from(["x", "y"])},
)
_fields = {"title": _titles, "done": st.booleans(), "notes": st.sampled_from(["x", "z"])}


def _others(name: str) -> dict[str, st.SearchStrategy[Any]]:
    return {key: value for key, value in _fields.items() if key != name}


_patches = st.one_of(
    *(
        st.fixed_dictionaries(
            {name: value}, optional={k: v for k, v in _fields.items() if k != name}
        )
        for name, value in _fields.items()
    )
)

S1, S2, S3, P1, P2 = KEYS
# Hand-written scenarios run first on every run (and then the generated ones).
TOMBSTONES_AND_LOST_ANSWERS = Scenario(
    roles=["owner", "member"],
    device_users=[0, 1, 0],
    steps=[
        ("put", 0, S1, {"title": "alpha"}),
        ("sync", 0, None, "best_effort"),
        ("sync", 1, None, "best_effort"),
        ("patch", 1, S1, {"done": True}),
        ("delete", 0, S1),
        ("sync", 0, "lose_then_pull", "best_effort"),  # applied, answer lost, then a pull
        ("sync", 1, None, "best_effort"),  # update against the tombstone
        ("put", 2, S1, {"title": "beta"}),  # a device that never saw s1
        ("sync_all", (2, 1, 0)),
        ("put", 1, S1, {"title": "gamma"}),  # after seeing the tombstone
        ("sync", 1, "duplicate", "best_effort"),
        ("put", 0, P1, {"title": "alpha"}),
        ("put", 1, P1, {"title": "beta"}),  # another user's private id
        ("delay", 0, 1, "answer"),
        ("put", 2, S2, {"title": "alpha"}),
        ("sync", 2, "lose", "atomic"),
        ("patch", 2, S2, {"notes": "x"}),  # queued behind the unanswered batch
        ("sync_all", (0, 1, 2)),
    ],
)
RACING_EDITS = Scenario(
    roles=["owner", "manager", "member"],
    device_users=[0, 1, 2, 1],
    steps=[
        ("put", 0, S2, {"title": "alpha", "notes": "x"}),
        ("sync_all", (0, 1, 2, 3)),
        ("patch", 1, S2, {"title": "beta"}),
        ("patch", 2, S2, {"notes": "z"}),
        ("delete", 3, S2),
        ("delay", 1, 2, "request"),  # 1's push arrives after 2 synced
        ("sync", 3, "lose", "atomic"),
        ("put", 3, S3, {"title": "gamma"}),
        ("sync_all", (3, 2, 1, 0)),
        ("put", 1, P2, {"title": "alpha"}),
        ("put", 3, P2, {"title": "beta"}),  # same user, two devices
        ("delay", 3, 1, "answer"),
        ("delete", 1, P2),
        ("sync_all", (1, 3, 0, 2)),
        ("patch", 0, S3, {"done": False}),
        ("patch", 2, S3, {"done": True}),
        ("sync", 2, "duplicate", "best_effort"),
        ("sync", 0, "lose_then_pull", "best_effort"),
    ],
)


@st.composite
def scenarios(draw: st.DrawFn) -> Scenario:
    users = draw(st.integers(2, 4))
    roles = ["owner"] + [
        draw(st.sampled_from(["admin", "manager", "member"])) for _ in range(users - 1)
    ]
    devices = draw(st.integers(max(3, users), 6))
    device_users = list(range(users)) + [
        draw(st.integers(0, users - 1)) for _ in range(devices - users)
    ]
    device = st.integers(0, devices - 1)
    key = st.sampled_from(KEYS)
    edit = st.one_of(
        st.tuples(st.just("put"), device, key, _records),
        st.tuples(st.just("patch"), device, key, _patches),
        st.tuples(st.just("delete"), device, key),
    )
    sync = st.tuples(
        st.just("sync"),
        device,
        st.sampled_from([None, None, "lose", "lose_then_pull", "duplicate"]),
        st.sampled_from(["best_effort", "best_effort", "atomic"]),
    )
    everyone = st.tuples(st.just("sync_all"), st.permutations(range(devices)))
    pull = st.tuples(st.just("pull"), device)
    delay = st.tuples(st.just("delay"), device, device, st.sampled_from(["request", "answer"]))
    step = st.one_of(edit, edit, edit, sync, sync, everyone, delay, pull)
    steps = draw(st.lists(step, min_size=8, max_size=40))
    return Scenario(roles, device_users, steps)


# The wire between a device and the server


@dataclass
class Exchange:
    device: int
    key: str
    body: dict[str, Any]
    answer: dict[str, Any]
    replayed: bool


@dataclass
class PullSeen:
    sent: str | None
    answered: str
    changes: int


class StepClock:
    """Wall clock of every device: advances one millisecond per scenario step."""

    def __init__(self) -> None:
        self.ms = time.time_ns() // 1_000_000 - 60_000

    def __call__(self) -> int:
        return self.ms


class Wire(httpx.AsyncBaseTransport):
    """Records every exchange of one device and injects one-shot faults into its next push."""

    def __init__(self, inner: httpx.AsyncBaseTransport, device: int, log: list[Exchange]):
        self.inner = inner
        self.device = device
        self.log = log
        self.pulls: list[PullSeen] = []
        self.lose_next_push = False
        self.duplicate_next_push = False
        self.hold: tuple[str, asyncio.Event, asyncio.Event] | None = None
        self.lost = 0

    def clear_faults(self) -> None:
        self.lose_next_push = self.duplicate_next_push = False
        self.hold = None

    async def _deliver(self, request: httpx.Request) -> httpx.Response:
        copy = httpx.Request(
            request.method, request.url, headers=request.headers, content=request.content
        )
        response = await self.inner.handle_async_request(copy)
        content = await response.aread()
        answer = httpx.Response(
            response.status_code, headers=response.headers, content=content, request=request
        )
        if request.url.path == PUSH and answer.status_code == 200:
            body = json.loads(request.content)
            self.log.append(
                Exchange(
                    self.device,
                    body["idempotency_key"],
                    body,
                    json.loads(content),
                    answer.headers.get("idempotent-replay") == "true",
                )
            )
        if request.url.path == PULL and answer.status_code == 200:
            page = json.loads(content)
            self.pulls.append(
                PullSeen(request.url.params.get("cursor"), page["cursor"], len(page["changes"]))
            )
        return answer

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        await request.aread()
        if request.url.path != PUSH:
            return await self._deliver(request)
        hold, self.hold = self.hold, None
        if hold is not None and hold[0] == "request":
            hold[1].set()
            await hold[2].wait()  # delivered only after another device synced
        answer = await self._deliver(request)
        if self.duplicate_next_push:
            self.duplicate_next_push = False
            again = await self._deliver(request)
            assert again.status_code == 200, again.text
            assert again.headers.get("idempotent-replay") == "true"
            assert again.json() == answer.json(), "a duplicated push got another answer"
            answer = again
        if hold is not None and hold[0] == "answer":
            hold[1].set()
            await hold[2].wait()  # the server applied it; the answer arrives late
        if self.lose_next_push:
            self.lose_next_push = False
            self.lost += 1
            raise httpx.ReadTimeout("the answer was lost on the way back", request=request)
        return answer


# One example


@dataclass
class Device:
    index: int
    user: int
    client: HomeportClient
    wire: Wire


@dataclass
class User:
    email: str
    password: str
    role: str
    user_id: str = ""
    headers: dict[str, str] = field(default_factory=dict)


@dataclass
class Claim:
    """A write the server acknowledged: ``applied``, or a conflict the client side won."""

    device: int
    key: str
    op: str
    data: dict[str, Any] | None
    how: str  # applied | client | merged


@pytest.fixture
async def conv_harness(database_url: str, tmp_path: Path) -> AsyncIterator[Harness]:
    settings = make_settings(database_url, tmp_path / "data", rate_limit_enabled=False)
    async with running_harness(settings) as running:
        yield running


class World:
    def __init__(self, harness: Harness, policy: str, scenario: Scenario) -> None:
        self.harness = harness
        self.policy = policy
        self.scenario = scenario
        self.log: list[Exchange] = []
        self.clock = StepClock()
        self.users: list[User] = []
        self.devices: list[Device] = []
        self.tenant: Tenant | None = None

    async def setup(self) -> None:
        harness = self.harness
        slug = f"conv-{uuid.uuid4().hex[:12]}"
        tenant = self.tenant = await harness.create_tenant(slug)
        owner_headers = await harness.owner_headers(tenant, "console")
        for name, rule in ((SHARED, "tenant"), (PRIVATE, "owner")):
            body = {
                "name": name,
                "schema": TASK_SCHEMA,
                "read": rule,
                "write": rule,
                "conflict_policy": self.policy,
            }
            answer = await harness.client.post(
                "/api/v1/collections", json=body, headers=owner_headers
            )
            assert answer.status_code == 201, answer.text
        for number, role in enumerate(self.scenario.roles):
            if role == "owner":
                user = User(tenant.owner_email, tenant.owner_password, role)
            else:
                email = f"u{number}@{slug}.example.com"
                await harness.add_member(tenant, email, role, MEMBER_PASSWORD)
                user = User(email, MEMBER_PASSWORD, role)
            user.headers = await harness.login_headers(
                user.email, user.password, f"oracle-{number}"
            )
            me = await harness.client.get("/api/v1/auth/me", headers=user.headers)
            user.user_id = me.json()["user_id"]
            self.users.append(user)
        inner = httpx.ASGITransport(app=harness.app, client=("127.0.0.1", 50000))
        for index, user_number in enumerate(self.scenario.device_users):
            wire = Wire(inner, index, self.log)
            device_id = f"{slug}-d{index}"
            client = HomeportClient(BASE_URL, ":memory:", device_id, transport=wire)
            # Deterministic clocks: one shared step counter instead of the wall clock.
            client._clock = HybridLogicalClock(device_id, clock=self.clock)
            user = self.users[user_number]
            await client.login(user.email, user.password)
            self.devices.append(Device(index, user_number, client, wire))

    async def close(self) -> None:
        for device in self.devices:
            await device.client.aclose()

    # Steps

    async def sync(self, index: int, mode: str = "best_effort", pull_anyway: bool = False) -> None:
        client = self.devices[index].client
        try:
            await client.push(mode=mode)  # type: ignore[arg-type]
        except HomeportNetworkError:
            if not pull_anyway:
                return
        await client.pull(limit=2)

    async def delayed(self, first: int, second: int, stage: str) -> None:
        """``first``'s push is held (before the server, or its answer) while ``second`` syncs."""
        if first == second or self.devices[first].client.pending() == 0:
            await self.sync(first)
            await self.sync(second)
            return
        reached, release = asyncio.Event(), asyncio.Event()
        self.devices[first].wire.hold = (stage, reached, release)
        task = asyncio.ensure_future(self.sync(first))
        waiter = asyncio.ensure_future(reached.wait())
        await asyncio.wait({task, waiter}, return_when=asyncio.FIRST_COMPLETED)
        if not reached.is_set():
            waiter.cancel()
        await self.sync(second)
        release.set()
        await task

    async def run(self) -> None:
        for step in self.scenario.steps:
            self.clock.ms += 1
            kind = step[0]
            if kind in ("put", "patch", "delete"):
                client = self.devices[step[1]].client
                collection, record_id = step[2]
                if kind == "put":
                    client.put(collection, record_id, step[3])
                elif kind == "patch":
                    client.patch(collection, record_id, step[3])
                else:
                    client.delete(collection, record_id)
            elif kind == "sync":
                _, index, fault, mode = step
                wire = self.devices[index].wire
                wire.lose_next_push = fault in ("lose", "lose_then_pull")
                wire.duplicate_next_push = fault == "duplicate"
                await self.sync(index, mode, pull_anyway=fault == "lose_then_pull")
            elif kind == "sync_all":
                for index in step[1]:
                    await self.sync(index)
            elif kind == "pull":
                await self.devices[step[1]].client.pull(limit=2)
            else:
                await self.delayed(step[1], step[2], step[3])
            for device in self.devices:
                device.wire.clear_faults()

    async def quiesce(self) -> None:
        for _round in range(6):
            for device in self.devices:
                if device.client.pending():
                    await device.client.push()
            if not any(device.client.pending() for device in self.devices):
                break
        stuck = {d.index: d.client.pending() for d in self.devices if d.client.pending()}
        assert not stuck, f"outboxes never drained: {stuck}"
        await self.settle_feed()
        for _round in range(2):
            for device in self.devices:
                await device.client.pull(limit=2)

    async def settle_feed(self) -> None:
        """PostgreSQL serves a change once no older transaction can still commit: the horizon
        is the xmin of the whole cluster, so another session's open transaction (any database,
        e.g. a parallel test run) legitimately delays the feed. Quiescence includes waiting for
        the horizon to pass this tenant's last change (an external condition, hence polling)."""
        database = self.harness.state.database
        if database.dialect != "postgresql":
            return
        assert self.tenant is not None
        async with database.engine.connect() as connection:
            last = (
                await connection.execute(
                    text("SELECT coalesce(max(xid), 0) FROM sync_records WHERE tenant_id = :t"),
                    {"t": self.tenant.id},
                )
            ).scalar_one()
            await connection.rollback()
            deadline = time.monotonic() + 60
            while True:
                horizon = (
                    await connection.execute(
                        text("SELECT pg_snapshot_xmin(pg_current_snapshot())::text::bigint")
                    )
                ).scalar_one()
                await connection.rollback()
                if horizon > last:
                    return
                assert time.monotonic() < deadline, f"feed horizon stuck at {horizon} <= {last}"
                await asyncio.sleep(0.005)

    # Invariants

    async def server_records(self) -> dict[Key, SyncRecord]:
        assert self.tenant is not None
        async with self.harness.state.database.transaction() as session:
            rows = (await session.execute(tenant_select(SyncRecord, self.tenant.id))).scalars()
            return {(row.collection, row.record_id): row for row in rows.all()}

    async def fresh_pull(self, user: User) -> dict[Key, dict[str, Any]]:
        """The whole scope of ``user`` as a brand new device would download it (small pages)."""
        state: dict[Key, dict[str, Any]] = {}
        cursor: str | None = None
        while True:
            params: dict[str, Any] = {"limit": 3}
            if cursor:
                params["cursor"] = cursor
            answer = await self.harness.client.get(PULL, params=params, headers=user.headers)
            assert answer.status_code == 200, answer.text
            page = answer.json()
            for change in page["changes"]:
                key = (change["collection"], change["id"])
                assert key not in state, f"{key} served twice to one fresh pull"
                state[key] = change
            cursor = page["cursor"]
            if not page["has_more"]:
                return state

    async def check(self) -> None:
        assert self.tenant is not None
        server = await self.server_records()
        claims: dict[Key, dict[int, list[Claim]]] = defaultdict(lambda: defaultdict(list))
        answered_conflicts: dict[str, dict[str, Any]] = {}

        # (c) replays: every later answer to a key is the first answer, byte for byte.
        first: dict[tuple[int, str], Exchange] = {}
        for exchange in self.log:
            known = first.get((exchange.device, exchange.key))
            if known is None:
                assert not exchange.replayed, "a first delivery was marked as a replay"
                first[(exchange.device, exchange.key)] = exchange
                continue
            assert exchange.replayed, f"device {exchange.device} key {exchange.key} re-applied"
            assert exchange.answer == known.answer, "a replay got another answer"
            assert exchange.body == known.body

        for exchange in first.values():
            changes, results = exchange.body["changes"], exchange.answer["results"]
            assert len(results) == len(changes)
            by_key = {(c["collection"], c["id"]): c for c in exchange.answer["conflicts"]}
            for change, result in zip(changes, results, strict=True):
                key = (change["collection"], change["id"])
                assert (result["collection"], result["id"]) == key
                claim = Claim(exchange.device, exchange.key, change["op"], change["data"], "")
                version = result["version"]
                if result["status"] == "applied" and version is not None:
                    claim.how = "applied"
                    claims[key][version].append(claim)
                elif result["status"] == "conflict":
                    entry = by_key[key]
                    answered_conflicts[entry["conflict_id"]] = entry
                    if entry["winner"] in ("client", "merged"):
                        claim.how = entry["winner"]
                        claims[key][version].append(claim)

        kinds = {c.op + "/" + c.how for v in claims.values() for cl in v.values() for c in cl}
        for kind in sorted(kinds):
            event(f"acknowledged {kind}")
        event(f"conflicts: {min(len(answered_conflicts), 3)}+")
        event(f"lost answers: {min(sum(d.wire.lost for d in self.devices), 2)}+")
        event(f"replays: {min(len(self.log) - len(first), 2)}+")

        # (a) + (c): versions 1..V of a record are each claimed by exactly one write.
        for key in claims:
            assert key in server, f"acknowledged writes to {key} are not on the server at all"
        for key, row in server.items():
            by_version = claims.get(key, {})
            assert set(by_version) == set(range(1, row.version + 1)), (
                f"{key}: server at version {row.version} (deleted={row.deleted}, "
                f"data={row.data}) but acknowledged versions are {sorted(by_version)}"
            )
            for version, owners in by_version.items():
                if len(owners) > 1:
                    # Only a delete of an already deleted record answers an existing version.
                    assert all(c.op == "delete" for c in owners), (
                        f"{key} version {version} acknowledged to {len(owners)} different "
                        f"writes: {owners} (a lost update)"
                    )
            last = by_version[row.version][0]
            if last.op == "delete":
                assert row.deleted, f"{key}: its last acknowledged write deleted it"
                assert row.data is None
            else:
                assert not row.deleted, f"{key}: last acknowledged write was an {last.op}"
                assert last.data is not None
                assert row.data is not None
                # The server may add the id field to what the client sent.
                stored = {k: v for k, v in row.data.items() if k != "id" or "id" in last.data}
                if last.op == "upsert" and last.how in ("applied", "client"):
                    assert stored == last.data, f"{key}: {last} lost"
                elif last.how != "merged":
                    assert stored.items() >= last.data.items(), f"{key}: {last} lost"
            # (d) a delete is final: nothing was written after the first acknowledged delete.
            deletes = [v for v, owners in by_version.items() if owners[0].op == "delete"]
            if deletes:
                assert row.deleted, f"{key}: deleted at version {min(deletes)}, came back"
                assert row.version == min(deletes), f"{key}: written after its deletion"

        # (a) every conflict answered is logged exactly once, as answered.
        owner = self.users[0]
        log = await self.harness.client.get(
            "/api/v1/sync/conflicts", params={"limit": 1000}, headers=owner.headers
        )
        assert log.status_code == 200, log.text
        logged = {entry["id"]: entry for entry in log.json()["conflicts"]}
        assert log.json()["total"] == len(logged)
        assert set(logged) == set(answered_conflicts), "conflict log differs from the answers"
        for conflict_id, entry in answered_conflicts.items():
            assert logged[conflict_id]["winning_version"] == entry["winner"]
            assert logged[conflict_id]["resolution_result"] == entry["status"]
            assert (logged[conflict_id]["domain"], logged[conflict_id]["mobile_id"]) == (
                entry["collection"],
                entry["id"],
            )
            if self.policy == "manual" and entry["winner"] == "server":
                assert entry["status"] == "pending"

        # (b) every device holds exactly the server's state of its scope, nothing else.
        for number, user in enumerate(self.users):
            scope = await self.fresh_pull(user)
            expected = {
                key: row
                for key, row in server.items()
                if key[0] == SHARED or row.owner_id == user.user_id
            }
            assert set(scope) == set(expected), f"user {number}: pull scope is wrong"
            for key, change in scope.items():
                row = expected[key]
                assert (change["version"], change["deleted"]) == (row.version, row.deleted)
                assert change["data"] == (None if row.deleted else row.data)
            for device in self.devices:
                if device.user != number:
                    continue
                client = device.client
                for collection in (SHARED, PRIVATE):
                    live = {
                        record_id: data
                        for (name, record_id), change in scope.items()
                        if name == collection
                        for data in [change["data"]]
                        if not change["deleted"]
                    }
                    assert dict(client.items(collection)) == live, (
                        f"device {device.index} (user {number}) diverged in {collection}"
                    )
                for key, change in scope.items():
                    assert client.version(*key) == change["version"], (
                        f"device {device.index}: {key} at version {client.version(*key)}, "
                        f"server {change['version']}"
                    )
                    if change["deleted"]:
                        assert client.get(*key) is None, f"{key} resurrected on {device.index}"
                for key, row in server.items():
                    if key not in scope:
                        assert client.version(*key) is None, (
                            f"device {device.index} holds {key} of another user ({row.owner_id})"
                        )

        # (e) cursors never go back; the last pull of every device was empty (quiescent).
        for device in self.devices:
            points: list[FeedPoint] = []
            for seen in device.wire.pulls:
                answered = decode_cursor(
                    self.harness.state.secret_key, self.tenant.id, seen.answered
                )
                if seen.sent is not None:
                    sent = decode_cursor(self.harness.state.secret_key, self.tenant.id, seen.sent)
                    assert answered >= sent, f"device {device.index}: cursor went back"
                points.append(answered)
            assert points == sorted(points), f"device {device.index}: cursors not monotonic"
            assert device.wire.pulls[-1].changes == 0


@pytest.mark.parametrize("policy", POLICIES)
@hypothesis_settings(
    max_examples=EXAMPLES,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=list(HealthCheck),
    phases=PHASES,
)
@given(scenario=scenarios())
@example(scenario=TOMBSTONES_AND_LOST_ANSWERS)
@example(scenario=RACING_EDITS)
async def test_devices_converge_through_a_faulty_network(
    conv_harness: Harness, policy: str, scenario: Scenario
) -> None:
    note(repr(scenario))
    world = World(conv_harness, policy, scenario)
    try:
        await world.setup()
        await world.run()
        await world.quiesce()
        await world.check()
    finally:
        await world.close()


# Real concurrency on PostgreSQL: two pushes race on one record


async def _blocked_on_a_lock(database_url: str, task: asyncio.Future[Any]) -> None:
    """Wait until a backend of this database waits for a lock (or ``task`` finished)."""
    database = Database(database_url)
    try:
        deadline = time.monotonic() + 30
        async with database.engine.connect() as connection:
            while not task.done():
                waiting = (
                    await connection.execute(
                        text(
                            "SELECT count(*) FROM pg_stat_activity WHERE datname = "
                            "current_database() AND wait_event_type = 'Lock'"
                        )
                    )
                ).scalar_one()
                await connection.rollback()
                if waiting:
                    return
                assert time.monotonic() < deadline, "the second push neither blocked nor ended"
                await asyncio.sleep(0.005)
    finally:
        await database.dispose()


@pytest.mark.postgres_only
@pytest.mark.parametrize("policy", ["server_wins", "manual", "last_write_wins"])
@pytest.mark.parametrize("existing", [False, True], ids=["new-record", "existing-record"])
async def test_racing_pushes_to_one_record_never_lose_an_acknowledged_write(
    world: SyncWorld, database_url: str, policy: str, existing: bool
) -> None:
    """Two devices push the same record from the same base version at the same time.

    Push A runs in its own transaction and stays open; push B arrives meanwhile (it reads the
    record before A commits, then waits for A's row lock); A commits. At most one of them may
    be answered ``applied`` at a given version; the other must be a conflict (or apply on top,
    at the next version). Answering both ``applied`` at the same version loses A's write while
    A's device believes it is stored: no conflict is logged and no device ever learns.
    """
    await world.collection("tasks", conflict_policy=policy)
    first = await world.device("first@acme.example.com")
    second = await world.device("second@acme.example.com")
    base: int | None = None
    if existing:
        created = await first.push([upsert("tasks", "t1", {"title": "start"})])
        assert created.json()["results"][0]["version"] == 1
        base = 1
    change_a = upsert("tasks", "t1", {"title": "from A"}, base_version=base)
    change_b = upsert("tasks", "t1", {"title": "from B"}, base_version=base)

    held = Database(database_url)
    try:
        async with held.transaction() as session:
            service = SyncService(session, world.harness.settings, world.harness.state.secret_key)
            answer_a = (
                await service.push(
                    Principal(
                        kind="user",
                        tenant_id=world.tenant.id,
                        user_id=first.user_id,
                        role=Role.MEMBER,
                        device_id=first.device_id,
                    ),
                    {"idempotency_key": "race-a", "changes": [change_a]},
                )
            ).body
            task_b = asyncio.ensure_future(second.push([change_b], key="race-b"))
            await _blocked_on_a_lock(database_url, task_b)
        answer_b = (await task_b).json()
    finally:
        await held.dispose()

    result_a, result_b = answer_a["results"][0], answer_b["results"][0]
    assert result_a["status"] == "applied"
    assert result_a["version"] == (base or 0) + 1
    applied = [r["version"] for r in (result_a, result_b) if r["status"] == "applied"]
    assert len(set(applied)) == len(applied), (
        f"both racing pushes were answered applied at version {applied[0]}: "
        f"A={result_a} B={result_b}"
    )
    async with world.harness.state.database.transaction() as session:
        row = (await session.execute(tenant_select(SyncRecord, world.tenant.id))).scalar_one()
    won = [c for c in answer_b["conflicts"] if c["winner"] in ("client", "merged")]
    assert row.version == (base or 0) + len(applied) + len(won), "a write was counted twice"
    conflicts = await world.harness.client.get(
        "/api/v1/sync/conflicts", headers=world.owner.headers
    )
    logged = {c["id"] for c in conflicts.json()["conflicts"]}
    assert logged == {c["conflict_id"] for c in answer_b["conflicts"]}
