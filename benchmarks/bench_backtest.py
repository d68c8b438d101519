"""MA-cross backtest on 20,111 real hourly candles: ours against backtesting.py.

Data: Coinbase BTC/USD hourly candles 2017-07-01 .. 2019-10-17 from
``../shared/data`` (CryptoDataDownload), read once before the clock starts.

Both engines run the same strategy with the same settings: SMA(50) and
SMA(200) of the close; long on the candle the fast one crosses above the slow
one, out when it crosses below (long only, one position at a time:
backtesting.py's ``exclusive_orders=True``); market orders filled at the next
candle's open (backtesting.py's default ``trade_on_close=False``); commission
0.1% of each fill's value; 1,000,000 cash; all in. backtesting.py trades whole
units only, so ours rounds quantities down to lots of 1 (``lot=1``) for the
two to buy the same amounts. Each side is timed from candle arrays (ours) or
a DataFrame (theirs) to its finished statistics, best of three runs.

Case ``ma_cross_vs_backtesting_py``: value = backtesting.py's time / ours
("x faster"); extra: both trade counts, whether every trade's entry and exit
time, price and size are identical, and both final equities. It needs the
``bench`` dependency group (``make bench`` installs it); without it the case
reports NaN with a note instead of failing.

    python -m benchmarks.bench_backtest
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Callable
from functools import cache
from pathlib import Path
from typing import Any

from cryptodesk.adapters.files.candle_files import read_candles
from cryptodesk.analytics.backtest import BacktestConfig, BacktestResult, CandleArrays, run_backtest
from cryptodesk.analytics.strategies import build_strategy
from cryptodesk.domain.interval import Interval

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
FILE = DATA / "cryptodatadownload_coinbase_btcusd_1h.csv"
FAST, SLOW = 50, 200
CASH = 1_000_000.0
COMMISSION = 0.001
RUNS = 3

Result = dict[str, Any]


@cache
def _arrays() -> CandleArrays:
    parsed = read_candles(
        FILE, exchange="coinbase", symbol="BTC/USD", interval=Interval.parse("1h")
    )
    return CandleArrays.of(parsed.candles)


def ours() -> BacktestResult:
    config = BacktestConfig(initial_cash=CASH, fee=COMMISSION, lot=1.0)
    strategy = build_strategy("ma_cross", {"fast": FAST, "slow": SLOW})
    return run_backtest(_arrays(), strategy, config, interval_ms=Interval.parse("1h").ms)


def theirs() -> Any:
    """backtesting.py configured as ``ours``; raises ImportError without the bench group."""
    import pandas as pd
    from backtesting import Backtest, Strategy
    from backtesting.lib import crossover

    a = _arrays()
    frame = pd.DataFrame(
        {"Open": a.open, "High": a.high, "Low": a.low, "Close": a.close, "Volume": a.volume},
        index=pd.to_datetime(a.ts, unit="ms"),
    )

    def sma(values: Any, n: int) -> Any:
        return pd.Series(values).rolling(n).mean()

    class SmaCross(Strategy):
        def init(self) -> None:
            self.fast = self.I(sma, self.data.Close, FAST)
            self.slow = self.I(sma, self.data.Close, SLOW)

        def next(self) -> None:
            if crossover(self.fast, self.slow):
                self.buy()
            elif crossover(self.slow, self.fast):
                self.position.close()

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # it warns about trades left open at the end
        bt = Backtest(
            frame, SmaCross, cash=CASH, commission=COMMISSION,
            exclusive_orders=True, trade_on_close=False,
        )  # fmt: skip
        return bt.run()


def _best(fn: Callable[[], Any]) -> tuple[float, Any]:
    best, out = float("inf"), None
    for _ in range(RUNS):
        began = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - began)
    return best, out


def compare(mine: BacktestResult, stats: Any) -> tuple[int, int]:
    """(identical trades, their trade count): entry/exit time, price and size all equal."""
    rows = stats["_trades"]
    closed = [t for t in mine.trades if t.exit_reason != "end"]  # theirs stay open at the end
    same = 0
    for row, t in zip(rows.itertuples(), closed, strict=False):
        same += (
            row.EntryTime.value // 1_000_000 == t.entry_ts
            and row.ExitTime.value // 1_000_000 == t.exit_ts
            and row.EntryPrice == t.entry_price
            and row.ExitPrice == t.exit_price
            and row.Size == t.qty
        )
    return same, len(rows)


def ma_cross_vs_backtesting_py() -> Result:
    try:
        import backtesting  # noqa: F401
    except ImportError:
        return {
            "value": float("nan"),
            "unit": "x faster",
            "note": "skipped: backtesting.py is not installed (make bench installs group bench)",
        }
    ours_s, mine = _best(ours)
    theirs_s, stats = _best(theirs)
    same, their_count = compare(mine, stats)
    identical = same == their_count == len(mine.trades)
    return {
        "value": theirs_s / ours_s,
        "unit": "x faster",
        "ours_ms": ours_s * 1000,
        "backtesting_py_ms": theirs_s * 1000,
        "candles": len(_arrays().ts),
        "our_trades": len(mine.trades),
        "their_trades": their_count,
        "trades_identical": identical,
        "final_equity_ours": round(mine.metrics.final_equity, 2),
        "final_equity_theirs": round(float(stats["Equity Final [$]"]), 2),
    }


def cases() -> dict[str, Callable[[], Result]]:
    return {"ma_cross_vs_backtesting_py": ma_cross_vs_backtesting_py}


if __name__ == "__main__":
    for name, fn in cases().items():
        print(name, fn())
