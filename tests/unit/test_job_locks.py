"""The in-process job lock: the embedded default's one-run-at-a-time guarantee."""

from __future__ import annotations

import pytest

from cryptodesk.adapters.locks.memory import MemoryJobLock


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


async def test_one_holder_per_name_until_released() -> None:
    lock = MemoryJobLock()
    token = await lock.acquire("a", ttl=10)
    assert token is not None
    assert await lock.acquire("a", ttl=10) is None
    assert await lock.acquire("b", ttl=10) is not None  # names are independent
    assert await lock.release("a", "other") is False
    assert await lock.release("a", token) is True
    assert await lock.release("a", token) is False
    assert await lock.acquire("a", ttl=10) is not None


async def test_a_lease_expires_unless_extended() -> None:
    clock = Clock()
    lock = MemoryJobLock(clock=clock)
    token = await lock.acquire("a", ttl=10)
    assert token is not None
    clock.now += 9
    assert await lock.extend("a", token, ttl=10) is True
    clock.now += 9  # 18 s after taking it, 9 s after the renewal
    assert await lock.acquire("a", ttl=10) is None
    clock.now += 1
    newer = await lock.acquire("a", ttl=10)
    assert newer is not None
    # The expired holder can neither renew nor drop the new lease.
    assert await lock.extend("a", token, ttl=10) is False
    assert await lock.release("a", token) is False
    assert await lock.release("a", newer) is True


async def test_ttl_must_be_positive() -> None:
    with pytest.raises(ValueError, match="ttl"):
        await MemoryJobLock().acquire("a", ttl=0)
