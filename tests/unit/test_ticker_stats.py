import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cryptodesk.analytics.ticker_stats import RollingTickerStats
from cryptodesk.domain.errors import DomainError
from cryptodesk.domain.interval import DAY_MS, HOUR_MS, MINUTE_MS

T0 = 1_699_999_800_000  # a minute boundary


def test_snapshot_of_a_few_trades():
    s = RollingTickerStats()
    assert s.snapshot(T0) is None
    s.add(T0 + 1_000, 100.0, 1.0)
    s.add(T0 + 70_000, 110.0, 2.0)
    s.add(T0 + 80_000, 90.0, 0.5)
    assert s.snapshot(T0 + 80_000) == (100.0, 110.0, 90.0, 3.5, 100.0 + 220.0 + 45.0)


def test_open_is_the_earliest_trade_even_when_it_arrives_late():
    s = RollingTickerStats()
    s.add(T0 + 30_000, 5.0, 1.0)
    s.add(T0 + 10_000, 4.0, 1.0)  # same minute, earlier
    s.add(T0 + 10_000, 6.0, 1.0)  # tie: the first arrival stays the open
    assert s.snapshot(T0 + 30_000) == (4.0, 6.0, 4.0, 3.0, 15.0)
    s.add(T0 + 2 * MINUTE_MS, 7.0, 1.0)
    s.add(T0 - 5 * MINUTE_MS, 3.0, 1.0)  # an older minute, inserted in place
    assert s.snapshot(T0 + 2 * MINUTE_MS) == (3.0, 7.0, 3.0, 5.0, 25.0)
    assert len(s) == 3


def test_window_is_bucketed_to_the_minute():
    s = RollingTickerStats()
    s.add(T0 + 59_000, 1.0, 1.0)  # minute T0
    s.add(T0 + DAY_MS - MINUTE_MS + 1_000, 2.0, 1.0)
    now = T0 + DAY_MS - 1  # the last ms of the minute 1439 minutes after T0
    assert s.snapshot(now) == (1.0, 2.0, 1.0, 2.0, 3.0)
    # One minute on, T0's bucket has left the window, though 59 s of it were
    # still within 24 h of now: that is the minute bucketing.
    assert s.snapshot(T0 + DAY_MS) == (2.0, 2.0, 2.0, 1.0, 2.0)
    assert s.snapshot(T0 + 2 * DAY_MS) is None


def test_memory_stays_bounded_and_old_trades_are_ignored():
    s = RollingTickerStats(window_ms=HOUR_MS)
    for i in range(3 * 60):
        s.add(T0 + i * MINUTE_MS + 5, 10.0 + i, 1.0)
    assert len(s) == 60
    s.add(T0, 1.0, 100.0)  # hours older than any window still to come
    assert len(s) == 60
    snap = s.snapshot(T0 + 179 * MINUTE_MS)
    assert snap == (
        10.0 + 120,
        10.0 + 179,
        10.0 + 120,
        60.0,
        sum(10.0 + i for i in range(120, 180)),
    )


def test_snapshot_in_the_past_sees_only_its_window():
    s = RollingTickerStats(window_ms=10 * MINUTE_MS)
    for i in range(8):
        s.add(T0 + i * MINUTE_MS, 1.0 + i, 1.0)
    assert s.snapshot(T0 + 3 * MINUTE_MS) == (1.0, 4.0, 1.0, 4.0, 10.0)
    assert s.snapshot(T0 + 12 * MINUTE_MS) == (4.0, 8.0, 4.0, 5.0, 30.0)


def test_add_arrays_matches_scalar_adds():
    ts = [T0 + 5, T0 + 61_000, T0 + 1, T0 + 61_000, T0 + 200_000]
    prices = [2.0, 3.0, 1.0, 4.0, 5.0]
    amounts = [1.0, 0.5, 2.0, 1.0, 0.25]
    a, b = RollingTickerStats(), RollingTickerStats()
    a.add_arrays(ts, prices, amounts)
    for row in zip(ts, prices, amounts, strict=True):
        b.add(*row)
    assert a.snapshot(T0 + 200_000) == b.snapshot(T0 + 200_000) == (1.0, 5.0, 1.0, 4.75, 10.75)
    a.add_arrays([], [], [])
    with pytest.raises(DomainError):
        a.add_arrays([1, 2], [1.0], [1.0, 2.0])


def test_add_arrays_keeps_arrival_order_on_timestamp_ties():
    rng = random.Random(3)
    ts = [rng.choice((T0 + 7, T0 + 9)) for _ in range(600)]
    prices = [float(1 + i) for i in range(600)]
    s = RollingTickerStats()
    s.add_arrays(ts, prices, [1.0] * 600)
    snap = s.snapshot(T0 + 9)
    assert snap is not None
    assert snap[0] == prices[ts.index(T0 + 7)]  # the first arrival at the earliest ts


def test_rejects_a_window_that_is_not_whole_buckets():
    with pytest.raises(DomainError):
        RollingTickerStats(window_ms=90_000, bucket_ms=60_000)
    with pytest.raises(DomainError):
        RollingTickerStats(bucket_ms=0)


Row = tuple[int, float, float]


def reference(
    trades: list[Row], now: int, window_ms: int, bucket_ms: int = MINUTE_MS
) -> tuple[float, float, float, float, float] | None:
    current = now - now % bucket_ms
    inside = [
        (ts, i, p, a)
        for i, (ts, p, a) in enumerate(trades)
        if current - window_ms < ts - ts % bucket_ms <= current
    ]
    if not inside:
        return None
    inside.sort()
    return (
        inside[0][2],
        max(p for *_, p, _ in inside),
        min(p for *_, p, _ in inside),
        sum(a for *_, a in inside),
        sum(p * a for *_, p, a in inside),
    )


@settings(max_examples=80, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.integers(0, 3 * HOUR_MS),
            st.integers(1, 4000).map(lambda k: k / 4),
            st.integers(1, 4000).map(lambda k: k / 256),
        ),
        min_size=1,
        max_size=60,
    ),
    st.integers(1, 5),
    st.lists(st.integers(0, 10 * MINUTE_MS), min_size=1, max_size=4),
    st.booleans(),
)
def test_matches_brute_force_window(rows, every, probes, vectorised):
    """Dyadic prices and amounts keep every sum exact, so results must be equal."""
    window = HOUR_MS
    trades = [(T0 + off, p, a) for off, p, a in rows]
    s = RollingTickerStats(window_ms=window)
    for start in range(0, len(trades), every):
        part = trades[start : start + every]
        if vectorised:
            s.add_arrays(*zip(*part, strict=True))
        else:
            for row in part:
                s.add(*row)
        seen = trades[: start + every]
        newest = max(ts for ts, _, _ in seen)
        # Trades more than a window older than the newest may already be gone.
        kept = [t for t in seen if t[0] - t[0] % MINUTE_MS > newest - newest % MINUTE_MS - window]
        for extra in probes:  # repeated probes exercise the cached aggregate
            assert s.snapshot(newest + extra) == reference(kept, newest + extra, window)
        assert len(s) <= window // MINUTE_MS
