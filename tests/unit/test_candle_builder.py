import itertools
import math
import random
from collections import defaultdict
from collections.abc import Sequence
from unittest.mock import patch

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cryptodesk.analytics import candles as candles_module
from cryptodesk.analytics.candles import BuildResult, CandleBuilder
from cryptodesk.domain.errors import DomainError
from cryptodesk.domain.interval import HOUR_MS, MINUTE_MS, WEEK_MS, Interval
from cryptodesk.domain.market import Candle, Trade
from cryptodesk.domain.timeutil import to_iso

T0 = 1_699_999_800_000  # 2023-11-14T22:10:00Z, a 5-minute boundary
M1, M5, M15, H1, D1, W1 = (Interval.parse(n) for n in ("1m", "5m", "15m", "1h", "1d", "1w"))
BTC, ETH = "BTC/USDT", "ETH/USDT"
GRACE = 2000

Key = tuple[str, str, int]


def tr(ts: int, price: float, amount: float = 1.0, symbol: str = BTC, tid: str = "") -> Trade:
    return Trade("sim", symbol, tid or f"{symbol}-{ts}-{price}-{amount}", ts, price, amount, "buy")


def ohlcv(c: Candle) -> tuple[int, float, float, float, float, float, float, int, bool]:
    return (
        c.open_time,
        c.open,
        c.high,
        c.low,
        c.close,
        c.volume,
        c.quote_volume,
        c.trades,
        c.closed,
    )


def flat(
    open_time: int, price: float
) -> tuple[int, float, float, float, float, float, float, int, bool]:
    return (open_time, price, price, price, price, 0.0, 0.0, 0, True)


def series(candles: Sequence[Candle], interval: Interval, symbol: str = BTC) -> list[Candle]:
    return [c for c in candles if c.interval == interval.name and c.symbol == symbol]


# ---- hand-computed examples ---------------------------------------------------------


def test_hand_computed_1m_and_5m_candles_with_a_flat_gap():
    b = CandleBuilder("sim", [M1, M5], grace_ms=GRACE)
    trades = [
        tr(T0 + 1_000, 100.0, 1.0),
        tr(T0 + 30_000, 105.0, 2.0),
        tr(T0 + 59_999, 99.0, 1.0),
        tr(T0 + 61_000, 101.0, 0.5),
        tr(T0 + 185_000, 110.0, 1.0),  # minute 2 has no trades
    ]
    first = b.add_trades(trades)
    # Watermark T0+185s finalizes 1m buckets ending at or before T0+183s: minutes 0, 1, 2.
    assert [ohlcv(c) for c in first.finalized] == [
        (T0, 100.0, 105.0, 99.0, 99.0, 4.0, 409.0, 3, True),
        (T0 + 60_000, 101.0, 101.0, 101.0, 101.0, 0.5, 50.5, 1, True),
        flat(T0 + 120_000, 101.0),
    ]
    assert first.late == []
    assert b.watermark == T0 + 185_000
    rest = b.advance(T0 + 300_000 + GRACE)
    assert [ohlcv(c) for c in series(rest, M1)] == [
        (T0 + 180_000, 110.0, 110.0, 110.0, 110.0, 1.0, 110.0, 1, True),
        flat(T0 + 240_000, 110.0),
    ]
    assert [ohlcv(c) for c in series(rest, M5)] == [
        (T0, 100.0, 110.0, 99.0, 110.0, 5.5, 569.5, 5, True)
    ]
    assert all(c.exchange == "sim" and c.symbol == BTC for c in rest)
    assert b.open_candles() == []


def test_bucket_closes_exactly_at_end_plus_grace():
    b = CandleBuilder("sim", [M1], grace_ms=GRACE)
    b.add_trades([tr(T0 + 10, 1.0)])
    assert b.advance(T0 + 60_000 + GRACE - 1) == []
    assert [c.open_time for c in b.advance(T0 + 60_000 + GRACE)] == [T0]


