"""``cryptodesk backtest`` as a user runs it: the real hourly file, a stored series,
and the mistakes users make (each one line on stderr and exit code 2)."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import pytest
from typer.testing import CliRunner

from cryptodesk.analytics.strategies import STRATEGIES
from cryptodesk.analytics.strategy import Context, Decision, Strategy
from cryptodesk.cli import app as cryptodesk_app
from cryptodesk.cli_backtest import parse_selector, register
from cryptodesk.domain.timeutil import to_iso
from cryptodesk.observability.logging import configure_logging
from tests.shared_data import SHARED_DATA
from tests.unit._cli import cli_app

HOURLY = SHARED_DATA / "cryptodatadownload_coinbase_btcusd_1h.csv"
HEADER = "timestamp,open,high,low,close,volume\n"
T0 = 1_704_067_200_000  # 2024-01-01T00:00:00Z
HOUR = 3_600_000
runner = CliRunner()


@pytest.fixture(autouse=True)
def quiet_logging() -> None:
    """As a fresh process starts: no INFO lines left configured by other tests
    (stderr is asserted exactly here)."""
    configure_logging("json", "WARNING")


pytestmark = pytest.mark.usefixtures("clean_env")


APP = cli_app(register)


def run(*args: str) -> tuple[int, str, str]:
    result = runner.invoke(APP, ["backtest", *args])
    return result.exit_code, result.stdout, result.stderr


@pytest.fixture(scope="module")
def hourly_report(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str, str]:
    out = tmp_path_factory.mktemp("report") / "ma"
    code, stdout, stderr = run("--strategy", "ma_cross", "--data", str(HOURLY), "--out", str(out))
    assert (code, stderr) == (0, "")
    return out, stdout, stderr


def test_ma_cross_on_the_real_hourly_file_prints_a_summary(
    hourly_report: tuple[Path, str, str],
) -> None:
    out, stdout, _ = hourly_report
    lines = stdout.splitlines()
    assert lines[0] == (
        "ma_cross (fast=50, slow=200) on BTC/USD 1h: 20111 candles, "
        "2017-07-01T11:00:00.000Z .. 2019-10-17T09:00:00.000Z"
    )
    assert lines[1].startswith("trades 57, win rate 40.35%, profit factor ")
    assert lines[-1] == f"wrote report.json, trades.csv and report.html to {out}"
    assert sorted(p.name for p in out.iterdir()) == ["report.html", "report.json", "trades.csv"]


def test_the_three_reports_agree(hourly_report: tuple[Path, str, str]) -> None:
    out = hourly_report[0]
    report = json.loads((out / "report.json").read_text())
    metrics, trades = report["metrics"], report["trades"]
    with (out / "trades.csv").open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert report["strategy"] == {"name": "ma_cross", "params": {"fast": 50, "slow": 200}}
    assert report["data"] == {
        "source": str(HOURLY), "format": "cryptodatadownload", "exchange": None,
        "symbol": "BTC/USD", "interval": "1h", "candles": 20111,
        "first_open": "2017-07-01T11:00:00.000Z", "last_open": "2019-10-17T09:00:00.000Z",
        "interval_ms": 3_600_000,
    }  # fmt: skip
    assert metrics["trades"] == len(trades) == len(rows) == 57
    assert [float(r["pnl"]) for r in rows] == [t["pnl"] for t in trades]  # repr round-trips
    assert [r["entry_time"] for r in rows] == [t["entry_time"] for t in trades]
    # Long only and flat at the end: the equity gained is the sum of the trades' net pnl.
    gained = metrics["final_equity"] - metrics["initial_cash"]
    assert sum(t["pnl"] for t in trades) == pytest.approx(gained, rel=1e-9)
    assert metrics["fees"] == pytest.approx(sum(t["fees"] for t in trades), rel=1e-12)
    wins = sum(1 for t in trades if t["pnl"] > 0)
    assert metrics["win_rate"] == wins / 57
    curve = report["equity_curve"]
    assert len(curve["time"]) == len(curve["equity"]) == 20111
    assert curve["equity"][-1] == metrics["final_equity"]
    assert metrics["total_return"] == pytest.approx(curve["equity"][-1] / 10_000 - 1, rel=1e-12)
    page = (out / "report.html").read_text()
    assert page.count("<svg") == 2
    assert ("Equity" in page, "Drawdown (%)" in page) == (True, True)
    assert [word in page for word in ("<script", "src=", "href=")] == [False, False, False]
    assert page.count("<tr><td>long</td>") == 57
    assert "stop-loss is assumed first" in page


def test_params_costs_and_stops_change_the_run(tmp_path: Path) -> None:
    code, _, stderr = run(
        "--strategy", "ma_cross", "--data", str(HOURLY), "--param", "fast=20",
        "--param", "slow=100", "--fee", "0.002", "--slippage-bps", "5", "--size", "notional:1000",
        "--stop-loss", "0.05", "--take-profit", "0.1", "--out", str(tmp_path),
    )  # fmt: skip
    assert (code, stderr) == (0, "")
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["strategy"]["params"] == {"fast": 20, "slow": 100}
    assert report["config"] == {
        "initial_cash": 10000.0, "fee": 0.002, "maker_fee": 0.002, "slippage_bps": 5.0,
        "slippage_volume": 0.0, "size": "notional:1000", "lot": 0.0, "stop_loss": 0.05,
        "take_profit": 0.1, "allow_short": False,
    }  # fmt: skip
    reasons = {t["exit_reason"] for t in report["trades"]}
    assert {"stop_loss", "take_profit", "signal"} <= reasons
    for t in report["trades"]:
        assert t["entry_price"] * t["qty"] == pytest.approx(1000, rel=1e-12)
        if t["exit_reason"] == "take_profit":
            assert t["exit_price"] >= t["entry_price"] * 1.1 * (1 - 1e-12)


def write(path: Path, body: str) -> Path:
    path.write_text(HEADER + body)
    return path


def test_gaps_are_reported_and_unsorted_rows_are_sorted(tmp_path: Path) -> None:
    rows = [
        f"2024-01-01T{h:02d}:00:00Z,{100 + h},{101 + h},{99 + h},{100 + h},5\n" for h in range(12)
    ]
    del rows[4:7]  # three missing hours
    data = write(tmp_path / "gappy.csv", "".join(reversed(rows)))
    code, stdout, stderr = run("--strategy", "ma_cross", "--data", str(data), "--param", "fast=2",
                               "--param", "slow=3", "--out", str(tmp_path / "r"))  # fmt: skip
    assert code == 0
    assert stderr == (
        f"cryptodesk: warning: {data}: 3 missing candles in 1 gap, the first after "
        "2024-01-01T03:00:00.000Z (next at 2024-01-01T07:00:00.000Z); the backtest runs over "
        "the candles present\n"
    )
    assert stdout.startswith("ma_cross (fast=2, slow=3) on 1h: 9 candles, 2024-01-01T00:00:00.000Z")


@pytest.mark.parametrize(
    ("args", "body", "message"),
    [
        (["--strategy", "nope"], None, "unknown strategy 'nope'; built-in: ma_cross, "
         "rsi_reversion, macd_trend, bollinger_breakout"),
        (["--strategy", "ma_cross", "--param", "fast=300"], None,
         "ma_cross: fast (300) must be below slow (200)"),
        (["--strategy", "ma_cross", "--param", "fast"], None, "--param 'fast' is not NAME=VALUE"),
        (["--strategy", "ma_cross", "--size", "all"], None,
         "size 'all' is not fraction:F (0 < F <= 1) or notional:AMOUNT"),
        (["--strategy", "ma_cross", "--fee", "0.5"], None, "fee 0.5 is not in [0, 0.1)"),
        (["--strategy", "ma_cross"], "2024-01-01T00:00:00Z,1,2,0.5,1,1\n"
         "2024-01-01T01:00:00Z,1,2,0.5,1,1\n2024-01-01T00:00:00Z,1,2,0.5,1,1\n",
         "{f}:4: a candle at 2024-01-01T00:00:00.000Z is already on line 2"),
        (["--strategy", "ma_cross"], "2024-01-01T00:00:00Z,1,2,0.5,1,1\n"
         "2024-01-01T01:00:00Z,nan,2,0.5,1,1\n", "{f}:3: open 'nan' is not a number"),
        (["--strategy", "ma_cross"], "2024-01-01T00:00:00Z,1,2,0.5,1,1\n"
         "2024-01-01T01:00:00Z,1,2,-0.5,1,1\n", "{f}:3: low must be a positive finite number, "
         "got -0.5"),
        (["--strategy", "ma_cross"], "2024-01-01T00:00:00Z,1,2,0.5,1,1\n",
         "{f}: cannot tell the candle interval from its spacing; give --interval"),
    ],
)  # fmt: skip
def test_bad_input_is_one_line_and_exit_2(
    tmp_path: Path, args: list[str], body: str | None, message: str
) -> None:
    data = write(tmp_path / "c.csv", body) if body is not None else HOURLY
    code, stdout, stderr = run(*args, "--data", str(data), "--out", str(tmp_path / "r"))
    assert (code, stdout) == (2, "")
    assert stderr == f"cryptodesk: error: {message.format(f=data)}\n"
    assert not (tmp_path / "r").exists()


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ("db:binance:BTC/USDT", "--data 'db:binance:BTC/USDT' is not a file nor "
         "db:EXCHANGE:SYMBOL:INTERVAL[:START[:END]]"),
        ("db:binance:BTC/USDT:7h", "unknown interval '7h'; supported: 1m, 3m, 5m, 15m, 30m, 1h, "
         "2h, 4h, 6h, 8h, 12h, 1d, 3d, 1w"),
        ("db:binance:BTC/USDT:1h:yesterday", "'yesterday' is not START[:END] (ISO 8601 or "
         "epoch ms)"),
        ("db:binance:BTC/USDT:1h:2024-02-01:2024-01-01", "--data "
         "'db:binance:BTC/USDT:1h:2024-02-01:2024-01-01': START must be before END"),
        ("db:binance:BTC/USDT:1h", "no binance BTC/USDT 1h candles stored"),
        ("missing.csv", "missing.csv: cannot read the file: No such file or directory"),
        (str(SHARED_DATA / "bitstamp_btc_eth_ltc_usd_1d.csv"),
         f"{SHARED_DATA / 'bitstamp_btc_eth_ltc_usd_1d.csv'} holds several assets: give "
         "--symbol BASE/QUOTE to pick one"),
    ],
)  # fmt: skip
def test_bad_data_selectors_are_one_line_and_exit_2(data: str, message: str) -> None:
    code, stdout, stderr = run("--strategy", "ma_cross", "--data", data)
    assert (code, stdout, stderr) == (2, "", f"cryptodesk: error: {message}\n")


def test_selector_windows_take_iso_times_with_colons() -> None:
    series, start, end = parse_selector("db:coinbase:btc-usd:1h:2019-01-01T00:00:00Z:2019-01-02")
    assert (series.exchange, series.symbol, series.interval.name) == ("coinbase", "BTC/USD", "1h")
    assert (start, end) == (1_546_300_800_000, 1_546_387_200_000)
    assert parse_selector("db:coinbase:BTC/USD:1h::1546387200000")[1:] == (None, 1_546_387_200_000)
    assert parse_selector("db:coinbase:BTC/USD:1h:2019-01-01T00:00")[1:] == (
        1_546_300_800_000,
        None,
    )


def test_a_stored_series_is_backtested_over_the_asked_window(tmp_path: Path) -> None:
    prices = [100 + 5 * math.sin(k) for k in range(10 * 24)]
    rows = [
        f"{to_iso(T0 + k * HOUR)},{p:.4f},{p + 6:.4f},{p - 6:.4f},{p:.4f},3\n"
        for k, p in enumerate(prices)
    ]
    data = write(tmp_path / "series.csv", "".join(rows))
    where = ["--exchange", "coinbase", "--symbol", "BTC/USD", "--interval", "1h"]
    imported = runner.invoke(cryptodesk_app, ["import", "candles", str(data), *where])
    assert imported.exit_code == 0, imported.output
    code, stdout, stderr = run("--strategy", "rsi_reversion", "--param", "period=3", "--data",
                               "db:coinbase:BTC/USD:1h:2024-01-02T00:00:00Z:2024-01-05",
                               "--out", str(tmp_path / "r"))  # fmt: skip
    assert (code, stderr) == (0, "")
    assert stdout.splitlines()[0] == (
        "rsi_reversion (period=3, oversold=30.0, overbought=70.0) on coinbase BTC/USD 1h: "
        "72 candles, 2024-01-02T00:00:00.000Z .. 2024-01-04T23:00:00.000Z"
    )
    report = json.loads((tmp_path / "r" / "report.json").read_text())
    assert report["data"]["source"] == "db:coinbase:BTC/USD:1h:2024-01-02T00:00:00Z:2024-01-05"
    assert report["metrics"]["trades"] > 0


class Boom(Strategy):
    name = "boom"

    def on_candle(self, ctx: Context) -> Decision | None:
        if ctx.index == 3:
            raise RuntimeError("the model file is missing")
        return None


def test_a_strategy_that_raises_prints_its_traceback_and_exits_1(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(STRATEGIES, "boom", Boom)
    code, stdout, stderr = run(
        "--strategy", "boom", "--data", str(HOURLY), "--out", str(tmp_path / "r")
    )
    assert (code, stdout) == (1, "")
    lines = stderr.splitlines()
    assert lines[0] == "Traceback (most recent call last):"
    assert 'raise RuntimeError("the model file is missing")' in stderr
    assert lines[-1] == (
        "cryptodesk: error: strategy boom raised on the candle of 2017-07-01T14:00:00.000Z "
        "(4 of 20111): RuntimeError: the model file is missing"
    )
    assert not (tmp_path / "r").exists()
