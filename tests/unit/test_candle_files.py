"""Candle file readers and writers: the real third-party files, our format, bad rows."""

from __future__ import annotations

import io
from pathlib import Path

import pytest

from cryptodesk.adapters.files.candle_files import (
    CandleCsvWriter,
    CandleFile,
    CandleParquetWriter,
    DataFileError,
    infer_interval,
    read_candles,
    write_candles,
)
from cryptodesk.domain.interval import Interval
from cryptodesk.domain.market import Candle
from cryptodesk.domain.timeutil import parse_time
from tests.shared_data import SHARED_DATA

DATA = SHARED_DATA
CDD = DATA / "cryptodatadownload_coinbase_btcusd_1h.csv"
WIDE = DATA / "bitstamp_btc_eth_ltc_usd_1d.csv"
H1, D1 = Interval.parse("1h"), Interval.parse("1d")
OURS_HEADER = "timestamp,open,high,low,close,volume\n"


def ms(text: str) -> int:
    return parse_time(text)


def read(
    path: Path, symbol: str = "BTC/USD", interval: Interval = H1, exchange: str = "x"
) -> CandleFile:
    return read_candles(path, exchange=exchange, symbol=symbol, interval=interval)


def write(tmp_path: Path, text: str, name: str = "c.csv") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def candle(ts: str, o: float, h: float, lo: float, c: float, v: float, q: float = 0.0) -> Candle:
    return Candle("coinbase", "BTC/USD", "1h", ms(ts), o, h, lo, c, v, q, 0, closed=True)


# ---- the real files ---------------------------------------------------------------------


def test_cryptodatadownload_file() -> None:
    f = read_candles(CDD, exchange="coinbase", symbol="BTC/USD", interval=H1)
    assert f.format == "cryptodatadownload"
    assert len(f.candles) == 20_111
    # Newest first in the file: the oldest candle is its last line, the newest line 3.
    assert f.candles[0] == candle(
        "2017-07-01T11:00:00Z", 2505.56, 2513.38, 2495.12, 2509.17, 114.6, 287000.32
    )
    assert f.lines[0] == 20_113
    assert f.candles[-1] == candle(
        "2019-10-17T09:00:00Z", 8051.0, 8056.83, 8021.23, 8035.88, 61.25, 492394.56
    )
    assert f.lines[-1] == 3
    # Contiguous hours from first to last: any AM/PM slip would leave a gap or a duplicate.
    times = [c.open_time for c in f.candles]
    assert times[-1] - times[0] == (len(times) - 1) * H1.ms
    assert times == sorted(set(times))


def test_cryptodatadownload_twelve_am_is_midnight_and_twelve_pm_is_noon() -> None:
    by_line = dict(zip(read(CDD).lines, read(CDD).candles, strict=True))
    midnight = by_line[12]  # 2019-10-17 12-AM,BTCUSD,7993.54,...
    assert midnight.open_time == ms("2019-10-17T00:00:00Z")
    assert (midnight.open, midnight.close) == (7993.54, 7966.43)
    noon = by_line[20_112]  # 2017-07-01 12-PM,BTCUSD,2509.17,...
    assert noon.open_time == ms("2017-07-01T12:00:00Z")
    assert noon.open == 2509.17
    assert by_line[20_100].open_time == ms("2017-07-02T00:00:00Z")  # 2017-07-02 12-AM


def test_wide_file_btc() -> None:
    f = read(WIDE, "BTC/USD", D1)
    assert f.format == "wide"
    assert len(f.candles) == 1_865
    first, last = f.candles[0], f.candles[-1]
    assert (first.open_time, first.open, first.high, first.low, first.close, first.volume) == (
        ms("2014-11-28"), 363.59, 381.34, 360.57, 376.28, 8617.15,
    )  # fmt: skip
    assert (last.open_time, last.open, last.high, last.low, last.close, last.volume) == (
        ms("2020-01-17"), 8710.15, 8736.81, 8661.52, 8709.49, 138.49,
    )  # fmt: skip
    assert (f.lines[0], f.lines[-1]) == (2, 1_866)


