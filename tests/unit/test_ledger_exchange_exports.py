"""Binance, Coinbase and Kraken exports in their own layouts -> exact ledger entries,
with stable ids and bad rows named by their line."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from cryptodesk.adapters.files import ledger_binance, ledger_kraken
from cryptodesk.adapters.files.ledger_csv import LedgerFileError, parse_ledger, read_ledger
from cryptodesk.portfolio.ledger import LedgerEntry

DATA = Path(__file__).resolve().parents[1] / "data" / "ledger"
D = Decimal
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def t(iso: str) -> int:
    return (datetime.fromisoformat(iso).replace(tzinfo=UTC) - EPOCH) // timedelta(milliseconds=1)


def e(ts: str, kind: str, asset: str, amount: str, **kw: Any) -> LedgerEntry:
    """An entry without its id (ids are checked on their own)."""
    kw.setdefault("account", "x")
    for key in ("counter_amount", "fee_amount", "value", "fee_value"):
        if isinstance(kw.get(key), str):
            kw[key] = D(kw[key])
    return LedgerEntry(id="-", timestamp=t(ts), kind=kind, asset=asset, amount=D(amount), **kw)


def read(name: str, **kw: Any) -> list[LedgerEntry]:
    return read_ledger(DATA / name, account="x", **kw)


def no_ids(entries: list[LedgerEntry], **also: Any) -> list[LedgerEntry]:
    return [LedgerEntry(**{**_fields(x), "id": "-", **also}) for x in entries]


def _fields(entry: LedgerEntry) -> dict[str, Any]:
    return {f: getattr(entry, f) for f in entry.__slots__}  # type: ignore[attr-defined]


def error(text: str, source: str = "auto") -> LedgerFileError:
    with pytest.raises(LedgerFileError) as info:
        parse_ledger(text, source=source)  # type: ignore[arg-type]
    return info.value


# ---- Binance ------------------------------------------------------------------------


def test_binance_spot_trade_history() -> None:
    got = read("binance_trade_history.csv")
    usdt = {"counter_asset": "USDT"}
    assert no_ids(got) == [
        e("2024-02-17T23:59:59", "sell", "SOL", "3.5", counter_asset="FDUSD",
          counter_amount="378.875"),
        e("2024-02-18T07:00:00", "buy", "1INCH", "1000", **usdt, counter_amount="456.7",
          fee_asset="1INCH", fee_amount="1"),
        *[e("2024-02-20T18:45:10", "buy", "BTC", "0.02", **usdt, counter_amount="1039.6002",
            fee_asset="BTC", fee_amount="0.00002")] * 2,
        e("2024-03-01T09:10:02", "buy", "ETH", "0.2", counter_asset="BTC",
          counter_amount="0.011224", fee_asset="BNB", fee_amount="0.00015"),
        e("2024-03-05T14:22:31", "sell", "BTC", "0.015", **usdt, counter_amount="1005.1875",
          fee_asset="USDT", fee_amount="1.0051875"),
    ]  # fmt: skip
    ids = [x.id for x in got]
    # Pinned: a changed id scheme would import every earlier file a second time.
    assert ids[2] == "binance:a2bff1524414d5106bfce93f"
    assert ids[3] == "binance:a2bff1524414d5106bfce93f:2"  # the identical second fill
    assert len(set(ids)) == 6
    assert all(x.external_id is None and x.value is None for x in got)


def test_binance_older_trade_history() -> None:
    assert no_ids(read("binance_trade_history_2019.csv")) == [
        e("2019-06-01T10:00:00", "buy", "BNB", "10", counter_asset="BTC", counter_amount="0.041",
          fee_asset="BNB", fee_amount="0.0075"),
        e("2019-06-02T11:30:00", "sell", "ETH", "1.5", counter_asset="USDT",
          counter_amount="375.75", fee_asset="USDT", fee_amount="0.37575"),
    ]  # fmt: skip


def test_binance_transaction_history_statement() -> None:
    got = read("binance_statement.csv")
    assert no_ids(got) == [
        e("2024-01-10T08:00:00", "deposit", "USDT", "2000"),
        # Two fills in one second, summed per coin.
        e("2024-01-10T09:30:15", "buy", "BTC", "0.022", counter_asset="USDT",
          counter_amount="1000", fee_asset="BTC", fee_amount="0.000022"),
        # Sold at 12:00:59, revenue and fee booked at 12:01:00: one trade.
        e("2024-01-11T12:00:59", "sell", "ETH", "0.5", counter_asset="USDT",
          counter_amount="1300", fee_asset="BNB", fee_amount="6.8E-7"),
        e("2024-01-12T00:00:00", "income", "USDT", "0.12345678", subkind="interest"),
        e("2024-01-12T03:00:00", "income", "DOT", "0.0512", subkind="staking"),
        e("2024-01-14T15:45:00", "buy", "SOL", "1.05", counter_asset="USDT",
          counter_amount="100"),
        e("2024-01-15T20:00:00", "withdrawal", "BTC", "0.01", note="Withdraw fee is included"),
        e("2024-01-16T06:00:00", "income", "ARB", "12.5", subkind="airdrop"),
    ]  # fmt: skip
    assert [x.id for x in got] == [x.id for x in read("binance_statement.csv")]
    assert all(x.id.startswith("binance:") for x in got)


def test_binance_account_defaults_to_the_exchange() -> None:
    assert {x.account for x in read_ledger(DATA / "binance_statement.csv")} == {"binance"}


@pytest.mark.parametrize(
    ("rows", "line", "message"),
    [
        (["1,2024-01-01 00:00:00,USD-M Futures,Realized Profit and Loss,USDT,-3,"], 2,
         "account 'USD-M Futures' is not supported"),
        (["1,2024-01-01 00:00:00,Spot,Mystery Bonus,USDT,3,"], 2,
         "operation 'Mystery Bonus' is not supported"),
        (["1,2024-01-01 00:00:00,Spot,Deposit,USDT,-3,"], 2,
         "a 'Deposit' row with a negative change is not supported"),
        (["1,2024-01-01 00:00:00,Spot,Deposit,USDT,abc,"], 2, "Change 'abc' is not a decimal"),
        (["1,2024-01-01 00:00:00,Spot,Deposit,USDT,1,", "1,01/02/2024 10:00,Spot,Deposit,BTC,1,"],
         3, "UTC_Time '01/02/2024 10:00' is neither epoch milliseconds nor ISO 8601"),
        (["1,2024-01-01 00:00:00,Spot,Transaction Buy,BTC,0.1,"], 2,
         "give nothing for BTC: one coin for another is supported"),
        (["1,24-01-01 00:00:00,Spot,Small assets exchange BNB,TRX,-10,",
          "1,24-01-01 00:00:00,Spot,Small assets exchange BNB,XLM,-3,",
          "1,24-01-01 00:00:00,Spot,Small assets exchange BNB,BNB,0.01,"], 2,
         "give TRX, XLM for BNB"),
        (["1,2024-01-01 00:00:00,Spot,Transaction Buy,BTC,0.1,",
          "1,2024-01-01 00:00:00,Spot,Transaction Spend,USDT,-5000,",
          "1,2024-01-01 00:00:00,Spot,Transaction Fee,BNB,0.01,"], 2,
         "the trade's fee rows add up to -0.01 BNB"),
    ],
)  # fmt: skip
def test_binance_statement_bad_rows(rows: list[str], line: int, message: str) -> None:
    err = error("\n".join([",".join(ledger_binance.STATEMENT), *rows]) + "\n")
    assert err.line == line
    assert message in str(err)


@pytest.mark.parametrize(
    ("cells", "message"),
    [
        ("FOOBAR,BUY,1,1FOO,1BAR,0BAR", "pair 'FOOBAR' has no known quote asset"),
        ("BTCUSDT,HOLD,1,1BTC,1USDT,0USDT", "side 'HOLD' is not BUY or SELL"),
        ("BTCUSDT,BUY,1,1ETH,1USDT,0USDT", "Executed '1ETH' is not an amount of BTC"),
        ("BTCUSDT,BUY,1,0BTC,0USDT,0USDT", "amount must be positive, got 0"),
        ("BTCUSDT,BUY,1,-1BTC,1USDT,0USDT", "Executed '-1' is not an unsigned amount"),
    ],
)
def test_binance_trade_history_bad_rows(cells: str, message: str) -> None:
    err = error(",".join(ledger_binance.TRADES) + "\n2024-01-01 00:00:00," + cells + "\n")
    assert (err.line, message in str(err)) == (2, True), str(err)


def test_binance_pairs_split_by_longest_known_quote() -> None:
    split = ledger_binance.split_pair
    assert split("BTCUSDT") == ("BTC", "USDT")
    assert split("BTCFDUSD") == ("BTC", "FDUSD")
    assert split("ADAEUR") == ("ADA", "EUR")
    assert split("WBTCBTC") == ("WBTC", "BTC")
    assert split("USDTTRY") == ("USDT", "TRY")
    assert split("NEW/PAIRX") == ("NEW", "PAIRX")


# ---- Coinbase -----------------------------------------------------------------------


def test_coinbase_transaction_history_with_ids() -> None:
    got = read("coinbase_transactions.csv")
    usd = {"counter_asset": "USD", "fee_asset": "USD"}
    assert no_ids(got, external_id=None) == [
        e("2024-01-12T15:04:05", "buy", "BTC", "0.01066779", **usd, counter_amount="499.91",
          fee_amount="7.49", note="Bought 0.01066779 BTC for 507.40 USD"),
        e("2024-01-20T10:00:00", "buy", "ETH", "0.5", counter_asset="USDC",
          counter_amount="1235", fee_asset="USDC", fee_amount="2.47", value="1235.00",
          fee_value="2.47",
          note="Bought 0.5 ETH for 1237.47 USDC on ETH-USDC at 2470 USDC/ETH"),
        e("2024-02-01T12:00:00", "sell", "BTC", "0.005", **usd, counter_amount="213.00",
          fee_amount="3.16", note="Sold 0.005 BTC for 209.84 USD"),
        e("2024-02-15T08:30:00", "sell", "ETH", "0.25", counter_asset="USDC",
          counter_amount="682.43", value="682.43", note="Converted 0.25 ETH to 682.43 USDC"),
        e("2024-03-01T00:00:00", "income", "ETH", "0.00123456", subkind="staking", value="4.20"),
        e("2024-03-05T09:00:00", "withdrawal", "BTC", "0.002",
          note="Sent 0.002 BTC to bc1qxy2kgdygjrsqtzq2n0yrf2493p83kkfjhx0wlh"),
        e("2024-03-06T09:00:00", "deposit", "SOL", "2.5", value="325.00",
          note="Received 2.5 SOL from an external account"),
        e("2024-03-07T12:00:00", "income", "GRT", "3.21", subkind="reward", value="1.00",
          note="Received 3.21 GRT from Coinbase Learn"),
        e("2024-03-08T12:00:00", "deposit", "USD", "1000"),
        e("2024-03-09T12:00:00", "withdrawal", "USD", "200", fee_asset="USD", fee_amount="1.50"),
        e("2024-03-10T12:00:00", "sell", "SOL", "1", **usd, counter_amount="145.00",
          fee_amount="0.58", note="Sold 1 SOL for 144.42 USD on SOL-USD at 145.00 USD/SOL"),
        e("2024-03-11T12:00:00", "income", "USDC", "0.5", subkind="staking", value="0.50"),
    ]  # fmt: skip
    assert [x.external_id for x in got] == [f"65a0f1c2d3e4f5a6b7c8d9e{c}" for c in "0123456789ab"]
    assert got[0].id == "coinbase:65a0f1c2d3e4f5a6b7c8d9e0"
    assert all(x.id == f"coinbase:{x.external_id}" for x in got)


def test_coinbase_older_history_without_ids() -> None:
    got = read("coinbase_transactions_2022.csv")
    assert no_ids(got) == [
        e("2022-03-25T06:45:27", "buy", "BTC", "0.00166779", counter_asset="EUR",
          counter_amount="67.01", fee_asset="EUR", fee_amount="2.99",
          note="Bought 0.00166779 BTC for €70.00 EUR"),
        e("2022-04-01T10:00:00", "income", "XLM", "10.1234567", subkind="reward", value="2.02",
          note="Received 10.1234567 XLM from Coinbase Earn"),
        e("2022-05-28T06:23:38", "buy", "ETH2", "0.17305191", counter_asset="ETH",
          counter_amount="0.17305191", value="298.32",
          note="Converted 0.17305191 ETH to 0.17305191 ETH2"),
    ]  # fmt: skip
    assert [x.external_id for x in got] == [None] * 3
    assert got[0].id.startswith("coinbase:")
    assert len(got[0].id) == len("coinbase:") + 24


COINBASE_HEADER = (
    "ID,Timestamp,Transaction Type,Asset,Quantity Transacted,Price Currency,Price at Transaction,"
    "Subtotal,Total (inclusive of fees and/or spread),Fees and/or Spread,Notes"
)


@pytest.mark.parametrize(
    ("cells", "message"),
    [
        ("Mystery Payout,BTC,0.1,USD,$1,$1,$1,$0,", "transaction type 'Mystery Payout'"),
        ("Convert,BTC,0.1,USD,$1,$1,$1,$0,Converted stuff", "Convert notes 'Converted stuff'"),
        ("Buy,BTC,,USD,$1,$1,$1,$0,", "Quantity Transacted is required"),
        ("Buy,BTC,0.1,USD,$1,,$1,$0,", "Subtotal is required for a trade"),
        ("Receive,BTC,-0,USD,$1,$1,$1,$0,", "amount must be positive, got 0"),
    ],
)
def test_coinbase_bad_rows_count_preamble_lines(cells: str, message: str) -> None:
    text = (
        f"\nTransactions\nUser,Jane,abc\n\n{COINBASE_HEADER}\nid1,2024-01-01 00:00:00 UTC,{cells}\n"
    )
    err = error(text)
    assert err.line == 6
    assert message in str(err)


def test_coinbase_header_must_come_early() -> None:
    text = "\n".join(["preamble"] * 12 + [COINBASE_HEADER]) + "\n"
    assert "unrecognised header 'preamble'" in str(error(text))
    assert "expected a Coinbase transaction history header" in str(error(text, "coinbase"))


# ---- Kraken -------------------------------------------------------------------------


def test_kraken_ledgers() -> None:
    got = read("kraken_ledgers.csv")
    assert no_ids(got) == [
        e("2024-02-10T10:08:19", "deposit", "EUR", "500", external_id="QCCNPU5-JCHILF-COMBWG"),
        e("2024-02-11T18:55:10", "buy", "DOT", "6.25", counter_asset="EUR",
          counter_amount="200", fee_asset="EUR", fee_amount="0.32",
          external_id="TOUPQD-AQOLA-AYA2VU"),
        e("2024-02-12T17:46:21", "buy", "ETH", "0.038", counter_asset="BTC",
          counter_amount="0.002", fee_asset="BTC", fee_amount="0.0000052",
          external_id="TCSZJV-5YGSR-E3OQ6Q"),
        e("2024-02-25T01:14:02", "income", "DOT", "0.031245", subkind="staking",
          external_id="STHFSYV-COKEV-2N3FK7"),
        e("2024-03-08T09:29:47", "income", "ETH", "0.00001234", subkind="staking",
          external_id="EARNRWD-PQ7LS-3HZK2C"),
        e("2024-03-09T12:00:00", "buy", "BTC", "0.00148", counter_asset="USD",
          counter_amount="100", fee_asset="USD", fee_amount="1.49",
          external_id="RKB3Q7T-LXIBN-CMVDLS"),
        e("2024-03-15T08:05:12", "withdrawal", "BTC", "0.02", fee_asset="BTC",
          fee_amount="0.00001", external_id="FTBYaWb-BfahyMc2OmXHb8w2yL1awG"),
    ]  # fmt: skip
    assert [x.id for x in got] == [
        "kraken:LWJX7H-5RJ2S-E2ZRQ6", "kraken:TOUPQD-AQOLA-AYA2VU", "kraken:TCSZJV-5YGSR-E3OQ6Q",
        "kraken:LVOEPI-YP2LX-H2RBFQ", "kraken:LXCWAU-5PRVS-LJJ2XU", "kraken:RKB3Q7T-LXIBN-CMVDLS",
        "kraken:LG4DJE-UYXO7-3PJTKB",
    ]  # fmt: skip


def test_kraken_trades_match_the_same_trades_in_the_ledger() -> None:
    trades = read("kraken_trades.csv")
    assert no_ids(trades) == [
        e("2024-02-11T18:55:10.472", "buy", "DOT", "6.25", counter_asset="EUR",
          counter_amount="200", fee_asset="EUR", fee_amount="0.32",
          external_id="TOUPQD-AQOLA-AYA2VU"),
        e("2024-02-12T17:46:21.092", "buy", "ETH", "0.038", counter_asset="BTC",
          counter_amount="0.002", fee_asset="BTC", fee_amount="0.0000052",
          external_id="TCSZJV-5YGSR-E3OQ6Q"),
        e("2024-04-02T09:15:44.100", "sell", "BTC", "0.01", counter_asset="USD",
          counter_amount="660", fee_asset="USD", fee_amount="1.056",
          external_id="THVRQM-33VKH-UCI7BS"),
    ]  # fmt: skip
    ledger = {x.id: x for x in read("kraken_ledgers.csv")}
    for trade in trades[:2]:
        same = ledger[trade.id]
        assert (same.kind, same.asset, same.amount, same.counter_amount, same.fee_amount) == (
            trade.kind, trade.asset, trade.amount, trade.counter_amount, trade.fee_amount
        )  # fmt: skip


KRAKEN_HEADER = "txid,refid,time,type,subtype,aclass,asset,amount,fee,balance"


def test_kraken_returned_deposit_is_a_withdrawal() -> None:
    text = KRAKEN_HEADER + "\nL9,R9,2024-01-01 00:00:00,deposit,,currency,XXBT,-0.5,0,0\n"
    [entry] = parse_ledger(text, account="kr")
    assert entry == LedgerEntry(
        id="kraken:L9", timestamp=t("2024-01-01T00:00:00"), kind="withdrawal", account="kr",
        asset="BTC", amount=D("0.5"), note="reversed deposit", external_id="R9",
    )  # fmt: skip


@pytest.mark.parametrize(
    ("rows", "line", "message"),
    [
        (["L1,R1,2024-01-01 00:00:00,margin,,currency,XXBT,0.1,0,0.1"], 2,
         "ledger type 'margin' is not supported"),
        (["L1,R1,2024-01-01 00:00:00,earn,,currency,ETH,0.1,0,0.1"], 2,
         "an earn row without subtype may be a reward or a move between wallets"),
        (["L1,R1,2024-01-01 00:00:00,staking,,currency,DOT.S,-1,0,0"], 2,
         "a staking row with amount -1 is not supported"),
        (["L1,R1,2024-01-01 00:00:00,deposit,,currency,ZEUR,1,-1,0"], 2, "fee -1 is negative"),
        (["L1,R1,2024-01-01 00:00:00,deposit,,currency,ZEUR,x,0,0"], 2,
         "amount 'x' is not a decimal number"),
        (["L1,T1,2024-01-01 00:00:00,trade,,currency,ZEUR,-10,0,0",
          "L2,T1,2024-01-01 00:00:00,trade,,currency,XXBT,0.1,0,0",
          "L3,T1,2024-01-01 00:00:00,trade,,currency,XETH,1,0,0"], 2,
         "trade T1 moves BTC, ETH, EUR: one asset out and one in expected"),
    ],
)  # fmt: skip
def test_kraken_ledger_bad_rows(rows: list[str], line: int, message: str) -> None:
    err = error("\n".join([KRAKEN_HEADER, *rows]) + "\n")
    assert err.line == line
    assert message in str(err)


def test_kraken_asset_codes_and_pairs() -> None:
    codes = ("XXBT", "XBT.M", "XETH", "ZUSD", "ZEUR", "DOT.S", "DOT28.S", "ETH2.S", "USDC.HOLD",
             "XXDG", "SOL")  # fmt: skip
    assert [ledger_kraken.asset_code(c) for c in codes] == [
        "BTC", "BTC", "ETH", "USD", "EUR", "DOT", "DOT", "ETH2", "USDC", "DOGE", "SOL",
    ]  # fmt: skip
    split = ledger_kraken.split_pair
    assert split("XXBTZUSD") == ("BTC", "USD")
    assert split("XETHXXBT") == ("ETH", "BTC")
    assert split("XTZEUR") == ("XTZ", "EUR")
    assert split("XBTPYUSD") == ("BTC", "PYUSD")
    assert split("USDCUSDT") == ("USDC", "USDT")
    assert split("XBT/USD") == ("BTC", "USD")


# ---- detection and idempotency ------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "source"),
    [("binance_trade_history.csv", "binance"), ("binance_statement.csv", "binance"),
     ("coinbase_transactions.csv", "coinbase"), ("coinbase_transactions_2022.csv", "coinbase"),
     ("kraken_ledgers.csv", "kraken"), ("kraken_trades.csv", "kraken")],
)  # fmt: skip
def test_auto_detection_equals_the_named_source(name: str, source: str) -> None:
    auto = read(name)
    assert auto == read(name, source=source)
    assert auto == read(name)  # the same file twice: the same ids, the same entries
    assert [x.timestamp for x in auto] == sorted(x.timestamp for x in auto)