def test_open_and_close_follow_event_time_not_arrival():
    b = CandleBuilder("sim", [M1])
    b.add_trades([tr(T0 + 30_000, 2.0), tr(T0 + 10_000, 1.0), tr(T0 + 20_000, 3.0)])
    c = b.open_candle(BTC, M1)
    assert c is not None
    assert (c.open, c.high, c.low, c.close, c.trades, c.closed) == (1.0, 3.0, 1.0, 2.0, 3, False)


def test_timestamp_ties_open_with_first_arrival_and_close_with_last():
    prices = [float(p) for p in range(1, 201)]
    for sizes in ([200], [1] * 200, [3, 197], [120, 80], [5, 1, 194]):
        b = CandleBuilder("sim", [M1])
        i = 0
        for size in sizes:  # small batches take the scalar path, large ones numpy
            b.add_trades([tr(T0 + 5_000, p, tid=str(p)) for p in prices[i : i + size]])
            i += size
        c = b.open_candle(BTC, M1)
        assert c is not None
        assert (c.open, c.close, c.high, c.low, c.trades) == (1.0, 200.0, 200.0, 1.0, 200)


def test_out_of_order_within_grace_lands_in_its_bucket():
    b = CandleBuilder("sim", [M1], grace_ms=GRACE)
    assert b.add_trades([tr(T0 + 61_000, 10.0)]).finalized == []
    # Minute 0 ended at T0+60s but the watermark T0+61s is inside the grace period.
    assert b.add_trades([tr(T0 + 59_000, 20.0)]).late == []
    assert len(b.open_candles()) == 2
    done = b.add_trades([tr(T0 + 62_000, 11.0)]).finalized
    assert [ohlcv(c) for c in done] == [(T0, 20.0, 20.0, 20.0, 20.0, 1.0, 20.0, 1, True)]


def test_late_trade_is_reported_once_and_applied_only_where_still_open():
    b = CandleBuilder("sim", [M1, M5], grace_ms=GRACE)
    b.add_trades([tr(T0 + 1_000, 100.0), tr(T0 + 62_500, 101.0)])  # closes minute 0
    late = tr(T0 + 59_500, 50.0, 3.0, tid="late-1")
    result = b.add_trades([late])
    assert result.late == [late]
    assert result.finalized == []
    # The 5m bucket was still open, so it took the trade; minute 0 did not change.
    five = b.open_candle(BTC, M5)
    assert five is not None
    assert (five.low, five.volume, five.trades) == (50.0, 5.0, 3)
    rest = b.advance(T0 + 300_000 + GRACE)
    assert [ohlcv(c) for c in series(rest, M1)][1:] == [
        flat(T0 + i * 60_000, 101.0) for i in (2, 3, 4)
    ]

    # Late for both intervals: still reported once, and applied nowhere.
    result = b.add_trades([tr(T0 + 10_000, 1.0, tid="late-2"), tr(T0 + 10_001, 1.0, tid="x")])
    assert [t.id for t in result.late] == ["late-2", "x"]
    assert b.open_candles() == []


def test_large_unsorted_batch_keeps_tie_order_and_reports_late_once():
    b = CandleBuilder("sim", [M1, M5, H1], grace_ms=0)
    b.add_trades([tr(T0 + 10 * MINUTE_MS, 1000.0, tid="first")])
    rng = random.Random(7)
    stamps = [T0 + 2_000, T0 + 1_000, T0 + 11 * MINUTE_MS] * 40
    rng.shuffle(stamps)
    batch = [tr(ts, float(i + 1), tid=f"t{i}") for i, ts in enumerate(stamps)]
    result = b.add_trades(batch)  # numpy path: needs a stable sort
    # Minutes 0-1 are closed for 1m and 5m; the 1h candle (22:00) is still open.
    assert result.late == [t for t in batch if t.ts < T0 + 10 * MINUTE_MS]
    hour = b.open_candle(BTC, H1)
    assert hour is not None
    first_at_1s = next(t for t in batch if t.ts == T0 + 1_000)
    last_at_11m = [t for t in batch if t.ts == T0 + 11 * MINUTE_MS][-1]
    assert (hour.open, hour.close, hour.trades) == (first_at_1s.price, last_at_11m.price, 121)
    minute = b.open_candle(BTC, M1)
    assert minute is not None
    first_at_11m = next(t for t in batch if t.ts == T0 + 11 * MINUTE_MS)
    assert (minute.open, minute.close, minute.trades) == (
        first_at_11m.price,
        last_at_11m.price,
        40,
    )


