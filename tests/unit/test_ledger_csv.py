"""The generic ledger CSV: every kind read exactly, every bad row named by its line,
and write -> read giving back exactly what was written."""

from __future__ import annotations

import io
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cryptodesk.adapters.files.ledger_csv import (
    COLUMNS,
    LedgerFileError,
    parse_ledger,
    read_ledger,
    write_ledger_csv,
)
from cryptodesk.domain.errors import DomainError
from cryptodesk.domain.timeutil import to_iso
from cryptodesk.portfolio.ledger import LedgerEntry

DATA = Path(__file__).resolve().parents[1] / "data" / "ledger"
HEADER = ",".join(COLUMNS)
D = Decimal
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def e(id: str, ts: int, kind: str, account: str, asset: str, amount: str, **kw: Any) -> LedgerEntry:
    return LedgerEntry(
        id=id, timestamp=ts, kind=kind, account=account, asset=asset, amount=D(amount), **kw
    )


BASE = {"id": "x", "timestamp": "2024-01-01T00:00:00Z", "kind": "deposit", "account": "w",
        "asset": "BTC", "amount": "1"}  # fmt: skip


def t(iso: str) -> int:
    """Epoch ms of a UTC time, computed here independently of the code under test."""
    return (datetime.fromisoformat(iso).replace(tzinfo=UTC) - EPOCH) // timedelta(milliseconds=1)


def row(**cells: str) -> str:
    """A generic row: ``BASE`` with ``cells`` changed (``""`` empties a cell)."""
    merged = {**BASE, **cells}
    return ",".join(merged.get(c, "") for c in COLUMNS)


def one(**cells: str) -> LedgerEntry:
    [entry] = parse_ledger(HEADER + "\n" + row(**cells) + "\n")
    return entry


def error(text: str) -> LedgerFileError:
    with pytest.raises(LedgerFileError) as info:
        parse_ledger(text)
    return info.value


def bad_row(**cells: str) -> LedgerFileError:
    return error(f"{HEADER}\n{row(id='ok')}\n{row(**cells)}\n")


# ---- the sample file: one row of every kind ----------------------------------------


def test_sample_file_reads_every_kind_exactly() -> None:
    k, n = "kraken", "ledger-nano"
    usd = {"counter_asset": "USD", "fee_asset": "USD"}
    # fmt: off
    assert read_ledger(DATA / "generic.csv") == [
        e("dep-1", t("2024-01-02T09:00:00"), "deposit", k, "USD", "10000",
          note="wire from bank"),
        e("buy-1", t("2024-01-03T10:15:00"), "buy", k, "BTC", "0.25", **usd,
          counter_amount=D("10500.00"), fee_amount=D("16.80"), note="limit order",
          external_id="TXID-1"),
        e("buy-2", t("2024-02-01T08:00:00.250"), "buy", k, "ETH", "2", counter_asset="BTC",
          counter_amount=D("0.1"), value=D("4300.00"),
          note="crypto-to-crypto: value is the fair value in USD"),
        e("xfer-1", t("2024-02-10T12:00:00"), "transfer", k, "BTC", "0.1", fee_asset="BTC",
          fee_amount=D("0.0001"), to_account=n, fee_value=D("4.75"), note="to cold storage"),
        e("stk-1", t("2024-03-01T00:00:00"), "income", k, "ETH", "0.0125", subkind="staking",
          value=D("41.25"), note="weekly staking reward"),
        e("air-1", t("2024-04-01T00:00:00"), "income", n, "ARB", "100", subkind="airdrop",
          value=D("112.5"), note="epoch milliseconds work too"),
        e("buy-3", t("2024-04-01T07:00:00"), "buy", k, "BTC", "0.1", **usd,
          counter_amount=D("6900"), fee_amount=D("11.04")),
        e("sell-1", t("2024-05-01T16:30:00"), "sell", k, "BTC", "0.1", **usd,
          counter_amount=D("6300"), fee_amount=D("10.08"), lot_ids=(("buy-1", D("0.1")),),
          note="specific lots, naive time is UTC"),
        e("spend-1", t("2024-06-01T18:00:00"), "spend", n, "BTC", "0.001", value=D("67.80"),
          note="coffee machine"),
        e("fee-1", t("2024-06-02T00:00:00"), "fee", k, "ETH", "0.002", value=D("7.10"),
          note="account maintenance fee"),
        e("wd-1", t("2024-06-03T00:00:00"), "withdrawal", k, "USD", "500", fee_asset="USD",
          fee_amount=D("5"), note="to bank"),
        e("sell-1-rev", t("2024-06-04T00:00:00"), "sell", k, "BTC", "0.1", **usd,
          counter_amount=D("6300"), fee_amount=D("10.08"), lot_ids=(("buy-1", D("0.1")),),
          reverses="sell-1", note="reverses sell-1 (wrong price)"),
        e("sell-1b", t("2024-05-01T16:30:00"), "sell", k, "BTC", "0.1", **usd,
          counter_amount=D("6350"), fee_amount=D("10.16"),
          lot_ids=(("buy-1", D("0.04")), ("buy-3", D("0.06"))), note="the corrected sale"),
    ]
    # fmt: on
    # Decimals keep the digits as written: 10500.00 is not 10500.
    assert str(read_ledger(DATA / "generic.csv")[1].counter_amount) == "10500.00"


