"""Binance exports -> ledger entries.

Three layouts, told apart by their header row:

- Spot trade history (Orders > Spot Order > Trade History > Export), current
  form ``Date(UTC),Pair,Side,Price,Executed,Amount,Fee`` where each quantity
  carries its asset (``0.00100000BTC``, ``29.12345USDT``, ``0.000001BNB``);
  and the older ``Date(UTC),Market,Type,Price,Amount,Total,Fee,Fee Coin``.
  One row is one fill: a ``buy`` or ``sell`` of the pair's base asset against
  its quote, with the fee as given.
- Transaction history statement (Wallet > Transaction History > Export):
  ``User_ID,UTC_Time,Account,Operation,Coin,Change,Remark`` (``User_ID``
  optional), one row per balance change with a signed ``Change``. A trade is
  several rows at the same time (``Transaction Buy``/``Spend``/``Fee``,
  ``Transaction Sold``/``Revenue``, ``Binance Convert``...): they are summed
  per coin into one entry; a trade whose rows straddle a second boundary is
  joined with the next second's rows.

Neither layout carries a trade id, so an entry's id is ``binance:`` plus a
hash of its rows (``RowIds``) and ``external_id`` stays empty. Binance gives
no fiat value: ``value`` stays empty and a crypto-to-crypto trade (anything
against USDT too, in a USD report) must be valued before a tax report.

Pairs such as ``BTCUSDT`` are split by the longest known quote asset at the
end (``QUOTES``); a pair whose quote is not listed, or whose base ends in a
listed quote when another split is meant, must be written ``BASE/QUOTE``.

Sources for the layouts: Binance's export screens as documented by BittyTax
(github.com/BittyTax/BittyTax, src/bittytax/conv/parsers/binance/data_parsers.py,
parse_binance_trades*.py, parse_binance_statements.py) and the operation names
seen in published statement samples.
"""

from __future__ import annotations

from collections import defaultdict
from decimal import Decimal
from typing import Final

from cryptodesk.adapters.files.ledger_parsing import (
    LedgerFileError,
    Record,
    Row,
    RowIds,
    at_line,
    money,
    records,
    timestamp_cell,
    trade_entry,
)
from cryptodesk.domain.errors import DomainError
from cryptodesk.portfolio.ledger import Kind, LedgerEntry

NAME: Final = "binance"
TRADES = ("Date(UTC)", "Pair", "Side", "Price", "Executed", "Amount", "Fee")
TRADES_OLD = ("Date(UTC)", "Market", "Type", "Price", "Amount", "Total", "Fee", "Fee Coin")
STATEMENT = ("User_ID", "UTC_Time", "Account", "Operation", "Coin", "Change", "Remark")
QUOTES: Final[tuple[str, ...]] = (
    "USDT", "BUSD", "USDC", "FDUSD", "TUSD", "USDP", "DAI", "PAX", "UST", "EURI",
    "BTC", "ETH", "BNB", "XRP", "TRX", "DOGE", "DOT", "SOL",
    "EUR", "GBP", "TRY", "AUD", "BRL", "RUB", "UAH", "NGN", "ZAR", "PLN", "RON", "ARS",
    "JPY", "MXN", "COP", "CZK", "IDRT", "BIDR", "BKRW", "BVND",
)  # fmt: skip
_TRADE_OPS = frozenset({
    "Buy", "Sell", "Fee", "Transaction Related", "Transaction Buy", "Transaction Spend",
    "Transaction Fee", "Transaction Sold", "Transaction Revenue", "Binance Convert",
    "Large OTC trading", "Small assets exchange BNB", "Small Assets Exchange BNB",
    "BNB Fee Deduction", "Buy Crypto With Card", "Stablecoins Auto-Conversion",
})  # fmt: skip
_FEE_OPS = frozenset({"Fee", "Transaction Fee", "BNB Fee Deduction"})
_INCOME: Final[dict[str, str]] = {
    **dict.fromkeys(("Simple Earn Flexible Interest", "Savings Interest", "Launchpool Interest",
                     "Savings distribution", "Savings Distribution", "Pool Distribution"),
                    "interest"),
    **dict.fromkeys(("Staking Rewards", "POS savings interest", "ETH 2.0 Staking Rewards",
                     "Simple Earn Locked Rewards", "BNB Vault Rewards"), "staking"),
    **dict.fromkeys(("Airdrop Assets", "HODLer Airdrops Distribution", "Launchpool Airdrop",
                     "Megadrop Rewards", "Distribution"), "airdrop"),
    **dict.fromkeys(("Commission History", "Referral Kickback", "Referral Commission",
                     "Commission Rebate", "Cash Voucher distribution", "Crypto Box",
                     "Campaign Related Reward", "Binance Card Cashback"), "reward"),
    "Super BNB Mining": "mining",
}  # fmt: skip
# Moves between Binance's own wallets: the ledger account is the whole exchange.
_INTERNAL = frozenset({
    "transfer_in", "transfer_out", "Savings purchase", "Savings Principal redemption",
    "POS savings purchase", "POS savings redemption", "Staking Purchase", "Staking Redemption",
    "Simple Earn Flexible Subscription", "Simple Earn Flexible Redemption",
    "Simple Earn Locked Subscription", "Simple Earn Locked Redemption",
    "Transfer Between Main and Funding Wallet", "Launchpool Subscription/Redemption",
    "Transfer Between Spot Account and UM Futures Account",
    "Transfer Between Spot Account and CM Futures Account",
    "Transfer Between Main Account/Futures and Margin Account",
})  # fmt: skip
_DEPOSITS = frozenset({"Deposit", "Fiat Deposit"})
_WITHDRAWALS = frozenset({"Withdraw", "Fiat Withdraw", "Fiat Withdrawal", "Send"})
_WALLETS = frozenset({"spot", "funding", "earn", "savings", "pool"})


