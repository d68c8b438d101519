"""The in-process rate limiter: the single-process default and Redis's fallback.

Memory stays bounded however many clients arrive. Each tier keeps its buckets
in least-recently-hit order, and every hit first drops the buckets at the old
end that are full again (a full bucket is the same as none). Within one tier
every bucket refills in at most ``burst / rate`` seconds, so a tier holds only
the keys hit within that span, and never more than ``max_keys``: past that the
least recently hit bucket is forgotten (its key starts again with a full
bucket, a little lenient, which beats running out of memory).
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable

from cryptodesk.adapters.ratelimit.base import EPSILON, Decision, Tier, check_cost, decide

DEFAULT_MAX_KEYS = 100_000


class MemoryRateLimiter:
    """Token buckets in this process; ``clock`` is monotonic seconds."""

    def __init__(
        self, *, clock: Callable[[], float] = time.monotonic, max_keys: int = DEFAULT_MAX_KEYS
    ) -> None:
        if max_keys < 1:
            raise ValueError("max_keys must be at least 1")
        self._clock = clock
        self._max_keys = max_keys
        # tier name -> key -> time the bucket is full again, least recently hit first
        self._tiers: dict[str, OrderedDict[str, float]] = {}

    async def hit(self, key: str, tier: Tier, cost: float = 1) -> Decision:
        return self.take(key, tier, cost)

    def take(self, key: str, tier: Tier, cost: float = 1) -> Decision:
        """``hit`` without the coroutine: it never waits, so it is atomic in the loop."""
        check_cost(tier, cost)
        now = self._clock()
        buckets = self._tiers.setdefault(tier.name, OrderedDict())
        full_at = max(buckets.pop(key, now), now)
        tokens = tier.burst - (full_at - now) * tier.rate
        allowed = tokens + EPSILON >= cost
        if allowed:
            tokens -= cost
            full_at += cost / tier.rate
        if full_at > now:
            buckets[key] = full_at  # now the most recently hit
        self._forget_full(buckets, now)
        return decide(tier, cost, tokens, allowed=allowed)

    def _forget_full(self, buckets: OrderedDict[str, float], now: float) -> None:
        while buckets:
            oldest = next(iter(buckets))
            if buckets[oldest] > now and len(buckets) <= self._max_keys:
                return
            del buckets[oldest]

    def size(self, tier: str | None = None) -> int:
        """Buckets held (in one tier, or in all)."""
        if tier is not None:
            return len(self._tiers.get(tier, ()))
        return sum(len(b) for b in self._tiers.values())

    async def close(self) -> None:
        self._tiers.clear()
