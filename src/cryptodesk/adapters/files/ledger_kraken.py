"""Kraken exports (History > Export) -> ledger entries.

``ledgers.csv`` is the complete record, one row per balance change:
``txid,refid,time,type,subtype,aclass,asset,amount,fee,balance`` (2024 on also
``subclass`` and ``wallet``; columns are read by name). ``amount`` is signed,
``fee`` is charged on top (the balance moves by ``amount - fee``), ``refid``
ties the rows of one event together and is the trade id of ``trades.csv``.

- ``trade`` rows (and ``spend``/``receive``, Kraken's instant buy) sharing a
  refid are one trade: the asset going out against the one coming in, the
  quote side (fiat, stablecoins, then BTC/ETH) as the counter, the fee on
  whichever leg carries it. ``id`` = ``kraken:<refid>``.
- ``deposit`` / ``withdrawal``: one entry with the row's fee. A row with an
  empty ``txid`` is Kraken's pending copy of a funding row and is skipped (the
  settled row follows). A negative deposit (a returned one) is a withdrawal,
  a positive withdrawal (a cancelled one) a deposit.
- ``staking``, and ``earn`` of subtype ``reward``: ``income:staking``;
  ``invite bonus``: ``income:reward``; ``transfer`` without subtype and a
  positive amount (an airdrop or fork credit): ``income:airdrop``.
- Moves between Kraken's own wallets (``transfer`` spot<->staking/futures,
  ``earn`` allocation/deallocation/autoallocation/migration) are skipped. An
  ``earn`` row without subtype is refused: it may be either.

Single rows get ``id`` = ``kraken:<txid>``; ``external_id`` is the refid.

``trades.csv`` (``txid,ordertxid,pair,time,type,ordertype,price,cost,fee,vol,
...``): one ``buy``/``sell`` of ``vol`` base for ``cost`` quote, fee in the quote,
``id`` = ``kraken:<txid>`` (the same trade read from ledgers.csv gets the same id).

Asset codes: ``XXBT``/``XBT`` -> BTC, ``XETH`` -> ETH, ``ZUSD`` -> USD, ``ZEUR`` ->
EUR, ``XXDG`` -> DOGE...; staked variants (``DOT.S``, ``BTC.M``, ``ETH.P``,
``DOT28.S``, ``USDC.HOLD``) are the asset itself.

Sources: Kraken support, "How to interpret Ledger history fields"
(support.kraken.com/hc/en-us/articles/360001169383) and "How to interpret
asset codes" (.../360001185506); BittyTax src/bittytax/conv/parsers/kraken.py;
CoinTaxman issues 97 and 185 (github.com/provinzio/CoinTaxman) for real rows
and the 2024 columns.
"""

from __future__ import annotations

import re
from collections import defaultdict
from decimal import Decimal
from typing import Final

from cryptodesk.adapters.files.ledger_parsing import (
    LedgerFileError,
    Record,
    Row,
    at_line,
    decimal_cell,
    records,
    timestamp_cell,
    trade_entry,
)
from cryptodesk.domain.errors import DomainError
from cryptodesk.portfolio.ledger import Kind, LedgerEntry

