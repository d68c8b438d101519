"""Reconnect and retry waits: capped exponential backoff with full jitter.

Full jitter (each wait drawn uniformly between zero and the exponential
ceiling) keeps many clients that lost the same server from coming back in
lockstep when it returns. Pure: adapters and services both use it.
"""

from __future__ import annotations

import random
from collections.abc import Iterator


def backoff_delays(
    initial: float, cap: float, *, rng: random.Random | None = None
) -> Iterator[float]:
    """Endless waits: attempt ``n`` sleeps uniform(0, min(cap, initial * 2**n)).

    Each wait is at least ``initial / 10`` so a fast-failing step never spins.
    """
    draw = (rng or random).uniform
    ceiling = initial
    while True:
        yield max(initial / 10, draw(0, ceiling))
        ceiling = min(cap, ceiling * 2)
