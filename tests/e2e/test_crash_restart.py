"""kill -9 during ingest, restart: candles never duplicated, none already stored lost,
and every stored candle is exactly what the stored trades make."""

from __future__ import annotations

import signal
import sqlite3
from pathlib import Path

import pytest

from cryptodesk.analytics.symbol_clocks import PerSymbolCandleBuilder
from cryptodesk.domain.interval import Interval
from cryptodesk.domain.market import Trade
from tests.e2e.conftest import wait_for

pytestmark = [pytest.mark.e2e, pytest.mark.xdist_group("e2e")]
INTERVALS = "1m,5m,15m,1h"


def candle_rows(db: Path) -> dict[tuple, tuple]:
    con = sqlite3.connect(db)
    try:
        rows = con.execute(
            "select exchange, symbol, interval, open_time, open, high, low, close, volume,"
            " trades from candles"
        ).fetchall()
    finally:
        con.close()
    return {r[:4]: r[4:] for r in rows}


def stored_trades(db: Path) -> list[Trade]:
    con = sqlite3.connect(db)
    try:
        rows = con.execute(
            "select exchange, symbol, trade_id, ts, price, amount, side from trades"
            " order by ts, trade_id"
        ).fetchall()
    finally:
        con.close()
    return [Trade(*r) for r in rows]


def count(db: Path, table: str) -> int:
    con = sqlite3.connect(db)
    try:
        return int(con.execute(f"select count(*) from {table}").fetchone()[0])
    finally:
        con.close()


def test_kill9_and_restart_keeps_candles_exact(server_factory, tmp_path):
    data = tmp_path / "data"
    db = data / "cryptodesk.db"
    settings = {"CRYPTODESK_SIM_SPEED": "600", "CRYPTODESK_INTERVALS": INTERVALS}

    first = server_factory(data, **settings)
    wait_for(lambda: count(db, "candles") > 40, timeout=60)
    first.proc.send_signal(signal.SIGKILL)
    first.proc.wait()
    before = candle_rows(db)
    assert before

    second = server_factory(data, **settings)
    wait_for(lambda: count(db, "candles") > len(before) + 40, timeout=60)
    assert second.stop(signal.SIGTERM) == 0
    after = candle_rows(db)

    # Nothing finalized and stored before the crash was lost or changed.
    for key, value in before.items():
        assert after[key] == value, key

    # Every stored candle equals the one rebuilt from the stored trades, and the
    # rebuild finds no candle the store lacks: none lost, none double counted.
    intervals = [Interval.parse(i) for i in INTERVALS.split(",")]
    builder = PerSymbolCandleBuilder("sim", intervals, grace_ms=2000)
    rebuilt = builder.add_trades(stored_trades(db)).finalized
    rebuilt_rows = {
        (c.exchange, c.symbol, c.interval, c.open_time): (
            c.open, c.high, c.low, c.close, c.volume, c.trades,
        )
        for c in rebuilt
    }  # fmt: skip
    assert set(rebuilt_rows) == set(after)
    for key, (o, h, lo, c, v, n) in rebuilt_rows.items():
        so, sh, slo, sc, sv, sn = after[key]
        assert (so, sh, slo, sc, sn) == (o, h, lo, c, n), key
        assert sv == pytest.approx(v, rel=1e-9), key
