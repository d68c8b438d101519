"""The table of closes read by ``cryptodesk risk report``: real data and bad files."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from cryptodesk.adapters.files.parsing import DataFileError
from cryptodesk.adapters.files.price_table import read_price_table
from tests.shared_data import SHARED_DATA

BITSTAMP = SHARED_DATA / "bitstamp_btc_eth_ltc_usd_1d.csv"


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "prices.csv"
    path.write_text(text, encoding="utf-8")
    return path


def test_the_published_wide_table_reads_its_close_columns() -> None:
    table = read_price_table(BITSTAMP)
    assert table.assets == ("BTC", "ETH", "LTC")
    assert table.prices.shape == (1865, 3)
    assert table.times[0] == 1417132800000  # 2014-11-28
    assert table.prices[0, 0] == 376.28  # BTC:close of the first row, not BTC:open
    assert np.isnan(table.prices[0, 1])
    assert np.isnan(table.prices[0, 2])
    # ETH and LTC start later: NaN until their first price, never after.
    first = [int(np.argmax(~np.isnan(table.prices[:, i]))) for i in range(3)]
    assert first == [0, 1077, 940]
    for i, start in enumerate(first):
        assert not np.isnan(table.prices[start:, i]).any()
    assert table.prices[-1].tolist() == [8709.49, 164.52, 57.88]
    # One stretch of 12 missing days in the published file.
    assert [(when, missing) for when, missing in table.gaps()] == [
        (int(table.times[np.argmax(np.diff(table.times))]), 12)
    ]


def test_plain_asset_columns_and_epoch_dates(tmp_path: Path) -> None:
    path = write(tmp_path, "date,btc,ETH\n1700000000,100,10\n1700086400000,110,11.5\n")
    table = read_price_table(path)
    assert table.assets == ("BTC", "ETH")
    assert table.times.tolist() == [1700000000000, 1700086400000]
    assert table.prices.tolist() == [[100.0, 10.0], [110.0, 11.5]]
    assert table.gaps() == []


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "prices.csv: the file is empty"),
        ("date\n2024-01-01\n", "prices.csv:1: no price column"),
        ("date,BTC\n", "prices.csv: no rows after the header"),
        ("date,BTC\n2024-01-01,0\n", "prices.csv:2: BTC: price 0 is not positive"),
        ("date,BTC\n2024-01-01,-5\n", "prices.csv:2: BTC: price -5 is not positive"),
        ("date,BTC\n2024-01-01,abc\n", "prices.csv:2: BTC 'abc' is not a number"),
        ("date,BTC\n2024-01-01,nan\n", "prices.csv:2: BTC 'nan' is not a number"),
        ("date,BTC\n2024-01-02,1\n2024-01-01,2\n", "prices.csv:3: date '2024-01-01' is before"),
        ("date,BTC\n2024-01-01,1\n2024-01-01,2\n", "prices.csv:3: date '2024-01-01' repeats"),
        ("date,BTC\nyesterday,1\n", "prices.csv:2: date"),
        ("date,BTC,ETH\n2024-01-01,1,\n2024-01-02,1,2\n2024-01-03,1,\n",
         "prices.csv:4: ETH: missing price after its first one"),
        ("date,BTC,ETH\n2024-01-01,1,\n", "prices.csv: no price at all for ETH"),
        ("date,BTC,btc\n2024-01-01,1,2\n", "prices.csv:1: asset BTC has two columns"),
        ("date,B T C\n2024-01-01,1\n", "prices.csv:1: column 2 'B T C' is not an asset name"),
    ],
)  # fmt: skip
def test_bad_tables_name_the_line(tmp_path: Path, text: str, message: str) -> None:
    path = write(tmp_path, text)
    with pytest.raises(DataFileError) as info:
        read_price_table(path)
    assert str(info.value).startswith(str(path.parent / message))


def test_a_missing_file_is_a_file_error(tmp_path: Path) -> None:
    with pytest.raises(DataFileError, match="cannot read the file"):
        read_price_table(tmp_path / "absent.csv")
