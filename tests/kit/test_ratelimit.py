"""Rate limits: policies per path, identity per API key / user / IP, Redis sharing, outages.

Memory storage aligns its windows to wall-clock boundaries (``now // window``); a sequence of
hits that straddles a boundary is weighted and may get one more request through. Tests that
count on memory storage therefore start their counted sequence well inside a window.
"""

from __future__ import annotations

import asyncio
import re
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select

from homeport.models.auth import DeviceSession, RefreshToken
from homeport.models.tenants import LoginThrottle
from tests.conftest import Harness, Tenant, make_settings, running_harness

LOGIN = "/api/v1/auth/login"
RATE_HEADERS = ("ratelimit", "ratelimit-policy", "retry-after")
POLICY_RE = re.compile(r'^"(?P<policy>[a-z]+)";q=(?P<q>\d+);w=(?P<w>\d+)$')
STATE_RE = re.compile(r'^"(?P<policy>[a-z]+)";r=(?P<r>\d+);t=(?P<t>\d+)$')


def client_from(harness: Harness, ip: str) -> httpx.AsyncClient:
    transport = httpx.ASGITransport(app=harness.app, raise_app_exceptions=False, client=(ip, 40000))
    return httpx.AsyncClient(transport=transport, base_url="http://homeport.test")


async def clear_of_window_edge(window_seconds: int = 60, margin: float = 5.0) -> None:
    """Sleep past the next memory-storage window boundary if it is less than margin away."""
    left = window_seconds - (time.time() % window_seconds)
    if left < margin:
        await asyncio.sleep(left + 0.05)


def policy_of(response: httpx.Response) -> tuple[str, int, int]:
    match = POLICY_RE.match(response.headers["ratelimit-policy"])
    assert match, response.headers["ratelimit-policy"]
    return match["policy"], int(match["q"]), int(match["w"])


def state_of(response: httpx.Response) -> tuple[str, int, int]:
    """(policy, remaining, seconds until reset) from the ``RateLimit`` header."""
    match = STATE_RE.match(response.headers["ratelimit"])
    assert match, response.headers["ratelimit"]
    return match["policy"], int(match["r"]), int(match["t"])


def remaining(response: httpx.Response) -> int:
    return state_of(response)[1]


def login_body(tenant: Tenant, password: str | None = None, device: str = "d") -> dict[str, Any]:
    return {
        "email": tenant.owner_email,
        "password": password or tenant.owner_password,
        "device_id": device,
    }


def assert_rate_limited(response: httpx.Response, policy: str, limit: int, path: str) -> None:
    assert response.status_code == 429, response.text
    assert response.headers["content-type"] == "application/problem+json"
    body = response.json()
    assert body["code"] == "RATE_001"
    assert body["status"] == 429
    assert body["title"] == "Rate limited"
    assert body["instance"] == path
    assert body["trace_id"] == response.headers["x-trace-id"]
    retry_after = response.headers["retry-after"]
    assert retry_after.isdigit(), retry_after
    assert 1 <= int(retry_after) <= 60
    assert policy_of(response) == (policy, limit, 60)
    assert state_of(response) == (policy, 0, int(retry_after))


# Login policy


async def test_fourth_login_in_a_minute_is_refused(database_url: str, tmp_path: Path) -> None:
    settings = make_settings(database_url, tmp_path / "data", rate_limit_login="3/minute")
    async with running_harness(settings) as harness:
        tenant = await harness.create_tenant("acme")
        await clear_of_window_edge()
        answers = [
            await harness.client.post(LOGIN, json=login_body(tenant, device=f"d{i}"))
            for i in range(3)
        ]
        refused = await harness.client.post(LOGIN, json=login_body(tenant, device="d3"))

    assert [a.status_code for a in answers] == [200, 200, 200]
    for answer in answers:
        assert policy_of(answer) == ("login", 3, 60)
        assert 1 <= state_of(answer)[2] <= 60
        assert "retry-after" not in answer.headers
    assert [remaining(a) for a in answers] == [2, 1, 0]
    assert_rate_limited(refused, "login", 3, LOGIN)


