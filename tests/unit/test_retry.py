"""Backoff: exponential ceiling, full jitter, a floor, and a cap (retry_forever itself
is tested in test_services.py)."""

import itertools
import random

from cryptodesk.domain.backoff import backoff_delays


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
