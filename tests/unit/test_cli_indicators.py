"""``cryptodesk indicators`` as a user runs it, on the real hourly candles exported
in our CSV, and on small hand-written files for the mistakes users make."""

from __future__ import annotations

import csv
import io
import math
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from cryptodesk.adapters.files.candle_files import CandleCsvWriter, read_candles
from cryptodesk.analytics.indicators import compute, parse_specs
from cryptodesk.cli_analytics import register
from cryptodesk.domain.interval import Interval
from cryptodesk.domain.market import Candle
from cryptodesk.domain.timeutil import to_iso
from tests.shared_data import SHARED_DATA
from tests.unit._cli import cli_app

FULL = (
    "sma:200,ema:20,rsi:14,macd:12:26:9,bbands:20:2,atr:14,stoch:14:3:3,obv,"
    "adx:14,cci:20,mfi:14,wma:30,vwap"
)
FULL_COLUMNS = [
    "sma_200", "ema_20", "rsi_14",
    "macd_line_12_26_9", "macd_signal_12_26_9", "macd_hist_12_26_9",
    "bbands_upper_20_2", "bbands_middle_20_2", "bbands_lower_20_2",
    "atr_14", "stoch_k_14_3_3", "stoch_d_14_3_3", "obv", "adx_14", "cci_20", "mfi_14",
    "wma_30", "vwap",
]  # fmt: skip
HEADER = "timestamp,open,high,low,close,volume\n"

runner = CliRunner()
pytestmark = pytest.mark.usefixtures("clean_env")


APP = cli_app(register)


def run(*args: str) -> tuple[int, str, str]:
    result = runner.invoke(APP, ["indicators", *args])
    return result.exit_code, result.stdout, result.stderr


@pytest.fixture(scope="module")
def candles() -> list[Candle]:
    path = SHARED_DATA / "cryptodatadownload_coinbase_btcusd_1h.csv"
    return read_candles(
        path, exchange="coinbase", symbol="BTC/USD", interval=Interval.parse("1h")
    ).candles


@pytest.fixture(scope="module")
def ours(tmp_path_factory: pytest.TempPathFactory, candles: list[Candle]) -> Path:
    """The hourly file as ``cryptodesk candles export`` writes it (oldest first)."""
    path = tmp_path_factory.mktemp("hourly") / "btcusd_1h.csv"
    with path.open("w", encoding="utf-8", newline="") as handle:
        writer = CandleCsvWriter(handle)
        writer.write(candles)
        writer.close()
    return path


@pytest.fixture(scope="module")
def full_output(ours: Path) -> str:
    code, out, err = run("--input", str(ours), "--indicators", FULL)
    assert (code, err) == (0, "")
    return out


def test_full_example_writes_every_column_as_the_registry_computes_it(
    full_output: str, candles: list[Candle]
) -> None:
    rows = list(csv.reader(io.StringIO(full_output)))
    assert rows[0] == ["timestamp", *FULL_COLUMNS]
    assert len(rows) == 1 + 20_111
    assert [r[0] for r in rows[1:]] == [to_iso(c.open_time) for c in candles]
    assert rows[1][0] == "2017-07-01T11:00:00.000Z"
    arrays = {
        "ts": np.array([c.open_time for c in candles], dtype=np.float64),
        **{k: np.array([getattr(c, k) for c in candles]) for k in ("open", "high", "low")},
        "close": np.array([c.close for c in candles]),
        "volume": np.array([c.volume for c in candles]),
    }
    expected = compute(parse_specs(FULL), arrays)
    for j, name in enumerate(FULL_COLUMNS, start=1):
        # repr round-trips: every written number reads back as the very same double.
        want = ["" if math.isnan(x) else repr(x) for x in expected[name].tolist()]
        assert [r[j] for r in rows[1:]] == want, name