async def test_failed_logins_count_against_the_login_limit(
    database_url: str, tmp_path: Path
) -> None:
    settings = make_settings(database_url, tmp_path / "data", rate_limit_login="2/minute")
    async with running_harness(settings) as harness:
        tenant = await harness.create_tenant("acme")
        await clear_of_window_edge()
        wrong = [
            await harness.client.post(LOGIN, json=login_body(tenant, password="not-it-at-all"))
            for _ in range(2)
        ]
        right = await harness.client.post(LOGIN, json=login_body(tenant))
    assert [w.status_code for w in wrong] == [401, 401]
    assert [w.json()["code"] for w in wrong] == ["AUTH_004", "AUTH_004"]
    assert [remaining(w) for w in wrong] == [1, 0]
    assert_rate_limited(right, "login", 2, LOGIN)


async def _auth_rows(harness: Harness) -> tuple[int, int, list[tuple[str, int]]]:
    async with harness.state.database.transaction() as session:
        sessions = (
            await session.execute(select(func.count()).select_from(DeviceSession))
        ).scalar_one()
        tokens = (
            await session.execute(select(func.count()).select_from(RefreshToken))
        ).scalar_one()
        throttles = (
            await session.execute(select(LoginThrottle.email_hash, LoginThrottle.failed_count))
        ).all()
    return sessions, tokens, sorted((row[0], row[1]) for row in throttles)


async def test_a_refused_login_changes_nothing(database_url: str, tmp_path: Path) -> None:
    settings = make_settings(database_url, tmp_path / "data", rate_limit_login="2/minute")
    async with running_harness(settings) as harness:
        tenant = await harness.create_tenant("acme")
        await clear_of_window_edge()
        failed = await harness.client.post(LOGIN, json=login_body(tenant, password="wrong-one-x"))
        assert failed.status_code == 401
        ok = await harness.client.post(LOGIN, json=login_body(tenant, device="phone"))
        assert ok.status_code == 200
        before = await _auth_rows(harness)
        assert before[0] == 1
        assert before[1] == 1

        good = await harness.client.post(LOGIN, json=login_body(tenant, device="tablet"))
        bad = await harness.client.post(LOGIN, json=login_body(tenant, password="wrong-two-x"))
        after = await _auth_rows(harness)

        assert_rate_limited(good, "login", 2, LOGIN)
        assert_rate_limited(bad, "login", 2, LOGIN)
        assert "access_token" not in good.text
        assert after == before
        sessions = await harness.client.get(
            "/api/v1/auth/sessions",
            headers={"Authorization": f"Bearer {ok.json()['access_token']}"},
        )
    assert sessions.status_code == 200
    assert [s["device_id"] for s in sessions.json()["sessions"]] == ["phone"]


# Default policy: who is counted


async def test_default_policy_counts_each_user_separately(
    database_url: str, tmp_path: Path
) -> None:
    settings = make_settings(database_url, tmp_path / "data", rate_limit_default="3/minute")
    async with running_harness(settings) as harness:
        acme = await harness.create_tenant("acme")
        globex = await harness.create_tenant("globex")
        alice = await harness.owner_headers(acme, "alice-phone")
        alice_tablet = await harness.owner_headers(acme, "alice-tablet")
        bob = await harness.owner_headers(globex)
        await clear_of_window_edge()
        alice_answers = [
            await harness.client.get("/api/v1/auth/me", headers=alice) for _ in range(3)
        ]
        alice_refused = await harness.client.get("/api/v1/auth/me", headers=alice)
        # Another session of the same user shares the user's counter.
        tablet_refused = await harness.client.get("/api/v1/auth/me", headers=alice_tablet)
        bob_answer = await harness.client.get("/api/v1/auth/me", headers=bob)
        anonymous = await harness.client.get("/api/v1")

    assert [a.status_code for a in alice_answers] == [200, 200, 200]
    assert [remaining(a) for a in alice_answers] == [2, 1, 0]
    assert all(policy_of(a) == ("default", 3, 60) for a in alice_answers)
    assert_rate_limited(alice_refused, "default", 3, "/api/v1/auth/me")
    assert_rate_limited(tablet_refused, "default", 3, "/api/v1/auth/me")
    assert bob_answer.status_code == 200
    assert bob_answer.json()["email"] == globex.owner_email
    assert state_of(bob_answer)[:2] == ("default", 2)
    # Same IP as both users, but an unauthenticated caller has its own (IP) counter.
    assert anonymous.status_code == 200
    assert state_of(anonymous)[:2] == ("default", 2)


