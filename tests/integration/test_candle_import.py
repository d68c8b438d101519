"""``cryptodesk import candles`` / ``candles export`` on a real store: the shared files
round-trip exactly, re-imports change nothing, a bad file writes nothing."""

from __future__ import annotations

import asyncio
import dataclasses
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner, Result

from cryptodesk.adapters.db import migrate
from cryptodesk.adapters.db.engine import create_engine
from cryptodesk.adapters.db.sql_store import SqlMarketStore
from cryptodesk.adapters.files.candle_files import read_candles
from cryptodesk.cli import app
from cryptodesk.domain.interval import Interval
from cryptodesk.domain.market import Candle
from cryptodesk.services.candle_import import Series, import_candles, stored_candles
from tests.shared_data import SHARED_DATA

DATA = SHARED_DATA
CDD = DATA / "cryptodatadownload_coinbase_btcusd_1h.csv"
WIDE = DATA / "bitstamp_btc_eth_ltc_usd_1d.csv"
H1, D1 = Interval.parse("1h"), Interval.parse("1d")
runner = CliRunner()


@pytest.fixture
def data_dir(clean_env: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    path = tmp_path / "data"
    monkeypatch.setenv("CRYPTODESK_DATA_DIR", str(path))
    return path


def cli(*args: str | Path) -> Result:
    return runner.invoke(app, [str(a) for a in args])


def import_file(path: Path, exchange: str, symbol: str, interval: str) -> Result:
    return cli("import", "candles", path, "--exchange", exchange, "--symbol", symbol,
               "--interval", interval)  # fmt: skip


def stored(data_dir: Path, exchange: str, symbol: str, interval: str) -> list[Candle]:
    async def read() -> list[Candle]:
        store = SqlMarketStore(create_engine(f"sqlite+aiosqlite:///{data_dir / 'cryptodesk.db'}"))
        try:
            series = Series.parse(exchange, symbol, interval)
            return [c async for page in stored_candles(store, series) for c in page]
        finally:
            await store.close()

    return asyncio.run(read())


SERIES = [  # (file, exchange, symbol, interval, rows)
    (CDD, "coinbase", "BTC/USD", "1h", 20_111),
    (WIDE, "bitstamp", "BTC/USD", "1d", 1_865),
    (WIDE, "bitstamp", "ETH/USD", "1d", 788),
    (WIDE, "bitstamp", "LTC/USD", "1d", 925),
]


def test_shared_files_import_and_export_round_trip_exactly(data_dir: Path, tmp_path: Path) -> None:
    for path, exchange, symbol, interval, rows in SERIES:
        result = import_file(path, exchange, symbol, interval)
        assert result.exit_code == 0, result.output
        assert f"imported {rows} {symbol} {interval} candles" in result.stdout
        assert f"{rows} new, 0 updated, 0 unchanged" in result.stdout

        original = read_candles(path, exchange=exchange, symbol=symbol,
                                interval=Interval.parse(interval)).candles  # fmt: skip
        assert stored(data_dir, exchange, symbol, interval) == original

        exported = cli("candles", "export", "--exchange", exchange, "--symbol", symbol,
                       "--interval", interval)  # fmt: skip
        assert exported.exit_code == 0, exported.output
        csv_path = tmp_path / f"{exchange}-{symbol.replace('/', '')}.csv"
        csv_path.write_text(exported.stdout)
        parquet_path = csv_path.with_suffix(".parquet")
        written = cli("candles", "export", "--exchange", exchange, "--symbol", symbol,
                      "--interval", interval, "--output", parquet_path)  # fmt: skip
        assert written.exit_code == 0, written.output
        assert written.stdout.strip() == f"exported {rows} candles to {parquet_path}"

        for copy in (csv_path, parquet_path):
            # Every value, bit for bit, including the quote volume the file had.
            back = read_candles(copy, exchange=exchange, symbol=symbol,
                                interval=Interval.parse(interval)).candles  # fmt: skip
            assert back == original
            again = import_file(copy, exchange, symbol, interval)
            assert again.exit_code == 0, again.output
            assert f"0 new, 0 updated, {rows} unchanged" in again.stdout
        # Imported under another name, the exported file is the same series.
        assert import_file(csv_path, "copy", symbol, interval).exit_code == 0
        copied = stored(data_dir, "copy", symbol, interval)
        assert copied == [dataclasses.replace(c, exchange="copy") for c in original]


def test_reimport_changes_nothing_and_a_changed_row_is_updated(
    data_dir: Path, tmp_path: Path
) -> None:
    head = "timestamp,open,high,low,close,volume\n"
    rows = [f"2024-01-01T{h:02d}:00:00Z,{100 + h},{102 + h},{99 + h},{101 + h},1.5\n"
            for h in range(24)]  # fmt: skip
    path = tmp_path / "day.csv"
    path.write_text(head + "".join(rows))
    assert "24 new, 0 updated, 0 unchanged" in import_file(path, "kraken", "BTC/EUR", "1h").stdout
    before = stored(data_dir, "kraken", "BTC/EUR", "1h")
    second = import_file(path, "kraken", "BTC/EUR", "1h")
    assert "0 new, 0 updated, 24 unchanged" in second.stdout
    assert stored(data_dir, "kraken", "BTC/EUR", "1h") == before

    rows[5] = "2024-01-01T05:00:00Z,105,107,104,106.25,1.5\n"
    rows.append("2024-01-02T00:00:00Z,124,125,123,124,2\n")
    path.write_text(head + "".join(rows))
    third = import_file(path, "kraken", "btc-eur", "1h")  # the symbol is normalised
    assert "1 new, 1 updated, 23 unchanged" in third.stdout
    after = stored(data_dir, "kraken", "BTC/EUR", "1h")
    assert len(after) == 25
    assert after[5].close == 106.25


def corrupt_last_line(src: Path, dest: Path) -> int:
    """Copy ``src`` with its last row's high below its low; return that line's number."""
    lines = src.read_text().splitlines(keepends=True)
    cells = lines[-1].split(",")
    cells[3] = "1"  # high
    lines[-1] = ",".join(cells)
    dest.write_text("".join(lines))
    return len(lines)


def test_a_bad_file_exits_2_naming_the_line_and_writes_nothing(
    data_dir: Path, tmp_path: Path
) -> None:
    bad = tmp_path / "bad.csv"
    line = corrupt_last_line(CDD, bad)
    assert line == 20_113
    result = import_file(bad, "coinbase", "BTC/USD", "1h")
    assert result.exit_code == 2
    assert result.stdout == ""
    assert result.stderr.splitlines() == [
        f"cryptodesk: error: {bad}:{line}: OHLC inconsistent: o=2505.56 h=1.0 l=2495.12 c=2509.17"
    ]
    assert stored(data_dir, "coinbase", "BTC/USD", "1h") == []

    # With a series already stored, a bad file leaves it exactly as it was.
    assert import_file(WIDE, "bitstamp", "ETH/USD", "1d").exit_code == 0
    before = stored(data_dir, "bitstamp", "ETH/USD", "1d")
    lines = WIDE.read_text().splitlines(keepends=True)
    cells = lines[1079].split(",")  # line 1080: 2017-11-10, the second day with ETH
    cells[6] = "x"  # ETH:open
    lines[1079] = ",".join(cells)
    wide_bad = tmp_path / "wide.csv"
    wide_bad.write_text("".join(lines))
    again = import_file(wide_bad, "bitstamp", "ETH/USD", "1d")
    assert again.exit_code == 2
    assert again.stderr.splitlines() == [
        f"cryptodesk: error: {wide_bad}:1080: open 'x' is not a number"
    ]
    assert stored(data_dir, "bitstamp", "ETH/USD", "1d") == before


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ["--interval", "2h"],
            "_1h.csv:3: 2019-10-17T09:00:00.000Z is not the open time of a 2h candle",
        ),
        (
            ["--interval", "30m"],
            ": no two candles are one 30m apart, so these are not 30m candles; is it a 1h file?",
        ),
        (["--interval", "7m"], "unknown interval '7m'"),
        (["--exchange", "Coin Base"], "'Coin Base' is not an exchange id"),
        (["--symbol", "BTCUSD"], "symbol 'BTCUSD' is not of the form BASE/QUOTE"),
        (["--symbol", "ETH/USD"], "lacks volume_eth"),
    ],
)
def test_bad_options_exit_2(data_dir: Path, args: list[str], message: str) -> None:
    options = {"--exchange": "coinbase", "--symbol": "BTC/USD", "--interval": "1h"}
    options.update(dict(zip(args[::2], args[1::2], strict=True)))
    result = cli("import", "candles", CDD, *[x for kv in options.items() for x in kv])
    assert result.exit_code == 2
    assert result.stderr.startswith("cryptodesk: error: ")
    assert message in result.stderr
    assert len(result.stderr.splitlines()) == 1