def test_warm_up_cells_are_empty(full_output: str) -> None:
    rows = list(csv.reader(io.StringIO(full_output)))[1:]
    empty = {name: sum(1 for r in rows if r[j] == "") for j, name in enumerate(FULL_COLUMNS, 1)}
    assert empty == {
        "sma_200": 199, "ema_20": 19, "rsi_14": 14,
        "macd_line_12_26_9": 33, "macd_signal_12_26_9": 33, "macd_hist_12_26_9": 33,
        "bbands_upper_20_2": 19, "bbands_middle_20_2": 19, "bbands_lower_20_2": 19,
        "atr_14": 14, "stoch_k_14_3_3": 17, "stoch_d_14_3_3": 17, "obv": 0, "adx_14": 27,
        "cci_20": 19, "mfi_14": 14, "wma_30": 29, "vwap": 0,
    }  # fmt: skip
    assert rows[198][1] == ""
    assert rows[199][1] != ""
    # All warm-up cells lead: once a column has a value, it keeps having one.
    for j in range(1, len(FULL_COLUMNS) + 1):
        assert all(r[j] != "" for r in rows[empty[FULL_COLUMNS[j - 1]] :])


def test_descending_input_gives_the_same_output(
    tmp_path: Path, ours: Path, full_output: str
) -> None:
    header, *lines = ours.read_text().splitlines(keepends=True)
    newest_first = tmp_path / "desc.csv"
    newest_first.write_text(header + "".join(reversed(lines)))
    assert run("--input", str(newest_first), "--indicators", FULL) == (0, full_output, "")


def test_output_file_holds_what_stdout_would(tmp_path: Path, ours: Path, full_output: str) -> None:
    target = tmp_path / "out.csv"
    code, out, err = run("--input", str(ours), "--indicators", FULL, "--output", str(target))
    assert (code, err) == (0, "")
    assert out == f"wrote 20111 rows of 18 columns to {target}\n"
    assert target.read_text() == full_output
    assert [p.name for p in tmp_path.iterdir()] == ["out.csv"]  # no temporary file left


def test_gaps_are_reported_in_one_warning_line(tmp_path: Path) -> None:
    path = tmp_path / "gappy.csv"
    path.write_text(
        HEADER
        + "2024-01-01T05:00:00Z,2,3,1,2.5,10\n"
        + "2024-01-01T00:00:00Z,1,2,0.5,1.5,10\n"
        + "2024-01-01T01:00:00Z,2,3,1,2.5,30\n"
        + "2024-01-01T02:00:00Z,3,4,2,3.5,10\n"
        + "2024-01-02T01:00:00Z,3,4,2,3,20\n"
    )
    code, out, err = run("--input", str(path), "--indicators", "sma:2,obv,vwap")
    assert code == 0
    # vwap: (H+L+C)/3 weighted by volume since UTC midnight (47/24, 11/5 and 79/36 on
    # the 1st, to a unit in the last place), restarting on the 2nd.
    assert err == (
        f"cryptodesk: warning: {path}: 21 missing candles in 2 gaps, the first after "
        "2024-01-01T02:00:00.000Z (next at 2024-01-01T05:00:00.000Z); "
        "indicators run over the candles present\n"
    )
    assert out == (
        "timestamp,sma_2,obv,vwap\n"
        "2024-01-01T00:00:00.000Z,,10.0,1.3333333333333333\n"
        "2024-01-01T01:00:00.000Z,2.0,40.0,1.9583333333333333\n"
        "2024-01-01T02:00:00.000Z,3.0,50.0,2.2\n"
        "2024-01-01T05:00:00.000Z,3.0,40.0,2.194444444444444\n"
        "2024-01-02T01:00:00.000Z,2.75,60.0,3.0\n"
    )


def test_interval_can_be_given(tmp_path: Path) -> None:
    path = tmp_path / "one.csv"
    path.write_text(HEADER + "2024-01-01T04:00:00Z,1,2,0.5,1.5,10\n")
    code, out, err = run("--input", str(path), "--indicators", "sma:2,obv", "--interval", "4h")
    assert (code, err) == (0, "")
    assert out == "timestamp,sma_2,obv\n2024-01-01T04:00:00.000Z,,10.0\n"