def test_wide_file_picks_the_asset_and_skips_rows_before_it_was_listed() -> None:
    eth = read(WIDE, "ETH/USD", D1)
    assert len(eth.candles) == 788
    assert eth.lines[0] == 1_079  # 2017-11-09: the first row with ETH cells
    first = eth.candles[0]
    assert (first.open_time, first.open, first.high, first.low, first.close, first.volume) == (
        ms("2017-11-09"), 322.15, 331.7, 317.29, 321.32, 13118.15,
    )  # fmt: skip
    ltc = read(WIDE, "LTC/USD", D1)
    assert len(ltc.candles) == 925
    assert ltc.candles[0].open_time == ms("2017-06-25")
    assert ltc.candles[-1].close == 57.88


def test_a_daily_file_is_not_accepted_as_hourly() -> None:
    # Every midnight is also on the hourly grid; only the spacing gives it away.
    with pytest.raises(DataFileError, match="is it a 1d file") as info:
        read(WIDE, "BTC/USD", H1)
    assert info.value.line_no is None


def test_infer_interval() -> None:
    assert infer_interval([0, 3_600_000, 10_800_000]) == H1
    assert infer_interval([0, 7 * 60_000]) is None
    assert infer_interval([0]) is None


# ---- our format -------------------------------------------------------------------------


def test_ours_iso_or_epoch_ms_in_any_order(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        OURS_HEADER
        + "2024-01-01T02:00:00Z,3,4,2,3.5,1.25\n"
        + f"{ms('2024-01-01T00:00:00Z')},1,2,0.5,1.5,10\n"
        + "\n"  # blank lines are ignored
        + "2024-01-01 01:00:00,1.5,3,1,3,0.1\n",
    )
    f = read(path)
    assert f.format == "cryptodesk"
    assert [c.open_time for c in f.candles] == [
        ms("2024-01-01T00:00:00Z"), ms("2024-01-01T01:00:00Z"), ms("2024-01-01T02:00:00Z"),
    ]  # fmt: skip
    assert f.lines == [3, 5, 2]
    assert f.candles[1].volume == 0.1
    assert (f.candles[0].quote_volume, f.candles[0].trades) == (0.0, 0)


def test_ours_optional_quote_volume_and_trades(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        OURS_HEADER.strip() + ",trades,quote_volume\n2024-01-01T00:00:00Z,1,2,1,2,3,7,4.5\n",
    )
    c = read(path).candles[0]
    assert (c.trades, c.quote_volume) == (7, 4.5)


def test_cryptodatadownload_newer_layout_with_unix_and_tradecount(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "https://www.CryptoDataDownload.com\n"
        "unix,date,symbol,open,high,low,close,Volume ETH,Volume USDT,tradecount\n"
        "1704070800000,2024-01-01 01:00:00,ETH/USDT,2,3,1,2.5,10,25,9\n"
        "1704067200,2024-01-01 00:00:00,ETH/USDT,1,2,1,2,5,7.5,3\n",  # seconds, older files
    )
    f = read(path, "ETH/USDT")
    assert [c.open_time for c in f.candles] == [1_704_067_200_000, 1_704_070_800_000]
    assert (f.candles[1].volume, f.candles[1].quote_volume, f.candles[1].trades) == (10, 25, 9)


@pytest.mark.parametrize(
    ("date", "iso"),
    [
        ("2020-02-29 12-AM", "2020-02-29T00:00:00Z"),
        ("2020-02-29 01-AM", "2020-02-29T01:00:00Z"),
        ("2020-02-29 11-AM", "2020-02-29T11:00:00Z"),
        ("2020-02-29 12-PM", "2020-02-29T12:00:00Z"),
        ("2020-02-29 01-PM", "2020-02-29T13:00:00Z"),
        ("2020-02-29 11-PM", "2020-02-29T23:00:00Z"),
        ("2020-02-29", "2020-02-29T00:00:00Z"),
    ],
)
def test_cryptodatadownload_twelve_hour_clock(tmp_path: Path, date: str, iso: str) -> None:
    path = write(tmp_path, f"banner\ndate,symbol,open,high,low,close,volume_btc,volume\n"
                 f"{date},BTCUSD,1,1,1,1,0,0\n")  # fmt: skip
    assert read(path).candles[0].open_time == ms(iso)


