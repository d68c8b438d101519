"""The ledger hash chain: canonical bytes, links, and what verification names."""

from __future__ import annotations

import dataclasses
import hashlib
from decimal import Decimal

from hypothesis import given
from hypothesis import strategies as st

from cryptodesk.portfolio.hash_chain import (
    CANONICAL_FIELDS,
    GENESIS,
    ChainHead,
    ChainLink,
    canonical,
    extend,
    from_fields,
    to_fields,
    verify,
)
from cryptodesk.portfolio.ledger import LedgerEntry

T0 = 1_714_521_600_000  # 2024-05-01T00:00:00Z


def entry(i: int, amount: str = "0.5") -> LedgerEntry:
    return LedgerEntry(
        f"e{i}", T0 + i, "buy", "binance", "BTC", Decimal(amount),
        counter_asset="USD", counter_amount=Decimal("30000.00"),
    )  # fmt: skip


def chain(n: int) -> tuple[list[ChainLink], ChainHead]:
    fields = [to_fields(entry(i)) for i in range(1, n + 1)]
    links = extend(ChainHead(0, GENESIS), [canonical(f) for f in fields])
    out = [ChainLink(seq, f, prev, h) for f, (seq, prev, h) in zip(fields, links, strict=True)]
    return out, ChainHead(n, out[-1].hash if out else GENESIS)


def test_canonical_bytes_are_sorted_compact_json_with_exact_decimals() -> None:
    e = LedgerEntry(
        "t1", T0, "sell", "kraken", "ETH", Decimal("1.50"),
        counter_asset="EUR", counter_amount=Decimal("4500"), fee_asset="EUR",
        fee_amount=Decimal("0.10"), lot_ids=(("b1", Decimal("1.50")),), note="né",
        tags=("otc",), external_id="K-9",
    )  # fmt: skip
    assert (
        canonical(to_fields(e))
        == (
            '{"account":"kraken","amount":"1.50","asset":"ETH","counter_amount":"4500",'
            '"counter_asset":"EUR","external_id":"K-9","fee_amount":"0.10","fee_asset":"EUR",'
            '"fee_value":null,"id":"t1","kind":"sell","lot_ids":[["b1","1.50"]],"note":"né",'
            '"reverses":null,"subkind":null,"tags":["otc"],"timestamp":1714521600000,'
            '"to_account":null,"value":null}'
        ).encode()
    )


def test_every_entry_field_is_hashed() -> None:
    # A field added to LedgerEntry must be decided on here (see the module docstring).
    assert {f.name for f in dataclasses.fields(LedgerEntry)} == set(CANONICAL_FIELDS)


def test_amounts_are_kept_as_written() -> None:
    a, b = to_fields(entry(1, "1.50")), to_fields(entry(1, "1.5"))
    assert canonical(a) != canonical(b)
    back = from_fields(a)
    assert back == entry(1, "1.50")
    assert str(back.amount) == "1.50"
    assert canonical(to_fields(back)) == canonical(a)


def test_links_are_sha256_of_previous_hash_and_entry() -> None:
    links, head = chain(2)
    first = hashlib.sha256(GENESIS.encode() + canonical(to_fields(entry(1)))).hexdigest()
    second = hashlib.sha256(first.encode() + canonical(to_fields(entry(2)))).hexdigest()
    assert [(lk.seq, lk.prev_hash, lk.hash) for lk in links] == [
        (1, GENESIS, first),
        (2, first, second),
    ]
    report = verify(links, head)
    assert (report.ok, report.entries, report.first_broken, report.head_hash) == (
        True, 2, None, second,
    )  # fmt: skip


def test_an_empty_chain_holds_with_or_without_a_head() -> None:
    assert verify([], None).ok
    assert verify([], ChainHead(0, GENESIS)).head_hash == GENESIS


def test_an_edited_entry_is_named() -> None:
    links, head = chain(5)
    links[2] = dataclasses.replace(links[2], fields={**links[2].fields, "amount": "5"})
    broken = verify(links, head).first_broken
    assert broken is not None
    assert (broken.seq, broken.entry_id, broken.reason) == (3, "e3", "edited")


def test_a_deleted_entry_is_a_gap_before_the_next() -> None:
    links, head = chain(5)
    del links[1]
    report = verify(links, head)
    assert report.entries == 4
    assert report.first_broken is not None
    assert (report.first_broken.seq, report.first_broken.entry_id) == (3, "e3")
    assert report.first_broken.reason == "deleted"
    assert "seq 2 missing" in report.first_broken.message


def test_swapped_entries_are_reordered() -> None:
    links, head = chain(5)
    a, b = links[1], links[3]
    links[1] = dataclasses.replace(b, seq=2)
    links[3] = dataclasses.replace(a, seq=4)
    broken = verify(links, head).first_broken
    assert broken is not None
    assert (broken.seq, broken.entry_id, broken.reason) == (2, "e4", "reordered")


def test_a_deleted_and_renumbered_entry_is_a_bad_link() -> None:
    links, head = chain(4)
    renumbered = [links[0], *(dataclasses.replace(lk, seq=lk.seq - 1) for lk in links[2:])]
    broken = verify(renumbered, ChainHead(3, head.hash)).first_broken
    assert broken is not None
    assert (broken.seq, broken.entry_id, broken.reason) == (2, "e3", "bad_prev_link")


def test_a_truncated_tail_shows_against_the_head() -> None:
    links, head = chain(5)
    broken = verify(links[:3], head).first_broken
    assert broken is not None
    assert (broken.seq, broken.entry_id, broken.reason) == (4, None, "truncated")
    assert "newest 2 were deleted" in broken.message


def test_an_edited_head_is_named() -> None:
    links, head = chain(5)
    cases = {
        ChainHead(5, "f" * 64): (5, "e5", "head_mismatch"),
        ChainHead(3, head.hash): (4, "e4", "head_mismatch"),
        ChainHead(7, head.hash): (6, None, "truncated"),
    }
    for bad_head, expected in cases.items():
        broken = verify(links, bad_head).first_broken
        assert broken is not None
        assert (broken.seq, broken.entry_id, broken.reason) == expected
    missing = verify(links, None).first_broken
    assert missing is not None
    assert missing.reason == "head_mismatch"


def test_junk_in_a_column_is_an_edit_not_a_crash() -> None:
    links, head = chain(3)
    links[0] = dataclasses.replace(links[0], fields={**links[0].fields, "lot_ids": "[oops"})
    links[1] = dataclasses.replace(links[1], prev_hash=None)  # type: ignore[arg-type]
    broken = verify(links, head).first_broken
    assert broken is not None
    assert (broken.seq, broken.reason) == (1, "edited")


@given(st.data())
def test_any_swap_of_two_entries_is_found_where_it_starts(data: st.DataObject) -> None:
    n = data.draw(st.integers(2, 12))
    i = data.draw(st.integers(0, n - 2))
    j = data.draw(st.integers(i + 1, n - 1))
    links, head = chain(n)
    a, b = links[i], links[j]
    links[i], links[j] = dataclasses.replace(b, seq=i + 1), dataclasses.replace(a, seq=j + 1)
    report = verify(links, head)
    assert report.first_broken is not None
    assert (report.first_broken.seq, report.first_broken.entry_id) == (i + 1, f"e{j + 1}")
    assert report.first_broken.reason == "reordered"
    assert report.entries == n