def test_export_range_format_and_errors(data_dir: Path, tmp_path: Path) -> None:
    assert import_file(WIDE, "bitstamp", "BTC/USD", "1d").exit_code == 0
    base = ["candles", "export", "--exchange", "bitstamp", "--symbol", "BTC/USD", "--interval"]
    ranged = cli(*base, "1d", "--start", "2020-01-15", "--end", "1579219200000")
    assert ranged.exit_code == 0, ranged.output
    assert ranged.stdout.splitlines() == [
        "timestamp,open,high,low,close,volume,quote_volume,trades",
        "2020-01-15T00:00:00.000Z,8813.04,8903.2,8555.0,8809.17,8606.88,0.0,0",
        "2020-01-16T00:00:00.000Z,8809.17,8852.35,8573.91,8710.15,6713.26,0.0,0",
    ]
    empty = cli(*base, "4h")
    assert empty.exit_code == 0
    assert empty.stdout.splitlines() == ["timestamp,open,high,low,close,volume,quote_volume,trades"]
    assert "no BTC/USD 4h candles" in empty.stderr
    target = tmp_path / "out" / "x.csv"
    for args, message in [
        (["1d", "--format", "parquet"], "give --output PATH"),
        (["1d", "--format", "xlsx"], "--format 'xlsx' is not one of csv, parquet"),
        (["1d", "--start", "soon"], "--start 'soon' is neither"),
        (["1d", "--start", "2020-01-02", "--end", "2020-01-01"], "--start must be before --end"),
        (["1d", "--output", str(target)], "--output"),  # its directory does not exist
    ]:
        result = cli(*base, *args)
        assert result.exit_code == 2, (args, result.output)
        assert message in result.stderr
        assert not target.exists()


