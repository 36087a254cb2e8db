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
from limits.aio.storage import RedisStorage, Storage
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


class LocalWindows:
    """Sliding window counters of one process, as the ``limits`` library's memory storage and
    sliding-window-counter strategy keep them (windows aligned on multiples of the window's
    length; the previous window's count weighted by the share of it still inside the sliding
    window), in a plain dict.

    Through the library's asynchronous memory storage, a request's hit and its window's
    statistics cost about 41 µs, a tenth of a small write (timed in process, W3); here a few.
    Shared counters (several instances) stay with the library on Redis.
    """

    def __init__(self, purge_every: int = 10_000) -> None:
        # key -> [window number, count in it, count in the window before]
        self._windows: dict[str, list[int]] = {}
        self._purge_every = purge_every
        self._hits = 0

    def hit(self, key: str, limit: int, window_seconds: int) -> tuple[bool, int, float]:
        """(allowed, remaining, when the next request is freed: a ``time.time()``) after one
        hit of ``key``."""
        now = time.time()
        number = int(now / window_seconds)
        entry = self._window(key, number)
        # Seconds left of the current window, computed for each window as the library does
        # (the same float arithmetic, so the same rounding of the headers' seconds).
        previous_left = (1 - (((now - window_seconds) / window_seconds) % 1)) * window_seconds
        current_left = (1 - ((now / window_seconds) % 1)) * window_seconds
        # The previous window's requests still inside the sliding window.
        previous = entry[2] * previous_left / window_seconds if entry[2] else 0.0
        allowed = math.floor(previous + entry[1]) + 1 <= limit
        if allowed:
            entry[1] += 1
        remaining = max(0, limit - math.floor(previous + entry[1]))
        reset_in = math.inf
        if entry[2]:
            reset_in = previous_left % (window_seconds / entry[2])
        if entry[1]:
            reset_in = min(reset_in, (current_left + window_seconds) % window_seconds)
        self._hits += 1
        if self._hits >= self._purge_every:
            self._purge(number)
        return allowed, remaining, now if reset_in == math.inf else now + reset_in

    def _window(self, key: str, number: int) -> list[int]:
        entry = self._windows.get(key)
        if entry is None:
            entry = self._windows[key] = [number, 0, 0]
        elif entry[0] != number:
            entry[2] = entry[1] if entry[0] == number - 1 else 0
            entry[0], entry[1] = number, 0
        return entry

    def _purge(self, number: int) -> None:
        """Forget keys with no request in this window or the one before (bounded memory)."""
        self._hits = 0
        self._windows = {
            key: entry for key, entry in self._windows.items() if entry[0] >= number - 1
        }

    def reset(self) -> None:
        self._windows.clear()

    def __len__(self) -> int:
        """Keys held."""
        return len(self._windows)


def make_storage(
    redis_url: str | None, connection_pool: Any = None, key_prefix: str = "homeport:rl"
) -> Storage | LocalWindows:
    """In this process by default; Redis (sharing the app's connection pool, which the app
    closes)."""
    if not redis_url:
        return LocalWindows()
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

    def __init__(self, storage: Storage | LocalWindows, policies: dict[str, str]) -> None:
        self._storage = storage
        self._strategy = (
            None if isinstance(storage, LocalWindows) else SlidingWindowCounterRateLimiter(storage)
        )
        self._policies: dict[str, RateLimitItem] = {
            name: parse(spec) for name, spec in policies.items()
        }

    def policy(self, name: str) -> RateLimitItem:
        return self._policies[name]

    async def hit(self, policy: str, identity: str) -> RateLimitDecision:
        item = self._policies[policy]
        if isinstance(self._storage, LocalWindows):
            allowed, remaining, reset_at = self._storage.hit(
                item.key_for(policy, identity), item.amount, item.get_expiry()
            )
        else:
            assert self._strategy is not None
            allowed = await self._strategy.hit(item, policy, identity)
            stats = await self._strategy.get_window_stats(item, policy, identity)
            remaining, reset_at = stats.remaining, stats.reset_time
        reset = max(1, math.ceil(reset_at - time.time()))
        return self._decision(policy, item, allowed, remaining, reset)

    @staticmethod
    def _decision(
        policy: str, item: RateLimitItem, allowed: bool, remaining: int, reset: int
    ) -> RateLimitDecision:
        return RateLimitDecision(
            policy=policy,
            allowed=allowed,
            limit=item.amount,
            window_seconds=item.get_expiry(),
            remaining=max(0, remaining),
            reset_seconds=reset,
        )

    async def reset(self) -> None:
        if isinstance(self._storage, LocalWindows):
            self._storage.reset()
        else:
            await self._storage.reset()

    async def check_storage(self) -> bool:
        if isinstance(self._storage, LocalWindows):
            return True
        return await self._storage.check()