# ---- bad files --------------------------------------------------------------------------

OHLCV = ("open", "high", "low", "close", "volume")
CDD_HEAD = "Timestamps are UTC timezone,x\ndate,symbol,open,high,low,close,volume_btc,volume\n"
GOOD_CDD = "2019-10-17 09-AM,BTCUSD,8051,8056.83,8021.23,8035.88,61.25,492394.56\n"
WIDE_HEAD = ",".join(["", *(f"{a}:{f}" for a in ("BTC", "ETH") for f in OHLCV)]) + "\n"


@pytest.mark.parametrize(
    ("text", "line", "reason"),
    [
        (OURS_HEADER + "2024-01-01T00:00:00Z,1,2,1,2,3\n2024-01-01T01:00:00Z,1,x,1,2,3\n",
         3, "high 'x' is not a number"),
        (OURS_HEADER + "2024-01-01T00:00:00Z,1,2,1,2,nan\n", 2, "volume 'nan' is not a number"),
        (OURS_HEADER + "2024-01-01T00:00:00Z,1,2,1,2,1_0\n", 2, "volume '1_0' is not a number"),
        (OURS_HEADER + "2024-01-01T00:00:00Z,1,0.5,1,2,3\n", 2, "OHLC inconsistent"),
        (OURS_HEADER + "2024-01-01T00:00:00Z,1,2,1,2,-3\n", 2, "volume must be a non-negative"),
        (OURS_HEADER + "2024-01-01T00:00:00Z,0,2,0,2,3\n", 2, "open must be a positive"),
        (OURS_HEADER + "2024-01-01T00:30:00Z,1,2,1,2,3\n", 2, "not the open time of a 1h candle"),
        (OURS_HEADER + "1704067200,1,2,1,2,3\n", 2, "out of range"),  # epoch seconds
        (OURS_HEADER + "yesterday,1,2,1,2,3\n", 2, "neither epoch milliseconds nor ISO 8601"),
        (OURS_HEADER + "2024-01-01T00:00:00Z,1,2,1,2\n", 2, "expected 6 columns, got 5"),
        (OURS_HEADER + "2024-01-01T01:00:00Z,1,2,1,2,3\n\n2024-01-01T01:00:00+00:00,1,2,1,2,3\n",
         4, "already on line 2"),
        (OURS_HEADER.strip() + ",colour\n", 1, "unexpected column(s) colour"),
        (CDD_HEAD + GOOD_CDD + "2019-10-17 13-PM,BTCUSD,1,1,1,1,1,1\n", 4, "not a date like"),
        (CDD_HEAD + "2019-10-17 00-AM,BTCUSD,1,1,1,1,1,1\n", 3, "not a date like"),
        (CDD_HEAD + GOOD_CDD + "2019-10-17 08-AM,ETHUSD,1,1,1,1,1,1\n", 4,
         "'ETHUSD' is not BTC/USD"),
        ("banner\ndate,symbol,open,high,low,close,volume_eth,volume\n", 2, "lacks volume_btc"),
        (WIDE_HEAD + "2024-01-01,1,2,1,2,3,,,,,\n2024-01-02,1,2,1,,3,,,,,\n", 3, "close is empty"),
        (",ETH:open,ETH:high,ETH:low,ETH:close,ETH:volume\n", 1, "no BTC columns"),
        ("timestamp,price,amount,side\n", 1, "this is a trade file"),
        ("when,o,h,l,c,v\n2024-01-01,1,2,1,2,3\n", 1, "no known candle header"),
        ("2024-01-01,1,2,1,2,3\n", 1, "no known candle header"),
        (OURS_HEADER + "2024-01-01T00:00:00Z,1,2,1,2,3\n\"unterminated,1,2\n", 3, "expected 6"),
    ],
)  # fmt: skip
def test_a_bad_row_names_its_line(tmp_path: Path, text: str, line: int, reason: str) -> None:
    path = write(tmp_path, text)
    with pytest.raises(DataFileError) as info:
        read(path)
    err = info.value
    assert isinstance(err, ValueError)
    assert err.line_no == line
    assert reason in err.reason
    assert str(err) == f"{path}:{line}: {err.reason}"