async def test_default_policy_counts_api_keys_by_key(database_url: str, tmp_path: Path) -> None:
    settings = make_settings(database_url, tmp_path / "data", rate_limit_default="4/minute")
    async with running_harness(settings) as harness:
        tenant = await harness.create_tenant("acme")
        owner = await harness.owner_headers(tenant)
        await clear_of_window_edge()
        keys = []
        for name in ("erp", "shop"):
            created = await harness.client.post(
                "/api/v1/api-keys", json={"name": name, "scopes": ["tenant:read"]}, headers=owner
            )
            assert created.status_code == 201, created.text
            keys.append(created.json()["key"])
        erp, shop = keys
        # A key this instance has not seen valid yet counts against the client's address.
        first_use = await harness.client.get("/api/v1/auth/me", headers={"X-API-Key": erp})
        # Once valid, both ways of presenting the key hit the key's own counter.
        by_key = [
            await harness.client.get("/api/v1/auth/me", headers=headers)
            for headers in (
                {"X-API-Key": erp},
                {"Authorization": f"Bearer {erp}"},
                {"X-API-Key": erp},
                {"Authorization": f"Bearer {erp}"},
            )
        ]
        key_refused = await harness.client.get("/api/v1/auth/me", headers={"X-API-Key": erp})
        other_key = [
            await harness.client.get("/api/v1/auth/me", headers={"X-API-Key": shop})
            for _ in range(2)
        ]
        # Made-up keys never get counters of their own: they use up the address's allowance.
        forged = [
            await harness.client.get(
                "/api/v1/auth/me", headers={"X-API-Key": f"hpk_fake{number}_{'x' * 40}"}
            )
            for number in range(3)
        ]
        owner_answer = await harness.client.get("/api/v1/auth/me", headers=owner)

    assert first_use.status_code == 200
    assert first_use.json()["kind"] == "api_key"
    assert remaining(first_use) == 3
    assert [a.status_code for a in by_key] == [200, 200, 200, 200]
    assert [a.json()["kind"] for a in by_key] == ["api_key"] * 4
    assert [remaining(a) for a in by_key] == [3, 2, 1, 0]
    assert_rate_limited(key_refused, "default", 4, "/api/v1/auth/me")
    assert [a.status_code for a in other_key] == [200, 200]
    assert [remaining(a) for a in other_key] == [2, 3]  # address counter, then the key's own
    assert [a.status_code for a in forged[:2]] == [401, 401]
    assert [remaining(a) for a in forged[:2]] == [1, 0]
    assert_rate_limited(forged[2], "default", 4, "/api/v1/auth/me")
    # The owner made two requests (creating the keys) under their own user counter.
    assert owner_answer.status_code == 200
    assert owner_answer.json()["kind"] == "user"
    assert remaining(owner_answer) == 1


