"""``cryptodesk optimize`` and ``cryptodesk compare`` as a user runs them: the real hourly
file with small grids, and the mistakes users make (one line on stderr, exit code 2)."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from cryptodesk.adapters.files.candle_files import read_candles
from cryptodesk.analytics.backtest import run_backtest
from cryptodesk.analytics.strategies import STRATEGIES, MaCross
from cryptodesk.analytics.strategy import Context, Decision, Strategy, StrategyParam
from cryptodesk.cli_optimize import register
from cryptodesk.domain.interval import Interval
from cryptodesk.domain.timeutil import to_iso
from tests.shared_data import SHARED_DATA
from tests.unit._cli import cli_app

HOURLY = SHARED_DATA / "cryptodatadownload_coinbase_btcusd_1h.csv"
T0 = 1_704_067_200_000  # 2024-01-01T00:00:00Z
HOUR = 3_600_000
runner = CliRunner()
pytestmark = pytest.mark.usefixtures("clean_env")


APP = cli_app(register)


def run(*args: str) -> tuple[int, str, str]:
    result = runner.invoke(APP, list(args))
    return result.exit_code, result.stdout, result.stderr


def small_file(path: Path, n: int = 60) -> Path:
    rows = [f"{to_iso(T0 + k * HOUR)},{100 + k % 7},{108 + k % 7},{95 + k % 7},{101 + k % 5},2\n"
            for k in range(n)]  # fmt: skip
    path.write_text("timestamp,open,high,low,close,volume\n" + "".join(rows))
    return path


@pytest.fixture(scope="module")
def walked(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    out = tmp_path_factory.mktemp("optimize") / "wf"
    code, stdout, stderr = run(
        "optimize", "--strategy", "ma_cross", "--data", str(HOURLY), "--grid", "fast=10,20",
        "--grid", "slow=50", "--in-sample", "4000", "--out-of-sample", "4000", "--out", str(out),
    )  # fmt: skip
    assert (code, stderr) == (0, "")
    return out, stdout


def test_optimize_prints_each_window_and_the_out_of_sample_headline(
    walked: tuple[Path, str],
) -> None:
    out, stdout = walked
    lines = stdout.splitlines()
    assert lines[0] == (
        "ma_cross walk-forward on BTC/USD 1h: 20111 candles, 5 windows (rolling, warm-up 4000 "
        "candles), 2 parameter sets each (0 refused), objective sharpe"
    )
    assert lines[1].split() == ["#", "out", "of", "sample", "from", "to", "params", "IS",
                                "sharpe", "OOS", "return", "OOS", "sharpe", "trades"]  # fmt: skip
    starts = [line.split()[1] for line in lines[2:7]]
    assert starts == ["2017-12-15T03:00:00.000Z", "2018-05-30T19:00:00.000Z",
                      "2018-11-13T11:00:00.000Z", "2019-04-29T03:00:00.000Z",
                      "2019-10-12T19:00:00.000Z"]  # fmt: skip
    assert lines[7] == (
        "out of sample, stitched (the headline): 16111 candles, "
        "2017-12-15T03:00:00.000Z .. 2019-10-17T09:00:00.000Z"
    )
    assert lines[8].startswith("trades ")
    assert lines[-1] == f"wrote report.json and trades.csv to {out}"
    assert sorted(p.name for p in out.iterdir()) == ["report.json", "trades.csv"]


def test_the_optimize_report_holds_windows_and_only_out_of_sample_headline(
    walked: tuple[Path, str],
) -> None:
    report = json.loads((walked[0] / "report.json").read_text())
    assert report["strategy"] == {"name": "ma_cross", "grid": {"fast": [10, 20], "slow": [50]},
                                  "fixed": {}}  # fmt: skip
    assert report["windows_spec"] == {"in_sample": "4000", "out_of_sample": "4000",
                                      "step": "4000", "anchored": False, "warmup": 4000,
                                      "windows": 5}  # fmt: skip
    assert (report["combinations"], report["skipped_combinations"]) == (2, 0)
    windows = report["windows"]
    assert windows[0]["in_sample"] == {
        "first_open": "2017-07-01T11:00:00.000Z",
        "last_open": "2017-12-15T02:00:00.000Z",
        "candles": 4000,
    }
    assert windows[-1]["out_of_sample"] == {"first_open": "2019-10-12T19:00:00.000Z",
                                            "last_open": "2019-10-17T09:00:00.000Z",
                                            "candles": 111}  # fmt: skip
    # Window 0 has no earlier candles: its in-sample runs are plain backtests of the first
    # 4000 candles, and the better Sharpe of the two is chosen.
    candles = read_candles(HOURLY, exchange="file", symbol="BTC/USD",
                           interval=Interval.parse("1h")).candles  # fmt: skip
    plain = {f: run_backtest(candles[:4000], MaCross(fast=f, slow=50)).metrics for f in (10, 20)}
    best = max(plain, key=lambda f: plain[f].sharpe)
    assert windows[0]["params"] == {"fast": best, "slow": 50}
    assert windows[0]["in_sample_metrics"]["sharpe"] == plain[best].sharpe
    # The headline is the stitched out-of-sample curve, the cash carried window to window.
    oos = report["out_of_sample"]
    assert len(oos["equity_curve"]["equity"]) == 16111
    assert oos["equity_curve"]["time"][0] == "2017-12-15T03:00:00.000Z"
    finals = [w["out_of_sample_metrics"]["final_equity"] for w in windows]
    cash = [w["out_of_sample_metrics"]["initial_cash"] for w in windows]
    assert cash == [10_000.0, *finals[:-1]]
    assert oos["metrics"]["final_equity"] == finals[-1] == oos["equity_curve"]["equity"][-1]
    assert oos["metrics"]["initial_cash"] == 10_000.0
    with (walked[0] / "trades.csv").open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    per_window = sum(w["out_of_sample_metrics"]["trades"] for w in windows)
    assert oos["metrics"]["trades"] == len(oos["trades"]) == len(rows) == per_window > 0
    assert all(r["entry_time"] > "2017-12-15T03:00:00.000Z" for r in rows)


def test_durations_and_anchored_windows(tmp_path: Path) -> None:
    code, stdout, stderr = run(
        "optimize", "--strategy", "ma_cross", "--data", str(HOURLY), "--grid", "fast=10",
        "--grid", "slow=50", "--in-sample", "120d", "--out-of-sample", "120d", "--anchored",
        "--objective", "total_return", "--out", str(tmp_path),
    )  # fmt: skip
    assert (code, stderr) == (0, "")
    assert stdout.splitlines()[0] == (
        "ma_cross walk-forward on BTC/USD 1h: 20111 candles, 6 windows (anchored, warm-up 2880 "
        "candles), 1 parameter sets each (0 refused), objective total_return"
    )
    windows = json.loads((tmp_path / "report.json").read_text())["windows"]
    assert [w["in_sample"]["first_open"] for w in windows] == ["2017-07-01T11:00:00.000Z"] * 6
    assert windows[0]["in_sample"]["last_open"] == "2017-10-29T10:00:00.000Z"
    assert windows[0]["out_of_sample"] == {"first_open": "2017-10-29T11:00:00.000Z",
                                           "last_open": "2018-02-26T10:00:00.000Z",
                                           "candles": 2880}  # fmt: skip
    assert windows[1]["in_sample"]["candles"] == 5760


@pytest.fixture(scope="module")
def compared(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    out = tmp_path_factory.mktemp("compare") / "c"
    code, stdout, stderr = run(
        "compare", "--data", str(HOURLY), "--strategy", "ma_cross", "--strategy",
        "rsi_reversion:period=14", "--strategy", "ma_cross:fast=50:slow=200", "--resamples",
        "200", "--seed", "1", "--out", str(out),
    )  # fmt: skip
    assert (code, stderr) == (0, "")
    return out, stdout


def test_compare_prints_a_table_and_the_pairs(compared: tuple[Path, str]) -> None:
    out, stdout = compared
    lines = stdout.splitlines()
    assert lines[0] == (
        "compare on BTC/USD 1h: 20111 candles, 2017-07-01T11:00:00.000Z .. "
        "2019-10-17T09:00:00.000Z, the same costs for each"
    )
    assert lines[2].split()[:2] == ["ma_cross", "+546.03%"]
    assert lines[4].split()[:2] == ["ma_cross:fast=50:slow=200", "+546.03%"]
    assert lines[5] == ("A - B with 95% intervals (stationary bootstrap, 200 resamples, mean "
                        "block 27 candles, seed 1):")  # fmt: skip
    assert lines[7] == (
        "ma_cross - ma_cross:fast=50:slow=200: total return +0.00% [+0.00%, +0.00%] not "
        "significant; mean per candle +0.0000% [+0.0000%, +0.0000%] not significant"
    )
    assert lines[-1] == f"wrote report.json to {out}"


def test_the_compare_report_and_its_seed(compared: tuple[Path, str], tmp_path: Path) -> None:
    out = compared[0]
    report = json.loads((out / "report.json").read_text())
    ma, rsi, again = report["strategies"]
    assert (ma["label"], ma["params"], ma["metrics"]["trades"]) == (
        "ma_cross", {"fast": 50, "slow": 200}, 57,
    )  # fmt: skip
    assert rsi["params"] == {"period": 14, "oversold": 30.0, "overbought": 70.0}
    assert again["metrics"] == ma["metrics"]
    first, same, _ = report["pairs"]
    assert (first["a"], first["b"]) == ("ma_cross", "rsi_reversion:period=14")
    total = first["total_return_difference"]
    assert total["value"] == pytest.approx(
        ma["metrics"]["total_return"] - rsi["metrics"]["total_return"], rel=1e-9
    )
    assert total["low"] < total["value"] < total["high"]
    assert same["mean_return_difference"] == {"value": 0.0, "low": 0.0, "high": 0.0,
                                              "significant": False}  # fmt: skip
    assert report["bootstrap"] == {"method": "stationary", "resamples": 200,
                                   "confidence": 0.95, "seed": 1, "mean_block": 27.0}  # fmt: skip
    # The same seed gives the same report, byte for byte.
    code, _, _ = run(
        "compare", "--data", str(HOURLY), "--strategy", "ma_cross", "--strategy",
        "rsi_reversion:period=14", "--strategy", "ma_cross:fast=50:slow=200", "--resamples",
        "200", "--seed", "1", "--out", str(tmp_path),
    )  # fmt: skip
    assert code == 0
    assert (tmp_path / "report.json").read_bytes() == (out / "report.json").read_bytes()


OPT = ["optimize", "--strategy", "ma_cross", "--grid", "fast=2,3", "--grid", "slow=5",
       "--in-sample", "20", "--out-of-sample", "10"]  # fmt: skip
CMP = ["compare", "--strategy", "ma_cross:fast=2:slow=5", "--strategy", "rsi_reversion"]


def _with(base: list[str], **changes: str) -> list[str]:
    args = list(base)
    for key, value in changes.items():
        flag = "--" + key.replace("_", "-")
        if flag in args:
            args[args.index(flag) + 1] = value
        else:
            args += [flag, value]
    return args


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (_with(OPT, strategy="nope"), "unknown strategy 'nope'; built-in: ma_cross, "
         "rsi_reversion, macd_trend, bollinger_breakout"),
        (["optimize", "--strategy", "ma_cross", "--grid", "fast=9:2:1", *OPT[5:]],
         "--grid fast='9:2:1' is not START:STOP:STEP with STEP > 0 and START <= STOP"),
        (["optimize", "--strategy", "ma_cross", "--grid", "speed=1", *OPT[5:]],
         "ma_cross has no parameter 'speed' (--grid); its parameters: fast, slow"),
        (_with(OPT, objective="alpha"), "--objective 'alpha' is not one of sharpe, sortino, "
         "calmar, total_return, cagr, profit_factor, win_rate, max_drawdown"),
        (_with(OPT, in_sample="0"), "--in-sample '0' is not a candle count (2000) or a duration "
         "(90d, 12h, 4w)"),
        (_with(OPT, out_of_sample="1d"), "give --in-sample, --out-of-sample and --step all as "
         "candle counts or all as durations"),
        (_with(OPT, size="half"), "size 'half' is not fraction:F (0 < F <= 1) or "
         "notional:AMOUNT"),
        (_with(OPT, step="5"), "step (5 candles) is below the out-of-sample length (10): "
         "out-of-sample windows would overlap"),
        (_with(OPT, in_sample="60"), "60 candles leave nothing out of sample after 60 in sample"),
        (["optimize", "--strategy", "ma_cross", "--grid", "fast=9", "--grid", "slow=5",
          *OPT[7:]], "no valid parameter combination in the grid (1 refused by ma_cross)"),
        (CMP[:3], "give two --strategy options at least"),
        (["compare", "--strategy", "ma_cross:fast", *CMP[3:]], "--strategy 'ma_cross:fast': "
         "'fast' is not PARAM=VALUE"),
        ([*CMP, "--strategy", "ma_cross:fast=9:slow=5"], "ma_cross: fast (9) must be below "
         "slow (5)"),
        ([*CMP, "--strategy", "rsi_reversion"], "strategy 'rsi_reversion' is given twice"),
        (_with(CMP, confidence="1.5"), "--confidence 1.5 is not in (0, 1)"),
        (_with(CMP, resamples="3"), "--resamples 3 is below 10"),
        (_with(CMP, block="500"), "mean block 500.0 is not in [1, 60]"),
    ],
)  # fmt: skip
def test_bad_input_is_one_line_and_exit_2(tmp_path: Path, args: list[str], message: str) -> None:
    data = small_file(tmp_path / "c.csv")
    code, stdout, stderr = run(*args, "--data", str(data), "--out", str(tmp_path / "r"))
    assert (code, stdout, stderr) == (2, "", f"cryptodesk: error: {message}\n")
    assert not (tmp_path / "r").exists()


def test_a_missing_file_is_one_line_and_exit_2() -> None:
    for base in (OPT, CMP):
        code, stdout, stderr = run(*base, "--data", "missing.csv")
        assert (code, stdout, stderr) == (
            2, "", "cryptodesk: error: missing.csv: cannot read the file: No such file or "
            "directory\n",
        )  # fmt: skip


class Boom(Strategy):
    name = "boom"
    params = (StrategyParam("at", int, 3, 0),)
    at: int

    def on_candle(self, ctx: Context) -> Decision | None:
        if ctx.index == self.at:
            raise RuntimeError("the model file is missing")
        return None


def test_a_strategy_that_raises_prints_its_traceback_and_exits_1(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(STRATEGIES, "boom", Boom)
    data = small_file(tmp_path / "c.csv")
    for args in (["optimize", "--strategy", "boom", "--grid", "at=3", "--in-sample", "20",
                  "--out-of-sample", "10"], ["compare", "--strategy", "boom", "--strategy",
                  "ma_cross:fast=2:slow=5"]):  # fmt: skip
        code, stdout, stderr = run(*args, "--data", str(data), "--out", str(tmp_path / "r"))
        assert (code, stdout) == (1, "")
        lines = stderr.splitlines()
        assert lines[0] == "Traceback (most recent call last):"
        candles = 20 if args[0] == "optimize" else 60  # the first in-sample window, or all
        assert lines[-1] == (
            "cryptodesk: error: strategy boom raised on the candle of 2024-01-01T03:00:00.000Z "
            f"(4 of {candles}): RuntimeError: the model file is missing"
        )