def test_gap_flat_candles_and_series_start_at_first_trade():
    b = CandleBuilder("sim", [M1, M5], grace_ms=0)
    # ETH trades first; BTC has no candles before its own first trade.
    b.add_trades([tr(T0, 5.0, symbol=ETH)])
    done = b.add_trades([tr(T0 + 125_000, 7.0), tr(T0 + 425_000, 8.0)]).finalized
    eth_1m = series(done, M1, ETH)
    assert [ohlcv(c) for c in eth_1m] == [(T0, 5.0, 5.0, 5.0, 5.0, 1.0, 5.0, 1, True)] + [
        flat(T0 + i * 60_000, 5.0) for i in range(1, 7)
    ]
    btc_1m = series(done, M1)
    assert btc_1m[0].open_time == T0 + 120_000
    assert [ohlcv(c) for c in btc_1m[1:]] == [flat(T0 + i * 60_000, 7.0) for i in range(3, 7)]
    assert [c.open_time for c in series(done, M5)] == [T0]
    assert [c.open_time for c in series(done, M5, ETH)] == [T0]


def test_watermark_jump_emits_flats_in_bounded_steps():
    b = CandleBuilder("sim", [M1], grace_ms=0, max_flat_per_call=5)
    b.add_trades([tr(T0, 3.0)])
    first = b.advance(T0 + 20 * MINUTE_MS)
    assert [c.open_time for c in first] == [T0 + i * MINUTE_MS for i in range(6)]
    # Held-back buckets count as finalized already: a trade for one is late.
    held_back = tr(T0 + 12 * MINUTE_MS, 1.0)
    result = b.add_trades([held_back])
    assert result.late == [held_back]
    emitted = first + result.finalized
    while len(step := b.advance(T0 + 20 * MINUTE_MS)) > 0:
        assert len(step) <= 5
        emitted += step
    assert [c.open_time for c in emitted] == [T0 + i * MINUTE_MS for i in range(20)]
    assert {c.close for c in emitted} == {3.0}


def test_huge_jump_with_default_cap_is_bounded_per_call():
    b = CandleBuilder("sim", [M1], grace_ms=0)
    b.add_trades([tr(T0, 3.0)])
    done = b.advance(T0 + 400 * 24 * HOUR_MS)  # about 576k missed minutes
    assert len(done) == 100_001
    assert b.advance(T0 + 400 * 24 * HOUR_MS)[0].open_time == T0 + 100_001 * MINUTE_MS


def test_seed_resumes_series_after_restart():
    b = CandleBuilder("sim", [M1, M5], grace_ms=GRACE)
    last = Candle("sim", BTC, "1m", T0, 90.0, 95.0, 85.0, 92.0, 3.0, 270.0, 4, closed=True)
    b.seed(BTC, M1, last)
    assert b.watermark is None
    result = b.add_trades([tr(T0 + 30_000, 1.0, tid="old"), tr(T0 + 185_000, 100.0)])
    assert [t.id for t in result.late] == ["old"]  # its bucket is the stored candle
    assert [ohlcv(c) for c in series(result.finalized, M1)] == [
        flat(T0 + 60_000, 92.0),
        flat(T0 + 120_000, 92.0),
    ]
    # The unseeded 5m series took both trades.
    five = b.open_candle(BTC, M5)
    assert five is not None
    assert (five.open_time, five.trades, five.open) == (T0, 2, 1.0)


