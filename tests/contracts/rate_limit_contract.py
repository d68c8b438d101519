"""The RateLimiter contract: every limiter (memory, Redis) passes these same tests.

Use it by subclassing and supplying a ready limiter and a way to let time pass::

    class TestRedisRateLimiter(RateLimitContract):
        @pytest_asyncio.fixture
        async def limiter(self, redis_url): ...  # connect, yield, close

        async def advance(self, seconds): await asyncio.sleep(seconds)

The memory limiter runs on a fake clock, so its numbers are exact; Redis runs
on its own clock, so its tests sleep for real, briefly. Rates are chosen so a
few milliseconds of real time between two hits never change a whole number
(remaining tokens, Retry-After) the tests compare. Every test uses keys of its
own, since a real server is shared between tests.
"""

from __future__ import annotations

import uuid

import pytest

from cryptodesk.adapters.ratelimit.base import Decision, RateLimiter, Tier


class RateLimitContract:
    async def advance(self, seconds: float) -> None:
        """Let ``seconds`` pass for the limiter."""
        raise NotImplementedError

    def unique_key(self) -> str:
        return f"contract:{uuid.uuid4().hex[:12]}"

    async def test_a_full_bucket_allows_its_burst_then_denies(self, limiter: RateLimiter) -> None:
        tier = Tier("t", rate=0.5, burst=3)  # a token every 2 s
        key = self.unique_key()
        hits = [await limiter.hit(key, tier) for _ in range(3)]
        assert [(d.allowed, d.limit, d.remaining, d.retry_after_seconds) for d in hits] == [
            (True, 3, 2, 0),
            (True, 3, 1, 0),
            (True, 3, 0, 0),
        ]
        assert hits[0].reset_seconds == pytest.approx(2.0, abs=0.1)
        assert hits[2].reset_seconds == pytest.approx(6.0, abs=0.1)
        denied = await limiter.hit(key, tier)
        assert (denied.allowed, denied.limit, denied.remaining) == (False, 3, 0)
        assert denied.retry_after_seconds == 2
        assert denied.reset_seconds == pytest.approx(6.0, abs=0.1)

    async def test_retry_after_is_the_time_until_cost_tokens_rounded_up(
        self, limiter: RateLimiter
    ) -> None:
        key = self.unique_key()
        slow = Tier("slow", rate=0.25, burst=1)  # a token every 4 s
        assert (await limiter.hit(key, slow)).allowed
        denied = await limiter.hit(key, slow)
        assert (denied.allowed, denied.remaining, denied.retry_after_seconds) == (False, 0, 4)
        fast = Tier("fast", rate=100, burst=1)  # 10 ms: still at least one second
        assert (await limiter.hit(key, fast)).allowed
        denied = await limiter.hit(key, fast)
        if not denied.allowed:  # on a real clock 10 ms may have passed
            assert denied.retry_after_seconds == 1

    async def test_the_bucket_refills_at_its_rate_up_to_its_burst(
        self, limiter: RateLimiter
    ) -> None:
        tier = Tier("t", rate=1, burst=2)
        key = self.unique_key()
        assert [(await limiter.hit(key, tier)).allowed for _ in range(3)] == [True, True, False]
        await self.advance(0.5)  # half a token: not yet
        half = await limiter.hit(key, tier)
        assert (half.allowed, half.remaining, half.retry_after_seconds) == (False, 0, 1)
        assert half.reset_seconds == pytest.approx(1.5, abs=0.2)
        await self.advance(0.6)  # 1.1 tokens
        one = await limiter.hit(key, tier)
        assert (one.allowed, one.remaining) == (True, 0)
        await self.advance(5)  # full again, and no more than full
        full = [await limiter.hit(key, tier) for _ in range(3)]
        assert [(d.allowed, d.remaining) for d in full] == [(True, 1), (True, 0), (False, 0)]

    async def test_a_denied_hit_takes_nothing(self, limiter: RateLimiter) -> None:
        tier = Tier("t", rate=1, burst=5)
        key = self.unique_key()
        first = await limiter.hit(key, tier, 3)
        assert (first.allowed, first.remaining) == (True, 2)
        denied = await limiter.hit(key, tier, 3)
        assert (denied.allowed, denied.remaining, denied.retry_after_seconds) == (False, 2, 1)
        rest = await limiter.hit(key, tier, 2)
        assert (rest.allowed, rest.remaining) == (True, 0)

    async def test_costs_above_one_and_fractions(self, limiter: RateLimiter) -> None:
        tier = Tier("t", rate=0.5, burst=10)
        key = self.unique_key()
        big = await limiter.hit(key, tier, 7)
        assert (big.allowed, big.remaining) == (True, 3)
        assert big.reset_seconds == pytest.approx(14.0, abs=0.1)
        half = await limiter.hit(key, tier, 0.5)
        assert (half.allowed, half.remaining) == (True, 2)  # 2.5 tokens left
        denied = await limiter.hit(key, tier, 5)
        # 2.5 more tokens at 0.5 per second
        assert (denied.allowed, denied.remaining, denied.retry_after_seconds) == (False, 2, 5)
        peek = await limiter.hit(key, tier, 0)
        assert (peek.allowed, peek.remaining) == (True, 2)

    async def test_a_cost_no_bucket_can_pay_is_a_caller_error(self, limiter: RateLimiter) -> None:
        tier = Tier("t", rate=1, burst=5)
        with pytest.raises(ValueError, match=r"cost 6 is outside 0\.\.5 \(the burst of tier t\)"):
            await limiter.hit(self.unique_key(), tier, 6)
        with pytest.raises(ValueError, match="cost -1 is outside"):
            await limiter.hit(self.unique_key(), tier, -1)

    async def test_keys_and_tiers_have_separate_buckets(self, limiter: RateLimiter) -> None:
        tier = Tier("t", rate=0.5, burst=1)
        other_tier = Tier("u", rate=0.5, burst=1)
        a, b = self.unique_key(), self.unique_key()
        assert (await limiter.hit(a, tier)).allowed
        assert not (await limiter.hit(a, tier)).allowed
        decisions: list[Decision] = [
            await limiter.hit(b, tier),
            await limiter.hit(a, other_tier),
        ]
        assert [(d.allowed, d.remaining) for d in decisions] == [(True, 0), (True, 0)]
        assert not (await limiter.hit(a, tier)).allowed

    async def test_keys_of_any_text_and_length(self, limiter: RateLimiter) -> None:
        tier = Tier("login", rate=0.5, burst=1)
        base = self.unique_key()
        keys = [f"{base}|ana@acme.test", f"{base}|ÉTH/€ {{x}}", f"{base}|" + "x" * 5000]
        for key in keys:
            assert (await limiter.hit(key, tier)).allowed
        for key in keys:
            assert not (await limiter.hit(key, tier)).allowed
