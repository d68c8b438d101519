"""The volatility circuit breaker: worked examples, cool-down rules, exact sums."""

from __future__ import annotations

import math
import random
from collections import deque

import numpy as np
import pytest

from cryptodesk.analytics.vol_breaker import BreakerSettings, BreakerState, VolatilityBreaker

T0 = 1_714_521_600_000  # 2024-05-01T00:00:00Z
M = 60_000
# Short window 3 returns, baseline 4 returns before it, halt above 2x, 5 minutes.
SMALL = BreakerSettings(short_window=3, long_window=4, multiple=2.0, cooldown_ms=5 * M)
CALM = [0.01, -0.01] * 4  # 8 returns: both windows full, ratio 1
SQRT_4_3 = math.sqrt(4 / 3)


class Feed:
    """Closes built from chosen log returns, one candle a minute."""

    def __init__(self, breaker: VolatilityBreaker, first: float = 100.0) -> None:
        self.breaker = breaker
        self.k = 0
        self.close = first
        assert breaker.update(T0, first) is None

    def returns(self, rs: list[float]) -> list[tuple[int, BreakerState]]:
        """Feed the returns; the transitions with the candle index they came at."""
        out = []
        for r in rs:
            self.k += 1
            self.close *= math.exp(r)
            change = self.breaker.update(T0 + self.k * M, self.close)
            if change is not None:
                out.append((self.k, change))
        return out


def breaker(settings: BreakerSettings = SMALL) -> VolatilityBreaker:
    return VolatilityBreaker("sim", "BTC/USDT", settings, since_ms=T0)


def test_calm_market_stays_active_with_ratio_one() -> None:
    feed = Feed(breaker())
    assert feed.returns(CALM) == []
    state = feed.breaker.state
    # short = (-1, +1, -1)% and baseline (-1, +1, -1, +1)%: both 0.01 * sqrt(4/3).
    assert state.state == "active"
    assert state.since_ms == T0
    assert state.short_vol == pytest.approx(0.01 * SQRT_4_3, rel=1e-9)
    assert state.long_vol == pytest.approx(0.01 * SQRT_4_3, rel=1e-9)
    assert state.ratio == pytest.approx(1.0, rel=1e-9)
    assert state.reason == "watching since the first candle"


def test_a_violent_move_halts_with_both_vols_and_the_ratio() -> None:
    feed = Feed(breaker())
    feed.returns(CALM)
    changes = feed.returns([0.05])
    # short = (+1, -1, +5)%: mean 5/3, squares (4 + 64 + 100)/9 -> var 84/9 (x 1e-4);
    # baseline (+1, -1, +1, -1)%: var 4/3 -> ratio sqrt(7) = 2.6458 > 2.
    assert len(changes) == 1
    k, state = changes[0]
    assert k == 9
    assert state.state == "halted"
    assert state.since_ms == T0 + 9 * M
    assert state.short_vol == pytest.approx(0.01 * math.sqrt(84 / 9), rel=1e-9)
    assert state.long_vol == pytest.approx(0.01 * SQRT_4_3, rel=1e-9)
    assert state.ratio == pytest.approx(math.sqrt(7), rel=1e-9)
    assert state.reason == (
        "short-window volatility 0.0305505 is 2.646x the long-window 0.011547, above the 2x limit"
    )
    assert feed.breaker.cooldown_until == T0 + 14 * M


def test_reactivates_once_the_cool_down_is_over_and_the_storm_has_passed() -> None:
    feed = Feed(breaker())
    feed.returns([*CALM, 0.05])
    # Calm again at once: still halted until minute 14, then active.
    changes = feed.returns([-0.01, 0.01, -0.01, 0.01, -0.01, 0.01])
    assert [(k, s.state, s.since_ms) for k, s in changes] == [(14, "active", T0 + 14 * M)]
    state = changes[0][1]
    # short = r12..r14 = (-1, +1, -1)%; baseline r8..r11 = (-1, +5, -1, +1)%.
    baseline = np.std([-0.01, 0.05, -0.01, 0.01], ddof=1)
    assert state.long_vol == pytest.approx(baseline, rel=1e-9)
    assert state.short_vol == pytest.approx(0.01 * SQRT_4_3, rel=1e-9)
    assert state.reason.startswith("cool-down of 300 s over and short-window volatility")
    assert state.reason.endswith("within the 2x limit")
    assert feed.breaker.cooldown_until is None


def test_a_storm_still_raging_at_the_check_restarts_the_cool_down() -> None:
    feed = Feed(breaker())
    feed.returns([*CALM, 0.05])
    # Minute 14: short (-50, +50, -50)%, baseline r8..r11 = (-1, +5, -5, +5)% with
    # var 24e-4: ratio sqrt(0.25 * 4/3 / 0.0024) = 11.79.
    assert feed.returns([-0.05, 0.05, -0.5, 0.5, -0.5]) == []
    assert feed.breaker.state.state == "halted"
    assert feed.breaker.state.since_ms == T0 + 9 * M  # the halt began at the first move
    assert feed.breaker.state.ratio == pytest.approx(math.sqrt(0.25 * 4 / 3 / 0.0024), rel=1e-9)
    assert feed.breaker.cooldown_until == T0 + 19 * M
    changes = feed.returns([0.01, -0.01, 0.01, -0.01, 0.01])
    assert [(k, s.state) for k, s in changes] == [(19, "active")]