def test_columns_in_any_order_with_optional_columns() -> None:
    text = (
        "note,external_id,lot_ids,value,to_account,fee_amount,fee_asset,counter_amount,"
        "counter_asset,amount,asset,account,kind,timestamp,id,subkind,tags\n"
        "hi,EX-9,,12.5,,,,,,3,DOT,w,income,2024-01-01T00:00:00Z,i1,interest,a;b\n"
    )
    assert parse_ledger(text) == [
        e("i1", 1704067200000, "income", "w", "DOT", "3", subkind="interest",
          value=D("12.5"), note="hi", external_id="EX-9", tags=("a", "b")),
    ]  # fmt: skip


def test_header_names_are_case_and_space_blind() -> None:
    header = " ID , Timestamp ," + HEADER.split(",", 2)[2].upper()
    text = header + "\n" + row(id="a", timestamp="1704067200000", kind="Deposit")
    [entry] = parse_ledger(text)
    assert (entry.id, entry.kind, entry.timestamp) == ("a", "deposit", 1704067200000)


@pytest.mark.parametrize(
    ("kind", "subkind", "expected"),
    [("income:staking", "", "staking"), ("income", "mining", "mining"),
     ("income:airdrop", "airdrop", "airdrop"), ("INCOME:Custom", "", "Custom")],
)  # fmt: skip
def test_income_subkind_in_kind_or_column(kind: str, subkind: str, expected: str) -> None:
    text = HEADER + ",subkind\n" + row(kind=kind, value="9") + f",{subkind}\n"
    assert parse_ledger(text)[0].subkind == expected


def test_empty_cells_are_absent_and_numbers_are_exact() -> None:
    entry = one(amount="1e-3", value="0")
    assert entry.amount == D("0.001")
    assert entry.value == D("0")
    assert (entry.counter_asset, entry.fee_asset, entry.fee_amount, entry.lot_ids) == (
        None, None, None, ()
    )  # fmt: skip


def test_blank_account_takes_the_account_argument() -> None:
    text = HEADER + "\n" + row(account="") + "\n"
    assert parse_ledger(text, account="cold")[0].account == "cold"
    assert "account is required" in str(error(text))


def test_note_keeps_its_spaces_commas_and_newlines() -> None:
    text = HEADER + "\n" + row(note='"  two,\nlines  "') + "\n"
    assert parse_ledger(text)[0].note == "  two,\nlines  "


def test_identical_duplicate_rows_are_dropped() -> None:
    assert len(parse_ledger(f"{HEADER}\n{row()}\n{row()}\n")) == 1


def test_bom_and_crlf_are_accepted(tmp_path: Path) -> None:
    path = tmp_path / "l.csv"
    path.write_bytes(("\ufeff" + HEADER + "\r\n" + row() + "\r\n").encode())
    assert read_ledger(path)[0].id == "x"


# ---- bad input: the first bad row fails the whole file, by line ---------------------