NAME: Final = "kraken"
LEDGER_COLUMNS = ("txid", "refid", "time", "type", "subtype", "aclass", "asset", "amount", "fee")
TRADE_COLUMNS = ("txid", "ordertxid", "pair", "time", "type", "ordertype", "cost", "fee", "vol")
_ALT: Final[dict[str, str]] = {
    "XXBT": "BTC", "XBT": "BTC", "XETH": "ETH", "XXDG": "DOGE", "XDG": "DOGE",
    "XXRP": "XRP", "XLTC": "LTC", "XXLM": "XLM", "XXMR": "XMR", "XZEC": "ZEC",
    "XETC": "ETC", "XMLN": "MLN", "XREP": "REP", "ZUSD": "USD", "ZEUR": "EUR",
    "ZGBP": "GBP", "ZCAD": "CAD", "ZJPY": "JPY", "ZAUD": "AUD",
}  # fmt: skip
_STAKED = re.compile(r"^([A-Z0-9]+?)(?:[0-9]{2})?\.(?:S|M|P|F|B|HOLD)$")
# Quotes of pairs written without the X/Z prefixes (DOTEUR, XBTUSDT, ETHPYUSD).
_PLAIN_QUOTES = (
    "PYUSD", "RLUSD", "USDT", "USDC", "DAI", "EUR", "USD", "GBP", "CAD", "JPY", "AUD",
    "CHF", "XBT", "ETH", "DOT", "SOL",
)  # fmt: skip
_INTERNAL_TRANSFERS = frozenset({
    "spottostaking", "stakingfromspot", "stakingtospot", "spotfromstaking",
    "spottofutures", "spotfromfutures",
})  # fmt: skip
_INTERNAL_EARN = frozenset({"allocation", "deallocation", "autoallocation", "migration"})
# Rows of one trade share a refid; instant buys pair a spend with a receive.
_TRADE_FAMILY: Final[dict[str, str]] = {"trade": "trade", "spend": "instant", "receive": "instant"}


def asset_code(code: str) -> str:
    """Kraken's asset code as the asset everyone else calls it."""
    staked = _STAKED.match(code)
    base = staked.group(1) if staked else code
    return _ALT.get(base, base)


def split_pair(pair: str) -> tuple[str, str]:
    """``XXBTZUSD`` -> (BTC, USD); ``DOTEUR`` -> (DOT, EUR); ``XBT/USD`` -> (BTC, USD)."""
    if "/" in pair:
        base, _, quote = pair.partition("/")
    elif len(pair) == 8 and pair[0] == "X" and pair[4] in "XZ":
        base, quote = pair[:4], pair[4:]
    else:
        by_length = sorted(_PLAIN_QUOTES, key=len, reverse=True)
        quote = next((q for q in by_length if pair.endswith(q) and pair != q), "")
        if not quote:
            raise DomainError(f"pair {pair!r} has no known quote asset", field="pair")
        base = pair[: -len(quote)]
    return asset_code(base), asset_code(quote)


def header_index(rows: list[Row]) -> int | None:
    names = {c.strip() for c in rows[0][1]}
    return 0 if set(LEDGER_COLUMNS) <= names or set(TRADE_COLUMNS) <= names else None


def parse(rows: list[Row], account: str | None) -> list[tuple[int, LedgerEntry]]:
    if header_index(rows) is None:
        raise LedgerFileError("expected a Kraken ledgers.csv or trades.csv header", line=rows[0][0])
    header = [c.strip() for c in rows[0][1]]
    data = list(records(rows[1:], header))
    acct = account or NAME
    if "pair" in header:
        return [(r.line, _trade_row(r, acct)) for r in data]
    return _ledger(data, acct)


def _trade_row(r: Record, account: str) -> LedgerEntry:
    with at_line(r.line):
        base, quote = split_pair(r.get("pair"))
        side = r.get("type")
        if side not in ("buy", "sell"):
            raise DomainError(f"type {side!r} is not buy or sell", field="type")
        fee = _number(r, "fee")
        return LedgerEntry(
            id=f"{NAME}:{r.get('txid')}",
            timestamp=timestamp_cell(r.get("time"), field="time"),
            kind="buy" if side == "buy" else "sell",
            account=account,
            asset=base,
            amount=_number(r, "vol"),
            counter_asset=quote,
            counter_amount=_number(r, "cost"),
            fee_asset=quote if fee else None,
            fee_amount=fee or None,
            external_id=r.get("txid") or None,
        )


def _number(r: Record, column: str) -> Decimal:
    text = r.get(column)
    if text == "":
        raise DomainError(f"{column} is required", field=column)
    return decimal_cell(text, field=column)


