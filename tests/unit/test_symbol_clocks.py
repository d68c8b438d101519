from cryptodesk.analytics.candles import CandleBuilder
from cryptodesk.analytics.symbol_clocks import PerSymbolCandleBuilder
from cryptodesk.domain.interval import Interval
from cryptodesk.domain.market import Candle, Trade

T0 = 1_714_521_600_000
M1 = Interval.parse("1m")


def tr(symbol: str, i: int, ts: int, price: float) -> Trade:
    return Trade("sim", symbol, f"{symbol}{i}", ts, price, 1.0, "buy")


def test_one_symbol_read_ahead_does_not_close_another_symbols_candles():
    """ETH's partition was read 5 minutes ahead of BTC's."""
    eth_ahead = [tr("ETH/USDT", i, T0 + i * 60_000, 10.0 + i) for i in range(6)]
    btc_behind = [tr("BTC/USDT", 0, T0 + 1_000, 100.0), tr("BTC/USDT", 1, T0 + 30_000, 101.0)]

    shared = CandleBuilder("sim", [M1], grace_ms=2000)
    shared.add_trades(eth_ahead)
    assert shared.add_trades(btc_behind).late  # one exchange clock: BTC arrives too late

    per_symbol = PerSymbolCandleBuilder("sim", [M1], grace_ms=2000)
    first = per_symbol.add_trades(eth_ahead)
    assert {c.symbol for c in first.finalized} == {"ETH/USDT"}
    result = per_symbol.add_trades(btc_behind)
    assert result.late == []
    assert per_symbol.watermark("BTC/USDT") == T0 + 30_000
    assert per_symbol.watermark("SOL/USDT") is None
    closing = per_symbol.add_trades([tr("BTC/USDT", 2, T0 + 63_000, 102.0)])
    assert closing.finalized == [
        Candle("sim", "BTC/USDT", "1m", T0, 100.0, 101.0, 100.0, 101.0, 2.0, 201.0, 2, True)
    ]
    # ETH's 4th minute waits out the grace period; BTC's second minute has begun.
    assert {(c.symbol, c.open_time) for c in per_symbol.open_candles()} == {
        ("ETH/USDT", T0 + 4 * 60_000), ("ETH/USDT", T0 + 5 * 60_000), ("BTC/USDT", T0 + 60_000),
    }  # fmt: skip


def test_seed_goes_to_the_symbols_builder():
    builder = PerSymbolCandleBuilder("sim", [M1], grace_ms=0)
    last = Candle("sim", "BTC/USDT", "1m", T0, 5.0, 5.0, 5.0, 5.0, 1.0, 5.0, 1, True)
    builder.seed("BTC/USDT", M1, last)
    result = builder.add_trades([tr("BTC/USDT", 9, T0 + 10_000, 6.0)])
    assert [t.id for t in result.late] == ["BTC/USDT9"]