@pytest.mark.parametrize(
    ("cells", "message"),
    [
        ({"kind": "swap"}, "line 3: kind 'swap' is not one of buy, sell, deposit"),
        ({"kind": "staking"}, "(write income:staking)"),
        ({"kind": ""}, "line 3: kind is required"),
        ({"amount": "-1"}, "line 3: amount must be positive, got -1"),
        ({"amount": "0"}, "line 3: amount must be positive, got 0"),
        ({"amount": ""}, "line 3: amount is required"),
        ({"amount": '"1,000"'}, "line 3: amount '1,000' is not a decimal number"),
        ({"amount": "1_000"}, "line 3: amount '1_000' is not a decimal number"),
        ({"amount": "nan"}, "line 3: amount 'nan' is not a decimal number"),
        ({"timestamp": "yesterday"}, "line 3: timestamp 'yesterday' is neither epoch"),
        ({"timestamp": ""}, "line 3: timestamp is required"),
        ({"timestamp": "1704067200"}, "line 3: timestamp '1704067200' is out of range"),
        ({"id": ""}, "line 3: id is required"),
        ({"asset": ""}, "line 3: asset is required"),
        ({"kind": "buy"}, "line 3: counter_asset is required"),
        ({"kind": "buy", "counter_asset": "USD"}, "line 3: counter_amount is required"),
        ({"kind": "transfer"}, "line 3: to_account is required"),
        ({"kind": "income", "value": "1"}, "line 3: subkind is required"),
        ({"kind": "sell", "counter_asset": "USD", "counter_amount": "5", "lot_ids": "b1"},
         "line 3: lot_ids 'b1' is not buy_id:amount;buy_id:amount"),
        ({"kind": "sell", "counter_asset": "USD", "counter_amount": "5", "lot_ids": "b1:x"},
         "line 3: lot_ids amount 'x' is not a decimal number"),
        ({"kind": "sell", "counter_asset": "USD", "counter_amount": "5", "lot_ids": "b1:0.5"},
         "line 3: lot_ids amounts must add up to amount"),
        ({"fee_asset": "BTC"}, "line 3: fee_asset and fee_amount go together"),
        ({"value": "-2"}, "line 3: value must be zero or positive, got -2"),
    ],
)  # fmt: skip
def test_bad_rows_name_their_line(cells: dict[str, str], message: str) -> None:
    err = bad_row(**cells)
    assert message in str(err)
    assert err.line == 3
    assert isinstance(err, DomainError)


def test_error_carries_field_and_reason() -> None:
    err = bad_row(amount="-1")
    assert (err.field, err.reason) == ("amount", "amount must be positive, got -1")


def test_a_bad_last_row_fails_the_whole_file() -> None:
    good = [row(id=f"d{i}") for i in range(50)]
    err = error("\n".join([HEADER, *good, row(id="z", amount="-1")]) + "\n")
    assert err.line == 52


def test_line_numbers_are_physical_lines() -> None:
    ok = row(note='"multi\nline\nnote"')
    bad = row(id="b", kind="nope")
    assert error(f"{HEADER}\n\n{ok}\n\n{bad}\n").line == 7


def test_kind_and_subkind_column_must_agree() -> None:
    text = HEADER + ",subkind\n" + row(kind="income:staking") + ",mining\n"
    assert "kind says subkind 'staking' but the subkind column says 'mining'" in str(error(text))


def test_duplicate_id_with_other_content_is_an_error() -> None:
    err = error(f"{HEADER}\n{row()}\n{row(amount='2')}\n")
    assert str(err) == "line 3: id 'x' is already used on line 2 by a different entry"


@pytest.mark.parametrize(
    ("header", "message"),
    [
        (HEADER + ",colour", "line 1: unknown column 'colour'"),
        (HEADER.replace(",note", ""), "line 1: missing column(s): note"),
        (HEADER.replace("value,lot_ids,", ""), "line 1: missing column(s): value, lot_ids"),
        (HEADER + ",note", "line 1: column 'note' appears twice"),
        ("date,amount,asset", "line 1: unrecognised header 'date,amount,asset'"),
    ],
)
def test_wrong_header(header: str, message: str) -> None:
    assert str(error(header + "\n")).startswith(message)


def test_row_of_wrong_width() -> None:
    assert str(error(f"{HEADER}\na,b,c\n")) == "line 2: expected 14 cells, got 3"


def test_empty_file_and_unreadable_files(tmp_path: Path) -> None:
    assert str(error("\n\n")) == "the file is empty"
    with pytest.raises(LedgerFileError, match="cannot read"):
        read_ledger(tmp_path / "missing.csv")
    latin = tmp_path / "latin.csv"
    latin.write_bytes(HEADER.encode() + b"\n" + row(id="caf\xe9").encode("latin-1") + b"\n")
    with pytest.raises(LedgerFileError) as info:
        read_ledger(latin)
    err = info.value
    assert (str(err), err.name) == ("line 2: not UTF-8 text", str(latin))


def test_unknown_source_and_forced_source() -> None:
    text = HEADER + "\n"
    with pytest.raises(LedgerFileError, match="source 'csv' is not one of"):
        parse_ledger(text, source="csv")  # type: ignore[arg-type]
    with pytest.raises(LedgerFileError, match=r"expected a Kraken ledgers\.csv"):
        parse_ledger(text, source="kraken")
    assert error("\n\nx,y\n").name == "<upload>"


# ---- writing and the round trip ---------------------------------------------------------