def header_index(rows: list[Row]) -> int | None:
    names = tuple(c.strip() for c in rows[0][1])
    return 0 if names in (TRADES, TRADES_OLD, STATEMENT, STATEMENT[1:]) else None


def parse(rows: list[Row], account: str | None) -> list[tuple[int, LedgerEntry]]:
    if header_index(rows) is None:
        raise LedgerFileError(
            "expected a Binance trade history or transaction history header", line=rows[0][0]
        )
    header = [c.strip() for c in rows[0][1]]
    data = list(records(rows[1:], header))
    acct = account or NAME
    if "Operation" in header:
        return _statement(data, acct)
    ids = RowIds(NAME)
    return [(r.line, _trade_row(r, acct, ids)) for r in data]


# ---- trade history ------------------------------------------------------------------


def split_pair(pair: str) -> tuple[str, str]:
    for sep in ("/", "-", "_"):
        if sep in pair:
            base, _, quote = pair.partition(sep)
            return base, quote
    for quote in sorted(QUOTES, key=len, reverse=True):
        if pair.endswith(quote) and len(pair) > len(quote):
            return pair[: -len(quote)], quote
    raise DomainError(f"pair {pair!r} has no known quote asset; write it BASE/QUOTE", field="Pair")


def _with_asset(text: str, asset: str, field: str) -> Decimal:
    """``0.001BTC`` -> 0.001, checking the suffix is the expected asset."""
    if not text.endswith(asset):
        raise DomainError(f"{field} {text!r} is not an amount of {asset}", field=field)
    return _unsigned(text[: -len(asset)], field)


def _unsigned(text: str, field: str) -> Decimal:
    """A trade history quantity: never negative (the side says the direction)."""
    amount = money(text, field=field)
    if amount is None or text.lstrip().startswith("-"):
        raise DomainError(f"{field} {text!r} is not an unsigned amount", field=field)
    return amount


def _fee_with_asset(text: str, candidates: tuple[str, ...]) -> tuple[str, Decimal]:
    """The fee cell carries its own asset: the trade's base or quote, BNB, or letters."""
    for asset in sorted(candidates, key=len, reverse=True):
        if text.endswith(asset) and text[: -len(asset)]:
            try:
                return asset, _with_asset(text, asset, "Fee")
            except DomainError:
                continue
    head = text.rstrip("ABCDEFGHIJKLMNOPQRSTUVWXYZ")
    if head and head != text:
        return text[len(head) :], _with_asset(text, text[len(head) :], "Fee")
    raise DomainError(f"Fee {text!r} is not an amount with its asset", field="Fee")


def _trade_row(r: Record, account: str, ids: RowIds) -> LedgerEntry:
    with at_line(r.line):
        ts = timestamp_cell(r.get("Date(UTC)"), field="Date(UTC)")
        if "Pair" in r.cells:
            base, quote = split_pair(r.get("Pair"))
            side = r.get("Side").upper()
            amount = _with_asset(r.get("Executed"), base, "Executed")
            total = _with_asset(r.get("Amount"), quote, "Amount")
            fee_asset, fee = _fee_with_asset(r.get("Fee"), (base, quote, "BNB"))
        else:
            base, quote = split_pair(r.get("Market"))
            side = r.get("Type").upper()
            amount = _unsigned(r.get("Amount"), "Amount")
            total = _unsigned(r.get("Total"), "Total")
            fee_asset = r.get("Fee Coin")
            fee = _unsigned(r.get("Fee") or "0", "Fee")
        if side not in ("BUY", "SELL"):
            raise DomainError(f"side {side!r} is not BUY or SELL", field="Side")
        return LedgerEntry(
            id=ids(r.raw),
            timestamp=ts,
            kind="buy" if side == "BUY" else "sell",
            account=account,
            asset=base,
            amount=amount,
            counter_asset=quote,
            counter_amount=total,
            fee_asset=(fee_asset or None) if fee else None,
            fee_amount=fee if fee else None,
        )