def test_seed_after_trades_drops_buckets_it_covers():
    b = CandleBuilder("sim", [M1])
    b.add_trades([tr(T0 + 1_000, 5.0), tr(T0 + 61_000, 6.0)])
    b.seed(BTC, M1, Candle("sim", BTC, "1m", T0, 9.0, 9.0, 9.0, 9.0, 1.0, 9.0, 1, closed=True))
    assert [c.open_time for c in b.open_candles()] == [T0 + 60_000]
    # An older seed never moves a series back.
    b.seed(BTC, M1, Candle("sim", BTC, "1m", T0 - 60_000, 1.0, 1.0, 1.0, 1.0, 0.0, closed=True))
    done = b.advance(T0 + 10 * MINUTE_MS)
    assert [c.open_time for c in done][:2] == [T0 + 60_000, T0 + 120_000]


def test_seed_rejects_mismatched_candles():
    b = CandleBuilder("sim", [M1])
    good = Candle("sim", BTC, "1m", T0, 1.0, 1.0, 1.0, 1.0, 0.0, closed=True)
    with pytest.raises(DomainError):
        b.seed(ETH, M1, good)
    with pytest.raises(DomainError):
        b.seed(BTC, M5, Candle("sim", BTC, "5m", T0, 1.0, 1.0, 1.0, 1.0, 0.0))
    with pytest.raises(DomainError):
        b.seed(BTC, M1, Candle("sim", BTC, "1m", T0 + 1, 1.0, 1.0, 1.0, 1.0, 0.0))
    with pytest.raises(DomainError):
        b.seed(BTC, M1, Candle("other", BTC, "1m", T0, 1.0, 1.0, 1.0, 1.0, 0.0))


def test_weekly_candles_open_on_monday():
    b = CandleBuilder("sim", [W1, D1], grace_ms=0)
    b.add_trades([tr(T0, 1.0)])  # a Tuesday
    week = b.open_candle(BTC, W1)
    assert week is not None
    assert to_iso(week.open_time) == "2023-11-13T00:00:00.000Z"
    done = b.add_trades([tr(week.open_time + WEEK_MS + 5, 2.0)]).finalized
    assert [to_iso(c.open_time) for c in series(done, W1)] == ["2023-11-13T00:00:00.000Z"]
    assert len(series(done, D1)) == 6  # Tue..Sun: one with the trade, five flat


def test_open_candle_tracks_in_progress_state():
    b = CandleBuilder("sim", [M1, M5])
    assert b.open_candle(BTC, M1) is None
    b.add_trades([tr(T0 + 1_000, 10.0, 2.0)])
    c = b.open_candle(BTC, M1)
    assert c is not None
    assert ohlcv(c) == (T0, 10.0, 10.0, 10.0, 10.0, 2.0, 20.0, 1, False)
    b.add_trades([tr(T0 + 2_000, 12.0, 1.0), tr(T0 + 61_000, 11.0, 1.0)])
    newest = b.open_candle(BTC, M1)
    assert newest is not None
    assert newest.open_time == T0 + 60_000
    assert {(c.interval, c.open_time) for c in b.open_candles()} == {
        ("1m", T0),
        ("1m", T0 + 60_000),
        ("5m", T0),
    }
    five = b.open_candle(BTC, M5)
    assert five is not None
    assert (five.high, five.volume, five.trades) == (12.0, 4.0, 3)
    assert b.open_candle(BTC, H1) is None
    assert b.open_candle(ETH, M1) is None