def test_write_then_read_gives_back_the_sample(tmp_path: Path) -> None:
    entries = read_ledger(DATA / "generic.csv")
    out = tmp_path / "out.csv"
    write_ledger_csv(entries, out)
    again = read_ledger(out)
    assert again == entries
    assert [str(x.amount) for x in again] == [str(x.amount) for x in entries]
    assert (
        out.read_text()
        .splitlines()[2]
        .startswith("buy-1,2024-01-03T10:15:00.000Z,buy,kraken,BTC,0.25,USD,10500.00,USD,16.80,")
    )


def test_write_to_a_stream_and_refuse_what_cannot_be_written() -> None:
    buffer = io.StringIO()
    write_ledger_csv([e("a", 1704067200000, "deposit", "w", "BTC", "1E+2")], buffer)
    written = buffer.getvalue().splitlines()[1]
    assert written.startswith("a,2024-01-01T00:00:00.000Z,deposit,w,BTC,1E+2,")
    bad = e("s", 1704067200000, "sell", "w", "BTC", "1", counter_asset="USD",
            counter_amount=D("1"), lot_ids=(("a;b", D("1")),))  # fmt: skip
    with pytest.raises(DomainError, match="contains ';'"):
        write_ledger_csv([bad], io.StringIO())


def test_every_millisecond_survives_the_round_trip() -> None:
    # These instants do not survive a float seconds conversion (x.001 * 1000).
    stamps = [1_704_067_200_001, 1_718_000_000_123, 1_262_304_000_999, 4_102_444_799_999]
    entries = [e(f"t{i}", ts, "deposit", "w", "BTC", "1") for i, ts in enumerate(stamps)]
    buffer = io.StringIO()
    write_ledger_csv(entries, buffer)
    assert [x.timestamp for x in parse_ledger(buffer.getvalue())] == stamps
    assert to_iso(stamps[0]) in buffer.getvalue()


_text = st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"),
                max_size=12)  # fmt: skip
_name = st.text("abcdefghijklmnopqrstuvwxyz0123456789-_:./", min_size=1, max_size=10)
# Exact decimals with every kind of exponent: 0.0012, 12, 1.200, 5E+3.
_positive = st.builds(lambda n, e: D(n).scaleb(e), st.integers(1, 10**12), st.integers(-10, 3))


@st.composite
def entries(draw: st.DrawFn) -> LedgerEntry:
    kind = draw(st.sampled_from(["buy", "sell", "deposit", "withdrawal", "transfer", "income",
                                 "spend", "fee"]))  # fmt: skip
    amount = draw(_positive)
    kw: dict[str, object] = {}
    if kind in ("buy", "sell"):
        kw |= {"counter_asset": "USD", "counter_amount": draw(_positive)}
    if kind == "transfer":
        kw["to_account"] = draw(_name.filter(lambda n: n != "acct"))
    if kind == "income":
        kw["subkind"] = draw(st.sampled_from(["staking", "Airdrop", "interest"]))
    if kind != "fee" and draw(st.booleans()):
        kw |= {"fee_asset": draw(_name), "fee_amount": draw(_positive)}
    if kind in ("sell", "withdrawal") and draw(st.booleans()):
        kw["lot_ids"] = ((draw(_name), amount),)
    entry_id = draw(_name)
    return LedgerEntry(
        id=entry_id, timestamp=draw(st.integers(1_230_768_000_000, 32_503_679_999_999)),
        kind=kind, account="acct", asset=draw(_name), amount=amount,  # type: ignore[arg-type]
        value=draw(st.none() | st.just(D("0.00")) | _positive),
        note=draw(_text), fee_value=draw(st.none() | _positive),
        reverses=draw(st.none() | _name.filter(lambda r: r != entry_id)),
        external_id=draw(st.none() | _name), tags=tuple(draw(st.lists(_name, max_size=2))),
        **kw,  # type: ignore[arg-type]
    )  # fmt: skip


@settings(max_examples=200, deadline=None)
@given(st.lists(entries(), max_size=6, unique_by=lambda x: x.id))
def test_round_trip_property(generated: list[LedgerEntry]) -> None:
    buffer = io.StringIO()
    write_ledger_csv(generated, buffer)
    back = parse_ledger(buffer.getvalue()) if generated else []
    assert back == generated
    for a, b in zip(back, generated, strict=True):
        for field in ("amount", "counter_amount", "fee_amount", "value", "fee_value"):
            x, y = getattr(a, field), getattr(b, field)
            assert (x is None and y is None) or x.as_tuple() == y.as_tuple()
