"""The request rate limiter: one token bucket per (tier, key).

A tier is a refill rate and a burst: a bucket starts full with ``burst``
tokens, refills at ``rate`` tokens per second up to ``burst``, and a hit of
``cost`` tokens is allowed when that many are there (and takes them) or
denied (and takes nothing, so a client hammering a full limit does not push
its own recovery further away). Two implementations pass
``tests/contracts/rate_limit_contract.py``: in-process (memory.py) and Redis
(redis.py, shared by every API worker).

Both keep a bucket as one number, the time it will be full again: tokens at
``now`` are ``burst - (full_at - now) * rate``. A bucket whose ``full_at`` has
passed is the same as no bucket, so idle buckets cost no memory.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Protocol

# Refill arithmetic in floating point may land a hair below a whole token
# (0.1 s * 10/s = 0.9999999999999999): within this, a token is there.
EPSILON = 1e-9


@dataclass(frozen=True, slots=True)
class Tier:
    """A named limit: ``rate`` tokens per second refill a bucket of ``burst``."""

    name: str
    rate: float
    burst: int

    def __post_init__(self) -> None:
        if not (math.isfinite(self.rate) and self.rate > 0):
            raise ValueError(f"tier {self.name}: rate must be a positive number per second")
        if self.burst < 1:
            raise ValueError(f"tier {self.name}: burst must be at least 1")

    @property
    def refill_seconds(self) -> float:
        """From empty to full."""
        return self.burst / self.rate


@dataclass(frozen=True, slots=True)
class Decision:
    """The outcome of one hit, with what the RateLimit headers report.

    ``remaining`` is whole tokens left (rounded down), ``reset_seconds`` the
    time until the bucket is full again, ``retry_after_seconds`` the whole
    seconds until ``cost`` tokens are there (0 when allowed, at least 1 when
    denied).
    """

    allowed: bool
    limit: int
    remaining: int
    reset_seconds: float
    retry_after_seconds: int


class RateLimiter(Protocol):
    async def hit(self, key: str, tier: Tier, cost: float = 1) -> Decision:
        """Take ``cost`` tokens from the bucket of ``key`` in ``tier`` if they are there."""
        ...

    async def close(self) -> None: ...


def check_cost(tier: Tier, cost: float) -> None:
    """A cost no full bucket could pay would be denied forever: a caller's bug."""
    if not (math.isfinite(cost) and 0 <= cost <= tier.burst):
        raise ValueError(f"cost {cost} is outside 0..{tier.burst} (the burst of tier {tier.name})")


def decide(tier: Tier, cost: float, tokens: float, *, allowed: bool) -> Decision:
    """The decision after a hit left ``tokens`` in the bucket."""
    tokens = min(float(tier.burst), max(0.0, tokens))
    retry = 0 if allowed else max(1, math.ceil((cost - tokens) / tier.rate - EPSILON))
    return Decision(
        allowed=allowed,
        limit=tier.burst,
        remaining=math.floor(tokens + EPSILON),
        reset_seconds=(tier.burst - tokens) / tier.rate,
        retry_after_seconds=retry,
    )