async def test_unauthenticated_requests_are_counted_by_client_ip(
    database_url: str, tmp_path: Path
) -> None:
    settings = make_settings(database_url, tmp_path / "data", rate_limit_default="3/minute")
    async with running_harness(settings) as harness:
        other = client_from(harness, "10.1.2.3")
        try:
            await clear_of_window_edge()
            first = await harness.client.get("/api/v1")
            # An invalid token is not a user: it counts against the IP.
            bad_token = await harness.client.get(
                "/api/v1/auth/me", headers={"Authorization": "Bearer not-a-jwt"}
            )
            missing = await harness.client.get("/api/v1/nothing-here")
            # X-Forwarded-For is not trusted by the app: still the same client.
            forwarded = await harness.client.get("/api/v1", headers={"X-Forwarded-For": "10.9.9.9"})
            elsewhere = await other.get("/api/v1")
        finally:
            await other.aclose()

    assert first.status_code == 200
    assert bad_token.status_code == 401
    assert bad_token.json()["code"] == "AUTH_001"
    assert missing.status_code == 404
    assert [remaining(r) for r in (first, bad_token, missing)] == [2, 1, 0]
    assert all(policy_of(r) == ("default", 3, 60) for r in (first, bad_token, missing))
    assert_rate_limited(forwarded, "default", 3, "/api/v1")
    assert elsewhere.status_code == 200
    assert state_of(elsewhere)[:2] == ("default", 2)


# Health policy


async def test_health_policy_is_separate_from_default(database_url: str, tmp_path: Path) -> None:
    settings = make_settings(
        database_url,
        tmp_path / "data",
        rate_limit_health="2/minute",
        rate_limit_default="3/minute",
    )
    async with running_harness(settings) as harness:
        await clear_of_window_edge()
        health = [await harness.client.get("/health/live") for _ in range(2)]
        health_refused = await harness.client.get("/health/ready")
        api = [await harness.client.get("/api/v1") for _ in range(3)]
        api_refused = await harness.client.get("/api/v1")
        still_refused = await harness.client.get("/health/live")
        tenant = await harness.create_tenant("acme")
        login = await harness.client.post(LOGIN, json=login_body(tenant))

    assert [h.status_code for h in health] == [200, 200]
    assert [state_of(h)[:2] for h in health] == [("health", 1), ("health", 0)]
    assert all(policy_of(h) == ("health", 2, 60) for h in health)
    assert_rate_limited(health_refused, "health", 2, "/health/ready")
    # The exhausted health counter did not touch the default one, and the other way round.
    assert [a.status_code for a in api] == [200, 200, 200]
    assert [state_of(a)[:2] for a in api] == [("default", 2), ("default", 1), ("default", 0)]
    assert_rate_limited(api_refused, "default", 3, "/api/v1")
    assert_rate_limited(still_refused, "health", 2, "/health/live")
    # Login has a policy of its own, untouched by both.
    assert login.status_code == 200
    assert policy_of(login) == ("login", 1000, 60)
    assert remaining(login) == 999


# Storage: Redis shared between instances, memory per instance, Redis outage