@pytest.mark.e2e
@pytest.mark.xdist_group("e2e")
def test_the_installed_command_reports_a_bad_file(tmp_path: Path) -> None:
    """Through ``python -m cryptodesk``, as a user runs it."""
    from tests.e2e.conftest import base_env

    bad = tmp_path / "bad.csv"
    shutil.copy(WIDE, bad)
    with bad.open("a") as f:
        f.write("2020-01-18,1,2,3,4,5,,,,,,,,,,\n")  # low above high
    proc = subprocess.run(
        [sys.executable, "-m", "cryptodesk", "import", "candles", str(bad),
         "--exchange", "bitstamp", "--symbol", "BTC/USD", "--interval", "1d"],
        env=base_env(tmp_path / "data"), capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert proc.returncode == 2
    assert proc.stderr.splitlines() == [
        f"cryptodesk: error: {bad}:1867: OHLC inconsistent: o=1.0 h=2.0 l=3.0 c=4.0"
    ]


async def test_import_on_postgresql_is_exact_and_idempotent(postgres_url: str) -> None:
    await asyncio.to_thread(migrate.upgrade, postgres_url)
    store = SqlMarketStore(create_engine(postgres_url))
    try:
        series = Series.parse("coinbase", "BTC/USD", "1h")
        first = await import_candles(store, CDD, series)
        assert (first.new, first.updated, first.unchanged) == (20_111, 0, 0)
        original = read_candles(CDD, exchange="coinbase", symbol="BTC/USD", interval=H1).candles
        assert [c async for page in stored_candles(store, series) for c in page] == original
        second = await import_candles(store, CDD, series)
        assert (second.new, second.updated, second.unchanged) == (0, 0, 20_111)
        assert await store.count_candles("coinbase") == 20_111
    finally:
        await store.close()