def test_add_arrays_reports_late_rows_and_validates():
    b = CandleBuilder("sim", [M1], grace_ms=0)
    ts = np.array([T0 + 70_000, T0 + 5_000, T0 + 71_000])
    first = b.add_arrays(BTC, ts[:1], [1.0], [1.0])
    assert first.late == []
    result = b.add_arrays(BTC, ts[1:], [2.0, 3.0], [1.0, 1.0])
    assert [(t.id, t.ts, t.price) for t in result.late] == [("row:0", T0 + 5_000, 2.0)]
    with pytest.raises(DomainError):
        b.add_arrays(BTC, ts, [1.0, 2.0], [1.0, 1.0, 1.0])
    with pytest.raises(DomainError):
        b.add_arrays(BTC, ts, [1.0, float("nan"), 1.0], [1.0, 1.0, 1.0])
    with pytest.raises(DomainError):
        b.add_arrays(BTC, ts, [1.0, 1.0, 1.0], [1.0, 0.0, 1.0])
    with pytest.raises(DomainError):
        b.add_arrays("BTCUSDT", ts, [1.0, 1.0, 1.0], [1.0, 1.0, 1.0])
    assert b.add_arrays(BTC, [], [], []) == BuildResult([], [])


def test_constructor_and_foreign_trades_are_rejected():
    with pytest.raises(DomainError):
        CandleBuilder("sim", [])
    with pytest.raises(DomainError):
        CandleBuilder("sim", [M1, M1])
    with pytest.raises(DomainError):
        CandleBuilder("sim", [M1], grace_ms=-1)
    b = CandleBuilder("sim", [M1])
    with pytest.raises(DomainError):
        b.add_trades([Trade("other", BTC, "1", T0, 1.0, 1.0, "buy")])
    assert b.add_trades([]) == BuildResult([], [])
    assert b.watermark is None


# ---- property-based ------------------------------------------------------------------

INTERVALS = [M1, M5, M15, H1, D1, W1]
PROPS = settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@st.composite
def in_grace_trades(draw, symbols=(BTC, ETH), max_size=40, dyadic=True):
    """Trades whose arrival order is shuffled by less than the grace period.

    Dyadic prices and amounts make every float sum exact, so different feeding
    orders must give bit-identical candles.
    """
    gap = st.one_of(st.integers(0, 3_000), st.integers(0, 40_000), st.integers(0, 3 * HOUR_MS))
    if dyadic:
        price = st.integers(1, 400_000).map(lambda k: k / 4)
        amount = st.integers(1, 10_000).map(lambda k: k / 256)
    else:
        price, amount = st.floats(0.01, 1e5), st.floats(1e-6, 1e3)
    spec = st.tuples(gap, price, amount, st.integers(0, GRACE - 1), st.sampled_from(symbols))
    ts = T0 + draw(st.integers(0, WEEK_MS))
    rows = []
    for i, (dt, p, a, delay, sym) in enumerate(draw(st.lists(spec, min_size=1, max_size=max_size))):
        ts += dt if i else 0
        rows.append((ts + delay, i, Trade("sim", sym, f"t{i}", ts, p, a, "buy")))
    rows.sort(key=lambda r: (r[0], r[1]))
    return [r[2] for r in rows]


def reference(trades: Sequence[Trade], wm: int) -> dict[Key, Candle]:
    """Brute-force candles for trades that are never late."""
    out: dict[Key, Candle] = {}
    for iv in INTERVALS:
        groups: dict[tuple[str, int], list[tuple[int, int, Trade]]] = defaultdict(list)
        for i, t in enumerate(trades):
            groups[(t.symbol, iv.bucket(t.ts))].append((t.ts, i, t))
        for sym in {s for s, _ in groups}:
            opens = sorted(o for s, o in groups if s == sym)
            cutoff = iv.bucket(wm - GRACE)
            close = 0.0
            o = opens[0]
            while o < cutoff or o <= opens[-1]:
                rows = sorted(groups.get((sym, o), []))
                if rows:
                    ps = [t.price for _, _, t in rows]
                    c = Candle(
                        "sim",
                        sym,
                        iv.name,
                        o,
                        ps[0],
                        max(ps),
                        min(ps),
                        ps[-1],
                        sum(t.amount for *_, t in rows),
                        sum(t.price * t.amount for *_, t in rows),
                        len(rows),
                        o < cutoff,
                    )
                    close = ps[-1]
                    out[(sym, iv.name, o)] = c
                elif o < cutoff:
                    out[(sym, iv.name, o)] = Candle(
                        "sim", sym, iv.name, o, close, close, close, close, 0.0, 0.0, 0, closed=True
                    )
                o += iv.ms
    return out