async def test_redis_counters_are_shared_between_instances(
    database_url: str, redis_url: str, tmp_path: Path
) -> None:
    import redis.asyncio as redis_asyncio

    first_settings = make_settings(
        database_url, tmp_path / "data", redis_url=redis_url, rate_limit_login="3/minute"
    )
    prefix = first_settings.redis_key_prefix
    second_settings = make_settings(
        database_url,
        tmp_path / "data",
        redis_url=redis_url,
        redis_key_prefix=prefix,
        rate_limit_login="3/minute",
    )
    # Same Redis, another prefix: another deployment, its own counters.
    third_settings = make_settings(
        database_url, tmp_path / "data", redis_url=redis_url, rate_limit_login="3/minute"
    )
    assert third_settings.redis_key_prefix != prefix
    probe = redis_asyncio.from_url(redis_url)
    try:
        async with (
            running_harness(first_settings) as one,
            running_harness(second_settings) as two,
            running_harness(third_settings) as three,
        ):
            tenant = await one.create_tenant("acme")
            body = login_body(tenant)
            answers = [
                await one.client.post(LOGIN, json=body),
                await two.client.post(LOGIN, json=body),
                await one.client.post(LOGIN, json=body),
            ]
            refused_two = await two.client.post(LOGIN, json=body)
            refused_one = await one.client.post(LOGIN, json=body)
            elsewhere = await three.client.post(LOGIN, json=body)
            stored = [key async for key in probe.scan_iter(match=f"{prefix}:rl*")]
        assert [a.status_code for a in answers] == [200, 200, 200]
        assert [remaining(a) for a in answers] == [2, 1, 0]
        assert_rate_limited(refused_two, "login", 3, LOGIN)
        assert_rate_limited(refused_one, "login", 3, LOGIN)
        assert elsewhere.status_code == 200
        assert remaining(elsewhere) == 2
        assert stored, "the counters live in Redis under the configured prefix"
        assert all(b"login" in key for key in stored)
    finally:
        for name in (prefix, third_settings.redis_key_prefix):
            keys = [key async for key in probe.scan_iter(match=f"{name}:*")]
            if keys:
                await probe.delete(*keys)
        await probe.aclose()


async def test_memory_counters_are_per_instance(database_url: str, tmp_path: Path) -> None:
    common: dict[str, Any] = {"redis_url": None, "rate_limit_login": "3/minute"}
    first_settings = make_settings(database_url, tmp_path / "data", **common)
    second_settings = make_settings(
        database_url,
        tmp_path / "data",
        redis_key_prefix=first_settings.redis_key_prefix,
        **common,
    )
    async with running_harness(first_settings) as one, running_harness(second_settings) as two:
        tenant = await one.create_tenant("acme")
        body = login_body(tenant)
        await clear_of_window_edge()
        answers = [await one.client.post(LOGIN, json=body) for _ in range(3)]
        refused = await one.client.post(LOGIN, json=body)
        other = [await two.client.post(LOGIN, json=body) for _ in range(2)]
    assert [a.status_code for a in answers] == [200, 200, 200]
    assert_rate_limited(refused, "login", 3, LOGIN)
    assert [o.status_code for o in other] == [200, 200]
    assert [remaining(o) for o in other] == [2, 1]


async def test_unreachable_redis_lets_requests_through(database_url: str, tmp_path: Path) -> None:
    settings = make_settings(
        database_url,
        tmp_path / "data",
        redis_url="redis://127.0.0.1:1/0",
        rate_limit_login="1/minute",
        rate_limit_default="1/minute",
        rate_limit_health="1/minute",
    )
    async with running_harness(settings) as harness:
        tenant = await harness.create_tenant("acme")
        logins = [
            await harness.client.post(LOGIN, json=login_body(tenant, device=f"d{i}"))
            for i in range(3)
        ]
        headers = {"Authorization": f"Bearer {logins[0].json()['access_token']}"}
        api = [await harness.client.get("/api/v1/auth/me", headers=headers) for _ in range(3)]
        live = [await harness.client.get("/health/live") for _ in range(2)]
        ready = await harness.client.get("/health/ready")

    answers = [*logins, *api, *live]
    assert [a.status_code for a in answers] == [200] * 8
    for answer in [*answers, ready]:
        for name in RATE_HEADERS:
            assert name not in answer.headers
    assert ready.status_code == 503
    assert ready.headers["content-type"] == "application/problem+json"
    body = ready.json()
    assert body["code"] == "UNAVAILABLE"
    assert body["checks"] == {"database": "ok", "redis": "failed", "storage": "ok"}
    assert "redis" in body["detail"]