def _bad_file(tmp_path: Path, body: str) -> str:
    path = tmp_path / "bad.csv"
    path.write_text(body)
    return str(path)


ROWS = "2024-01-01T00:00:00Z,1,2,0.5,1.5,10\n2024-01-01T01:00:00Z,2,3,1,2.5,10\n"


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (HEADER + ROWS + "2024-01-01T00:00:00Z,1,2,0.5,1.5,10\n",
         "{path}:4: a candle at 2024-01-01T00:00:00.000Z is already on line 2"),
        (HEADER + ROWS + "2024-01-01T02:00:00Z,1,2,0.5,nan,10\n",
         "{path}:4: close 'nan' is not a number"),
        (HEADER + ROWS + "2024-01-01T02:00:00Z,0,2,0.5,1,10\n",
         "{path}:4: open must be a positive finite number, got 0.0"),
        (HEADER + ROWS + "2024-01-01T02:00:00Z,-1,2,-2,1,10\n",
         "{path}:4: open must be a positive finite number, got -1.0"),
        (HEADER + ROWS + "2024-01-01T02:30:00Z,1,2,0.5,1,10\n",
         "{path}:4: 2024-01-01T02:30:00.000Z is not the open time of a 1h candle"),
        (HEADER + "2024-01-01T00:00:00Z,1,2,0.5,1.5,10\n",
         "{path}: cannot tell the candle interval (fewer than two candles); give --interval"),
        ("", "{path}: the file is empty"),
        ("date,symbol,open,high,low,close,volume_btc,volume\n",
         "{path}:1: expected our candle header timestamp,open,high,low,close,volume"),
    ],
)  # fmt: skip
def test_bad_file_exits_2_with_one_line(tmp_path: Path, body: str, message: str) -> None:
    path = _bad_file(tmp_path, body)
    code, out, err = run("--input", path, "--indicators", "sma:2")
    assert (code, out) == (2, "")
    assert err == f"cryptodesk: error: {message.format(path=path)}\n"


def test_missing_input_and_unwritable_output_exit_2(tmp_path: Path) -> None:
    missing = tmp_path / "nope.csv"
    assert run("--input", str(missing), "--indicators", "sma:2") == (
        2, "", f"cryptodesk: error: {missing}: cannot read the file: No such file or directory\n"
    )  # fmt: skip
    good = _bad_file(tmp_path, HEADER + ROWS)
    target = tmp_path / "no" / "out.csv"
    assert run("--input", good, "--indicators", "sma:2", "--output", str(target)) == (
        2, "", f"cryptodesk: error: --output {target}: No such file or directory\n"
    )  # fmt: skip
    assert run("--input", good, "--indicators", "sma:2", "--interval", "7h") == (
        2, "", "cryptodesk: error: unknown interval '7h'; supported: 1m, 3m, 5m, 15m, 30m, "
        "1h, 2h, 4h, 6h, 8h, 12h, 1d, 3d, 1w\n",
    )  # fmt: skip


KNOWN = "adx, atr, bbands, cci, ema, macd, mfi, obv, rsi, sma, stoch, vwap, wma"


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("sma:200,smaa:20", f"unknown indicator 'smaa' in 'smaa:20'; known: {KNOWN}"),
        ("obv:3", "obv takes no parameters, got 1 in 'obv:3'"),
        ("sma:x", "period 'x' in 'sma:x' is not an integer"),
        ("rsi:14,macd:26:12:9", "fast must be shorter than slow in 'macd:26:12:9'"),
        ("sma:20,,obv", "empty item in 'sma:20,,obv'"),
        ("", "no indicators given"),
    ],
)
def test_bad_spec_exits_2_with_one_line(tmp_path: Path, spec: str, message: str) -> None:
    # The spec is checked before the file is read: the file need not exist.
    code, out, err = run("--input", str(tmp_path / "nope.csv"), "--indicators", spec)
    assert (code, out, err) == (2, "", f"cryptodesk: error: --indicators: {message}\n")