def feed(
    trades: Sequence[Trade], chunks: Sequence[int], wm: int, *, numpy_only: bool = False
) -> tuple[dict[Key, Candle], list[Trade]]:
    """Feed in chunks of the given sizes; return all candles (closed and open) by key.

    Small batches normally take the per-trade path; ``numpy_only`` forces even
    one-trade batches through numpy, so the two paths can be compared.
    """
    if numpy_only:
        with patch.object(candles_module, "_SCALAR_MAX", 0):
            return feed(trades, chunks, wm)
    b = CandleBuilder("sim", INTERVALS, grace_ms=GRACE)
    seen: dict[Key, Candle] = {}
    late: list[Trade] = []
    calls = []
    i = 0
    for size in chunks:
        if i >= len(trades):
            break
        result = b.add_trades(trades[i : i + size])
        calls.append(result.finalized)
        late += result.late
        i += size
    if i < len(trades):
        result = b.add_trades(trades[i:])
        calls.append(result.finalized)
        late += result.late
    calls.append(b.advance(wm))
    for finalized in calls:
        last: dict[tuple[str, str], int] = {}
        for c in finalized:
            assert c.closed
            key = (c.symbol, c.interval, c.open_time)
            assert key not in seen, "a candle was finalized twice"
            assert last.get(key[:2], -1) < c.open_time, "series not ascending in one call"
            last[key[:2]] = c.open_time
            seen[key] = c
    for c in b.open_candles():
        key = (c.symbol, c.interval, c.open_time)
        assert not c.closed
        assert key not in seen
        seen[key] = c
    return seen, late


@PROPS
@given(
    in_grace_trades(max_size=150),
    st.integers(0, 2 * HOUR_MS),
    st.lists(st.one_of(st.integers(1, 10), st.integers(65, 120)), max_size=6),
)
def test_matches_reference_and_batching_does_not_matter(trades, extra, chunks):
    wm = max(t.ts for t in trades) + extra
    expected = reference(trades, wm)
    assert feed(trades, [len(trades)], wm) == (expected, [])
    assert feed(trades, [len(trades)], wm, numpy_only=True) == (expected, [])
    assert feed(trades, [1] * len(trades), wm) == (expected, [])
    assert feed(trades, chunks, wm) == (expected, [])
    assert feed(trades, chunks, wm, numpy_only=True) == (expected, [])


@PROPS
@given(in_grace_trades(symbols=(BTC,)), st.integers(0, 2 * HOUR_MS), st.integers(1, 50))
def test_add_arrays_equals_add_trades(trades, extra, chunk):
    wm = max(t.ts for t in trades) + extra
    b = CandleBuilder("sim", INTERVALS, grace_ms=GRACE)
    finalized: list[Candle] = []
    for i in range(0, len(trades), chunk):
        part = trades[i : i + chunk]
        cols = ([t.ts for t in part], [t.price for t in part], [t.amount for t in part])
        result = b.add_arrays(BTC, np.array(cols[0]), np.array(cols[1]), np.array(cols[2]))
        assert result.late == []
        finalized += result.finalized
    finalized += b.advance(wm)
    got = {(c.symbol, c.interval, c.open_time): c for c in finalized + b.open_candles()}
    assert got == feed(trades, [len(trades)], wm)[0]