async def test_disabled_rate_limits_send_no_headers_and_never_refuse(
    database_url: str, tmp_path: Path
) -> None:
    settings = make_settings(
        database_url,
        tmp_path / "data",
        rate_limit_enabled=False,
        rate_limit_login="1/minute",
        rate_limit_default="1/minute",
        rate_limit_health="1/minute",
    )
    async with running_harness(settings) as harness:
        tenant = await harness.create_tenant("acme")
        logins = [
            await harness.client.post(LOGIN, json=login_body(tenant, device=f"d{i}"))
            for i in range(3)
        ]
        wrong = [
            await harness.client.post(LOGIN, json=login_body(tenant, password="nope-nope-1"))
            for _ in range(2)
        ]
        headers = {"Authorization": f"Bearer {logins[0].json()['access_token']}"}
        api = [await harness.client.get("/api/v1/auth/me", headers=headers) for _ in range(3)]
        anonymous = [await harness.client.get("/api/v1") for _ in range(3)]
        health = [await harness.client.get("/health/ready") for _ in range(3)]

    assert [r.status_code for r in logins] == [200] * 3
    assert [r.status_code for r in wrong] == [401] * 2
    answers = [*logins, *wrong, *api, *anonymous, *health]
    assert [r.status_code for r in [*api, *anonymous, *health]] == [200] * 9
    for answer in answers:
        for name in RATE_HEADERS:
            assert name not in answer.headers


@pytest.mark.parametrize("spec", ["3/minute", "3 per minute"])
def test_rate_limit_decision_headers_follow_the_ietf_draft(spec: str) -> None:
    from limits import parse

    from homeport.kit.ratelimit import RateLimitDecision

    item = parse(spec)
    decision = RateLimitDecision(
        policy="login",
        allowed=False,
        limit=item.amount,
        window_seconds=item.get_expiry(),
        remaining=0,
        reset_seconds=17,
    )
    assert decision.headers() == {
        "RateLimit-Policy": '"login";q=3;w=60',
        "RateLimit": '"login";r=0;t=17',
    }


# The in-process counters against the library's


class _Clock:
    def __init__(self, start: float) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now


@pytest.mark.parametrize("seed", range(6))
async def test_local_windows_decide_as_the_library_memory_storage(
    seed: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The same hits at the same (made-up) times get the same decisions, across window
    boundaries, refusals and idle windows."""
    import random

    from limits.aio.storage import MemoryStorage

    from homeport.kit.ratelimit import LocalWindows, RateLimiter

    clock = _Clock(1_700_000_000.0 + seed * 7.3)
    monkeypatch.setattr(time, "time", clock)
    policies = {"default": "5/10second", "login": "3/minute"}
    ours = RateLimiter(LocalWindows(), policies)
    library = RateLimiter(MemoryStorage(), policies)
    randomly = random.Random(seed)
    decisions = []
    for _ in range(300):
        clock.now += randomly.choice([0.0, 0.01, 0.4, 1.3, 3.7, 9.9, 25.0])
        policy = randomly.choice(["default", "login"])
        identity = randomly.choice(["user:a", "user:b", "ip:10.0.0.1"])
        expected = await library.hit(policy, identity)
        decided = await ours.hit(policy, identity)
        assert decided == expected, (clock.now, policy, identity)
        decisions.append(decided.allowed)
    # Both kinds were compared.
    assert True in decisions
    assert False in decisions


def test_local_windows_forget_idle_keys(monkeypatch: pytest.MonkeyPatch) -> None:
    from homeport.kit.ratelimit import LocalWindows

    clock = _Clock(1_700_000_000.0)
    monkeypatch.setattr(time, "time", clock)
    windows = LocalWindows(purge_every=10)
    for number in range(9):
        windows.hit(f"idle-{number}", 10, 60)
    assert len(windows) == 9
    clock.now += 60  # the next window: the idle keys still weigh in
    assert windows.hit("busy", 10, 60)[:2] == (True, 9)  # the tenth hit: a purge
    assert len(windows) == 10
    clock.now += 60  # two windows on: they weigh nothing any more
    for _ in range(10):
        windows.hit("busy", 100, 60)
    assert len(windows) == 1