def _ledger(data: list[Record], account: str) -> list[tuple[int, LedgerEntry]]:
    out: list[tuple[int, LedgerEntry]] = []
    trades: dict[tuple[str, str], list[Record]] = defaultdict(list)
    for r in data:
        with at_line(r.line):
            timestamp_cell(r.get("time"), field="time")
            if r.get("txid") == "":
                continue
            kind = r.get("type")
            if kind in _TRADE_FAMILY:
                if not r.get("refid"):
                    raise DomainError("refid is required for a trade row", field="refid")
                trades[r.get("refid"), _TRADE_FAMILY[kind]].append(r)
                continue
            entry = _single(r, account)
        if entry is not None:
            out.append((r.line, entry))
    for (refid, _), legs in trades.items():
        with at_line(legs[0].line):
            out.append((legs[0].line, _trade(refid, legs, account)))
    return out


def _single(r: Record, account: str) -> LedgerEntry | None:
    kind, subtype = r.get("type"), r.get("subtype")
    amount, fee = _number(r, "amount"), _number(r, "fee")
    if fee < 0:
        raise DomainError(f"fee {fee} is negative", field="fee")
    sub: str | None = None
    note = ""
    entry_kind: Kind
    if kind in ("deposit", "withdrawal"):
        entry_kind = "deposit" if amount > 0 else "withdrawal"
        if (kind == "deposit") != (amount > 0):
            note = f"reversed {kind}"
    elif (kind == "transfer" and subtype in _INTERNAL_TRANSFERS) or (
        kind == "earn" and subtype in _INTERNAL_EARN
    ):
        return None  # a move between Kraken's own wallets
    elif kind == "earn" and subtype == "":
        raise DomainError(
            "an earn row without subtype may be a reward or a move between wallets: "
            "export again (newer exports name it) or write it in the generic format",
            field="subtype",
        )
    elif (kind, subtype) in (("staking", ""), ("earn", "reward"), ("invite bonus", ""),
                             ("transfer", "")):  # fmt: skip
        entry_kind = "income"
        sub = {"invite bonus": "reward", "transfer": "airdrop"}.get(kind, "staking")
        if amount <= 0:
            raise DomainError(f"a {kind} row with amount {amount} is not supported", field="amount")
    else:
        shown = f"{kind}/{subtype}" if subtype else kind
        raise DomainError(f"ledger type {shown!r} is not supported", field="type")
    asset = asset_code(r.get("asset"))
    return LedgerEntry(
        id=f"{NAME}:{r.get('txid')}",
        timestamp=timestamp_cell(r.get("time"), field="time"),
        kind=entry_kind,
        account=account,
        asset=asset,
        amount=abs(amount),
        fee_asset=asset if fee else None,
        fee_amount=fee or None,
        subkind=sub,
        note=note,
        external_id=r.get("refid") or None,
    )


def _trade(refid: str, legs: list[Record], account: str) -> LedgerEntry:
    net: dict[str, Decimal] = defaultdict(Decimal)
    fees: dict[str, Decimal] = defaultdict(Decimal)
    for leg in legs:
        asset = asset_code(leg.get("asset"))
        net[asset] += _number(leg, "amount")
        fees[asset] += _number(leg, "fee")
    gave = [(a, -n) for a, n in net.items() if n < 0]
    got = [(a, n) for a, n in net.items() if n > 0]
    paid = [(a, f) for a, f in fees.items() if f != 0]
    if len(gave) != 1 or len(got) != 1:
        raise DomainError(
            f"trade {refid} moves {', '.join(sorted(net))}: one asset out and one in expected"
        )
    if len(paid) > 1 or (paid and paid[0][1] < 0):
        raise DomainError(f"trade {refid} has fees {paid}: one positive fee expected", field="fee")
    return trade_entry(
        entry_id=f"{NAME}:{refid}",
        timestamp=timestamp_cell(legs[0].get("time"), field="time"),
        account=account,
        gave=gave[0],
        got=got[0],
        fee=paid[0] if paid else None,
        external_id=refid,
    )