@PROPS
@given(in_grace_trades(dyadic=False, max_size=60), st.integers(0, 3 * HOUR_MS))
def test_invariants_and_conservation_across_intervals(trades, extra):
    wm = max(t.ts for t in trades) + extra
    candles, _ = feed(trades, [7], wm, numpy_only=True)
    by_series: dict[tuple[str, str], list[Candle]] = defaultdict(list)
    for c in sorted(candles.values(), key=lambda c: c.open_time):
        assert c.low <= min(c.open, c.close) <= max(c.open, c.close) <= c.high
        by_series[(c.symbol, c.interval)].append(c)
    for (sym, name), cs in by_series.items():
        ms = Interval.parse(name).ms
        closed = [c for c in cs if c.closed]
        assert all(b.open_time - a.open_time == ms for a, b in itertools.pairwise(closed))
        assert all(not c.closed for c in cs[len(closed) :])
        total = sum(t.amount for t in trades if t.symbol == sym)
        assert math.isclose(sum(c.volume for c in cs), total, rel_tol=1e-9)
        assert sum(c.trades for c in cs) == sum(t.symbol == sym for t in trades)
        if name == "1m":
            continue
        for big in cs:
            small = [
                c
                for c in by_series[(sym, "1m")]
                if big.open_time <= c.open_time < big.open_time + ms and c.trades
            ]
            assert sum(c.trades for c in small) == big.trades
            assert math.isclose(sum(c.volume for c in small), big.volume, rel_tol=1e-9)
            if small:
                assert max(c.high for c in small) == big.high
                assert min(c.low for c in small) == big.low
                assert (small[0].open, small[-1].close) == (big.open, big.close)


@PROPS
@given(
    st.lists(st.integers(0, 20 * MINUTE_MS), min_size=5, max_size=150),
    st.lists(st.one_of(st.integers(1, 12), st.integers(65, 100)), min_size=3, max_size=10),
)
def test_late_trades_are_never_applied_nor_dropped(offsets, chunks):
    trades = [tr(T0 + off, float(1 + i % 7), 0.5, tid=f"t{i}") for i, off in enumerate(offsets)]
    wm = T0 + 30 * MINUTE_MS
    candles, late = feed(trades, chunks, wm)
    assert feed(trades, chunks, wm, numpy_only=True) == (candles, late)
    assert len({t.id for t in late}) == len(late)
    late_ids = {t.id for t in late}
    kept = [t for t in trades if t.id not in late_ids]
    minute = {k: c for k, c in candles.items() if k[1] == "1m"}
    assert sum(c.trades for c in minute.values()) + len(late) == len(trades)
    # A late trade is late for its 1m candle; the 1m series equals one built without it.
    expected = {k: c for k, c in reference(kept, wm).items() if k[1] == "1m"} if kept else {}
    assert minute == expected


@pytest.mark.parametrize("seed", range(4))
def test_long_shuffled_streams_match_reference(seed):
    """Hundreds of trades per batch, so the numpy path sees many buckets at once."""
    rng = random.Random(seed)
    rows = []
    ts = T0 + rng.randrange(WEEK_MS)
    for i in range(600):
        ts += rng.choice((0, rng.randrange(3_000), rng.randrange(90_000), rng.randrange(HOUR_MS)))
        trade = Trade(
            "sim",
            rng.choice((BTC, ETH)),
            f"t{i}",
            ts,
            rng.randrange(1, 4000) / 4,
            rng.randrange(1, 1000) / 64,
            "buy",
        )
        rows.append((ts + rng.randrange(GRACE), i, trade))
    trades = [r[2] for r in sorted(rows, key=lambda r: (r[0], r[1]))]
    wm = trades[-1].ts + HOUR_MS
    expected = reference(trades, wm)
    assert feed(trades, [600], wm) == (expected, [])
    assert feed(trades, [rng.randrange(1, 300) for _ in range(20)], wm) == (expected, [])