# ---- transaction history statement --------------------------------------------------


def _statement(data: list[Record], account: str) -> list[tuple[int, LedgerEntry]]:
    ids = RowIds(NAME)
    out: list[tuple[int, LedgerEntry]] = []
    trade_rows: dict[int, list[tuple[Record, Decimal]]] = defaultdict(list)
    for r in data:
        with at_line(r.line):
            wallet = r.get("Account")
            if wallet.lower() not in _WALLETS:
                raise DomainError(
                    f"account {wallet!r} is not supported (spot, funding and earn only)",
                    field="Account",
                )
            ts = timestamp_cell(r.get("UTC_Time"), field="UTC_Time")
            change = _signed(r.get("Change"))
            op = r.get("Operation")
            if op in _TRADE_OPS:
                trade_rows[ts].append((r, change))
            elif op not in _INTERNAL:
                out.append((r.line, _single(r, op, ts, change, account, ids)))
    out.extend(_trades(trade_rows, account, ids))
    return out


def _signed(text: str) -> Decimal:
    magnitude = money(text, field="Change")
    if magnitude is None or magnitude == 0:
        raise DomainError(f"Change {text!r} must be a non-zero number", field="Change")
    return -magnitude if text.lstrip().startswith("-") else magnitude


def _single(r: Record, op: str, ts: int, change: Decimal, account: str, ids: RowIds) -> LedgerEntry:
    kind, subkind = _single_kind(op, change)
    return LedgerEntry(
        id=ids(r.raw),
        timestamp=ts,
        kind=kind,
        account=account,
        asset=r.get("Coin"),
        amount=abs(change),
        subkind=subkind,
        note=r.get("Remark"),
    )


def _single_kind(op: str, change: Decimal) -> tuple[Kind, str | None]:
    if op in _DEPOSITS and change > 0:
        return "deposit", None
    if op in _WITHDRAWALS and change < 0:
        return "withdrawal", None
    if op in _INCOME and change > 0:
        return "income", _INCOME[op]
    if op == "Binance Card Spending" and change < 0:
        return "spend", None
    if op in _DEPOSITS or op in _WITHDRAWALS or op in _INCOME:
        sign = "positive" if change > 0 else "negative"
        raise DomainError(f"a {op!r} row with a {sign} change is not supported", field="Change")
    raise DomainError(f"operation {op!r} is not supported", field="Operation")


def _trades(
    by_time: dict[int, list[tuple[Record, Decimal]]], account: str, ids: RowIds
) -> list[tuple[int, LedgerEntry]]:
    out: list[tuple[int, LedgerEntry]] = []
    times = sorted(by_time)
    pending: list[tuple[Record, Decimal]] = []
    for i, ts in enumerate(times):
        group = pending + by_time[ts]
        nxt = times[i + 1] if i + 1 < len(times) else None
        if not _complete(group) and nxt == ts + 1000 and not _complete(by_time[nxt]):
            pending = group  # the rest of this trade is booked one second later
            continue
        pending = []
        out.append((group[0][0].line, _trade_group(group, account, ids)))
    return out


def _legs(group: list[tuple[Record, Decimal]]) -> tuple[dict[str, Decimal], ...]:
    got: dict[str, Decimal] = defaultdict(Decimal)
    gave: dict[str, Decimal] = defaultdict(Decimal)
    fees: dict[str, Decimal] = defaultdict(Decimal)
    for r, change in group:
        if r.get("Operation") in _FEE_OPS:
            fees[r.get("Coin")] -= change
        elif change > 0:
            got[r.get("Coin")] += change
        else:
            gave[r.get("Coin")] -= change
    return got, gave, fees


def _complete(group: list[tuple[Record, Decimal]]) -> bool:
    got, gave, _ = _legs(group)
    return bool(got) and bool(gave)


def _trade_group(group: list[tuple[Record, Decimal]], account: str, ids: RowIds) -> LedgerEntry:
    line = group[0][0].line
    with at_line(line):
        got, gave, fees = _legs(group)
        if len(got) != 1 or len(gave) != 1:
            raise DomainError(
                f"the trade rows at {group[0][0].get('UTC_Time')} give "
                f"{', '.join(sorted(gave)) or 'nothing'} for {', '.join(sorted(got)) or 'nothing'}"
                ": one coin for another is supported; split it in the generic format"
            )
        if len(fees) > 1:
            raise DomainError(f"the trade pays fees in {', '.join(sorted(fees))}: one fee coin")
        fee = next(iter(fees.items()), None)
        if fee is not None and fee[1] <= 0:
            raise DomainError(f"the trade's fee rows add up to {fee[1]} {fee[0]}", field="Change")
        return trade_entry(
            entry_id=ids(*(r.raw for r, _ in group)),
            timestamp=timestamp_cell(group[0][0].get("UTC_Time")),
            account=account,
            gave=next(iter(gave.items())),
            got=next(iter(got.items())),
            fee=fee,
        )