def test_the_first_bad_line_is_reported(tmp_path: Path) -> None:
    rows = [f"2024-01-01T{h:02d}:00:00Z,1,2,1,2,3\n" for h in range(10)]
    rows[3] = "2024-01-01T03:30:00Z,1,2,1,2,3\n"  # off the grid
    rows[7] = "2024-01-01T07:00:00Z,1,2,1,2,x\n"  # not a number
    with pytest.raises(DataFileError) as info:
        read(write(tmp_path, OURS_HEADER + "".join(rows)))
    assert info.value.line_no == 5


def test_file_level_problems(tmp_path: Path) -> None:
    with pytest.raises(DataFileError, match="No such file") as info:
        read(tmp_path / "missing.csv")
    assert info.value.line_no is None
    with pytest.raises(DataFileError, match="the file is empty"):
        read(write(tmp_path, "\n\n"))
    (tmp_path / "latin1.csv").write_bytes(
        OURS_HEADER.encode() + b"2024-01-01T00:00:00Z,1,2,1,2,3\n" + b"caf\xe9,1,2,1,2,3\n"
    )
    with pytest.raises(DataFileError, match="not UTF-8"):
        read(tmp_path / "latin1.csv")


# ---- writers ----------------------------------------------------------------------------

AWKWARD = [  # values whose shortest decimal text is long or unusual
    Candle("x", "BTC/USD", "1h", ms("2024-01-01T00:00:00Z"), 0.1 + 0.2, 0.30000000000000004,
           0.1, 0.3, 1e-9, 12345.678901234567, 5, closed=True),
    Candle("x", "BTC/USD", "1h", ms("2024-01-01T01:00:00Z"), 1 / 3, 2 / 3, 1e-300, 0.5,
           123456789.12345679, 0.0, 0, closed=True),
    Candle("x", "BTC/USD", "1h", ms("2024-01-01T03:00:00Z"), 5e-324, 1e300, 5e-324, 2.0**60,
           0.0, 1e22, 0, closed=True),
]  # fmt: skip


def test_csv_round_trip_is_exact(tmp_path: Path) -> None:
    out = io.StringIO()
    assert write_candles([AWKWARD[:2], AWKWARD[2:]], CandleCsvWriter(out)) == 3
    text = out.getvalue()
    assert text.splitlines()[0] == "timestamp,open,high,low,close,volume,quote_volume,trades"
    assert text.splitlines()[1].startswith("2024-01-01T00:00:00.000Z,0.30000000000000004,")
    assert read(write(tmp_path, text), exchange="x").candles == AWKWARD


def test_parquet_round_trip_is_exact(tmp_path: Path) -> None:
    path = tmp_path / "c.parquet"
    assert write_candles([AWKWARD], CandleParquetWriter(path)) == 3
    f = read(path, exchange="x")
    assert f.format == "parquet"
    assert f.candles == AWKWARD
    assert f.lines == [1, 2, 3]


def test_real_file_round_trips_through_csv_and_parquet(tmp_path: Path) -> None:
    original = read(CDD).candles
    out = io.StringIO()
    write_candles([original], CandleCsvWriter(out))
    assert read(write(tmp_path, out.getvalue())).candles == original
    write_candles([original], CandleParquetWriter(tmp_path / "c.parquet"))
    assert read(tmp_path / "c.parquet").candles == original
