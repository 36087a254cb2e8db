"""Rate limits on the ``limits`` library: in memory by default, Redis when configured.

Answers carry the IETF ``RateLimit-Policy`` / ``RateLimit`` headers; a refusal is a 429 with
``Retry-After`` and code ``RATE_001``.
"""

from __future__ import annotations

import math
import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

from limits import RateLimitItem, parse
from limits.aio.storage import MemoryStorage, RedisStorage, Storage
from limits.aio.strategies import SlidingWindowCounterRateLimiter


@dataclass(frozen=True)
class RateLimitDecision:
    policy: str
    allowed: bool
    limit: int
    window_seconds: int
    remaining: int
    reset_seconds: int

    def headers(self) -> dict[str, str]:
        return {
            "RateLimit-Policy": f'"{self.policy}";q={self.limit};w={self.window_seconds}',
            "RateLimit": f'"{self.policy}";r={self.remaining};t={self.reset_seconds}',
        }


def make_storage(
    redis_url: str | None, connection_pool: Any = None, key_prefix: str = "homeport:rl"
) -> Storage:
    """Memory by default; Redis (sharing the app's connection pool, which the app closes)."""
    if not redis_url:
        return MemoryStorage()
    uri = redis_url if redis_url.startswith("async+") else f"async+{redis_url}"
    options: dict[str, Any] = {}
    if connection_pool is not None:
        options["connection_pool"] = connection_pool
    return RedisStorage(uri, implementation="redispy", key_prefix=key_prefix, **options)


class RecentlyVerified:
    """Credentials (by hash) that authenticated lately: a bounded set whose entries expire.

    The rate limiter runs before authentication. Counting a request per API key is only safe
    for a key known to be real; otherwise every made-up key would get a fresh counter.
    """

    def __init__(self, ttl_seconds: float = 300.0, max_items: int = 10_000) -> None:
        self.ttl_seconds = ttl_seconds
        self.max_items = max_items
        self._expires_at: OrderedDict[str, float] = OrderedDict()

    def add(self, credential_hash: str) -> None:
        self._expires_at.pop(credential_hash, None)
        self._expires_at[credential_hash] = time.monotonic() + self.ttl_seconds
        while len(self._expires_at) > self.max_items:
            self._expires_at.popitem(last=False)

    def __contains__(self, credential_hash: object) -> bool:
        if not isinstance(credential_hash, str):
            return False
        expires_at = self._expires_at.get(credential_hash)
        if expires_at is None:
            return False
        if expires_at < time.monotonic():
            del self._expires_at[credential_hash]
            return False
        return True


class RateLimiter:
    """Named policies ("login", "health", "default", ...) keyed by caller identity."""

    def __init__(self, storage: Storage, policies: dict[str, str]) -> None:
        self._storage = storage
        self._strategy = SlidingWindowCounterRateLimiter(storage)
        self._policies: dict[str, RateLimitItem] = {
            name: parse(spec) for name, spec in policies.items()
        }

    def policy(self, name: str) -> RateLimitItem:
        return self._policies[name]

    async def hit(self, policy: str, identity: str) -> RateLimitDecision:
        item = self._policies[policy]
        allowed = await self._strategy.hit(item, policy, identity)
        stats = await self._strategy.get_window_stats(item, policy, identity)
        reset = max(1, math.ceil(stats.reset_time - time.time()))
        return RateLimitDecision(
            policy=policy,
            allowed=allowed,
            limit=item.amount,
            window_seconds=item.get_expiry(),
            remaining=max(0, stats.remaining),
            reset_seconds=reset,
        )

    async def reset(self) -> None:
        await self._storage.reset()

    async def check_storage(self) -> bool:
        return await self._storage.check()