def test_no_judgement_before_both_windows_are_full() -> None:
    feed = Feed(breaker())
    # 7 returns: short full, baseline 4 of 4 only after the 7th -> 8 closes needed.
    assert feed.returns([0.001] * 3 + [0.3, -0.3, 0.3]) == []
    assert feed.breaker.state.short_vol is None
    assert feed.breaker.state.ratio is None
    assert SMALL.closes_needed == 8


def test_a_flat_baseline_halts_on_any_move_with_no_ratio() -> None:
    feed = Feed(breaker())
    assert feed.returns([0.0] * 7) == []
    [(k, state)] = feed.returns([0.001])
    assert (k, state.state, state.ratio, state.long_vol) == (8, "halted", None, 0.0)
    assert state.reason == "short-window volatility 0.00057735 moved after a flat long window"


def test_a_redelivered_or_older_candle_is_ignored() -> None:
    feed = Feed(breaker())
    feed.returns(CALM)
    before = feed.breaker.state
    assert feed.breaker.update(T0 + 8 * M, 1_000_000.0) is None
    assert feed.breaker.update(T0 + 3 * M, 1.0) is None
    assert feed.breaker.state == before
    assert feed.breaker.last_ts == T0 + 8 * M


def test_warm_fills_the_windows_without_judging_history() -> None:
    b = breaker()
    closes = [100.0 * math.exp(sum(([*CALM, 0.05])[:i])) for i in range(10)]
    b.warm([(T0 + i * M, c) for i, c in enumerate(closes)])
    assert b.state.state == "active"  # the violent return was history
    assert b.state.ratio == pytest.approx(math.sqrt(7), rel=1e-9)
    # The next candle is judged: short (-1, +5, +5)%.
    change = b.update(T0 + 10 * M, closes[-1] * math.exp(0.05))
    assert change is not None
    assert change.state == "halted"


def test_a_resumed_halt_keeps_its_cool_down_and_waits_for_data() -> None:
    b = VolatilityBreaker("sim", "BTC/USDT", SMALL, since_ms=T0, state="halted",
                          reason="earlier", cooldown_until=T0 + 2 * M)  # fmt: skip
    assert b.state.state == "halted"
    # The cool-down is over but the windows cannot judge yet: stays halted.
    assert b.update(T0 + 2 * M, 100.0) is None
    assert b.state.state == "halted"
    assert b.cooldown_until == T0 + 7 * M


def test_settings_refuse_windows_and_multiples_that_cannot_work() -> None:
    with pytest.raises(ValueError, match=r"long_window \(15\) must be longer than short_window"):
        BreakerSettings(short_window=15, long_window=15)
    with pytest.raises(ValueError, match="multiple must be a finite number above 1"):
        BreakerSettings(multiple=1.0)
    with pytest.raises(ValueError, match="short_window must be at least 2"):
        BreakerSettings(short_window=1)
    with pytest.raises(ValueError, match="close must be a positive finite number"):
        breaker().update(T0, 0.0)


def test_running_sums_do_not_drift_across_wild_regimes() -> None:
    """50 % swings, then moves of 1e-9: float running sums are left with the
    swings' rounding error, larger than the tiny moves' whole variance."""
    settings = BreakerSettings(short_window=15, long_window=240, multiple=1e9, cooldown_ms=0)
    b = VolatilityBreaker("sim", "BTC/USDT", settings, since_ms=T0)
    rng = random.Random(7)
    close = 100.0
    b.update(T0, close)
    returns: deque[float] = deque(maxlen=255)
    naive_sum = naive_sq = 0.0
    for k in range(1, 3001):
        size = 0.5 if k <= 1000 else 1e-9
        nxt = close * math.exp(rng.uniform(-size, size))
        r = math.log(nxt / close)
        close = nxt
        if len(returns) == returns.maxlen:
            old = returns[0]
            naive_sum -= old
            naive_sq -= old * old
        returns.append(r)
        naive_sum += r
        naive_sq += r * r
        b.update(T0 + k * M, close)
    window = np.array(returns)
    state = b.state
    assert state.short_vol == pytest.approx(np.std(window[-15:], ddof=1), rel=1e-9)
    assert state.long_vol == pytest.approx(np.std(window[:-15], ddof=1), rel=1e-9)
    n = len(window)
    naive_var = (naive_sq - naive_sum * naive_sum / n) / (n - 1)
    true_var = float(np.var(window, ddof=1))
    assert abs(naive_var - true_var) > true_var  # the naive way is off by over 100 %
