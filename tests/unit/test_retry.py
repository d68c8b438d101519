"""Backoff: exponential ceiling, full jitter, a floor, and a cap."""

import asyncio
import itertools
import random

import pytest

from cryptodesk.services.retry import backoff_delays, retry_forever


def test_delays_grow_to_the_cap_with_jitter_below_the_ceiling():
    delays = list(itertools.islice(backoff_delays(0.1, 2.0, rng=random.Random(1)), 40))
    ceilings = [min(2.0, 0.1 * 2**n) for n in range(40)]
    assert all(0.01 <= d <= c for d, c in zip(delays, ceilings, strict=True))
    # Jitter: the waits at the cap are spread, not all equal to it.
    at_cap = delays[10:]
    assert len({round(d, 6) for d in at_cap}) > 20
    assert max(at_cap) > 1.0
    assert min(at_cap) < 1.0


def test_delays_have_a_floor():
    class Zero(random.Random):
        def uniform(self, a: float, b: float) -> float:
            return 0.0

    assert list(itertools.islice(backoff_delays(0.5, 5.0, rng=Zero()), 3)) == [0.05] * 3


def test_retry_forever_retries_until_success_and_reports():
    attempts: list[int] = []
    failures: list[str] = []
    recovered: list[bool] = []

    async def step() -> str:
        attempts.append(1)
        if len(attempts) < 3:
            raise ConnectionError("refused")
        return "ok"

    result = asyncio.run(
        retry_forever(
            step,
            what="write",
            on_failure=failures.append,
            on_success=lambda: recovered.append(True),
            initial=0.001,
            cap=0.002,
        )
    )
    assert result == "ok"
    assert len(attempts) == 3
    assert failures == ["write: refused", "write: refused"]
    assert recovered == [True]


def test_retry_forever_lets_cancellation_through():
    async def main() -> None:
        async def never() -> None:
            raise OSError("down")

        task = asyncio.create_task(retry_forever(never, what="x", initial=10, cap=10))
        await asyncio.sleep(0.01)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(main())
