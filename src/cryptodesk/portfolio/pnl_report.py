"""The daily PnL report: per position (account, asset) and in total, for one UTC day.

For the day ``[00:00, 24:00)`` UTC:

- ``amount``, ``price`` (close of the day), ``market_value`` and
  ``unrealized`` (market value minus remaining cost basis) are as of the close;
- ``day_pnl = MV(close) - MV(previous close) - net flows of the day``, the
  flows valued as ``portfolio.performance.flows`` values them (a purchase's
  cost in, a sale's proceeds out...). Since a sale's proceeds are its cost
  basis plus its gain, this is the value change net of flows at cost plus the
  PnL realized that day; income received that day is part of it too;
- ``realized`` and ``income`` are those of the day alone.

A price missing at either close, or a flow that cannot be valued, makes the
position's figures that depend on it ``None`` (never zero); the totals then
add the known figures and say they are incomplete.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import date
from decimal import Decimal
from typing import Any, Final

from cryptodesk.portfolio.performance import DAY_MS, Flow, day_start
from cryptodesk.portfolio.tax_lots import CostBasisResult
from cryptodesk.portfolio.valuation import EXACT, account_of, price_of

_ZERO: Final = Decimal(0)
COLUMNS: Final = (
    "account", "asset", "amount", "price", "market_value", "day_pnl", "realized", "income",
    "unrealized",
)  # fmt: skip
TOTAL_LABEL: Final = "TOTAL"
Cell = str | Decimal | None


@dataclass(frozen=True, slots=True)
class PnlRow:
    account: str
    asset: str
    amount: Decimal  # at the close
    price: Decimal | None  # close of the day
    market_value: Decimal | None
    day_pnl: Decimal | None
    realized: Decimal  # that day
    income: Decimal  # that day
    unrealized: Decimal | None  # at the close


@dataclass(frozen=True, slots=True)
class PnlTotal:
    market_value: Decimal
    day_pnl: Decimal
    realized: Decimal
    income: Decimal
    unrealized: Decimal
    complete: bool  # False: some position's figures are unknown and left out


@dataclass(frozen=True, slots=True)
class MissingPrice:
    asset: str
    day: date  # the close it was needed at


@dataclass(frozen=True, slots=True)
class PnlReport:
    tenant: str
    day: date
    currency: str
    method: str
    rows: list[PnlRow]
    total: PnlTotal
    missing_prices: list[MissingPrice]
    notes: list[str]


def _held(result: CostBasisResult) -> dict[tuple[str, str], tuple[Decimal, Decimal]]:
    home = account_of(result)
    out: dict[tuple[str, str], tuple[Decimal, Decimal]] = {}
    for h in result.holdings:
        key = (home(h.account), h.asset)
        amount, cost = out.get(key, (_ZERO, _ZERO))
        out[key] = (EXACT.add(amount, h.amount), EXACT.add(cost, h.cost_basis))
    return out


def _value(amount: Decimal, price: Decimal | None) -> Decimal | None:
    if amount == _ZERO:
        return _ZERO
    return None if price is None else EXACT.multiply(amount, price)


def _sum(values: Iterable[Decimal | None]) -> Decimal:
    total = _ZERO
    for v in values:
        if v is not None:
            total = EXACT.add(total, v)
    return total


def build(
    tenant: str,
    day: date,
    *,
    opening: CostBasisResult,
    closing: CostBasisResult,
    open_prices: Mapping[str, Decimal | None],
    close_prices: Mapping[str, Decimal | None],
    day_flows: Sequence[Flow],
    notes: Sequence[str] = (),
) -> PnlReport:
    """The report of ``day``.

    ``opening``/``closing`` are cost basis results (per wallet: a row per
    account and asset; universal: per asset, account ``*``) over the entries
    before the day's start / end; ``open_prices`` are the previous day's
    closes, ``close_prices`` the day's; ``day_flows`` the flows of the day.
    """
    if opening.per_wallet != closing.per_wallet:
        raise ValueError("opening and closing must both be per wallet, or both universal")
    home = account_of(closing)
    cur = closing.currency
    start = day_start(day)
    end = start + DAY_MS
    before, after = _held(opening), _held(closing)
    realized: dict[tuple[str, str], Decimal] = {}
    for line in closing.disposals:
        if start <= line.disposed < end:
            key = (home(line.account), line.asset)
            realized[key] = EXACT.add(realized.get(key, _ZERO), line.gain)
    income: dict[tuple[str, str], Decimal] = {}
    for item in closing.income:
        if start <= item.received < end and item.asset != cur:
            key = (home(item.account), item.asset)
            income[key] = EXACT.add(income.get(key, _ZERO), item.value)
    flow_sum: dict[tuple[str, str], Decimal | None] = {}
    for f in day_flows:
        key = (home(f.account), f.asset)
        known = flow_sum.get(key, _ZERO)
        flow_sum[key] = None if known is None or f.amount is None else EXACT.add(known, f.amount)

    keys = {k for k, (amount, _) in before.items() if amount != _ZERO}
    keys |= {k for k, (amount, _) in after.items() if amount != _ZERO}
    keys |= set(realized) | set(income) | set(flow_sum)
    rows: list[PnlRow] = []
    missing: set[tuple[str, date]] = set()
    previous = date.fromordinal(day.toordinal() - 1)
    for account, asset in sorted(k for k in keys if k[1] != cur):
        amount_open = before.get((account, asset), (_ZERO, _ZERO))[0]
        amount, cost = after.get((account, asset), (_ZERO, _ZERO))
        price_open = price_of(open_prices, asset, cur)
        price = price_of(close_prices, asset, cur)
        if amount_open != _ZERO and price_open is None:
            missing.add((asset, previous))
        if amount != _ZERO and price is None:
            missing.add((asset, day))
        mv_open, mv = _value(amount_open, price_open), _value(amount, price)
        net = flow_sum.get((account, asset), _ZERO)
        day_pnl = (
            None
            if mv is None or mv_open is None or net is None
            else EXACT.subtract(EXACT.subtract(mv, mv_open), net)
        )
        rows.append(
            PnlRow(account, asset, amount, price, mv, day_pnl,
                   realized.get((account, asset), _ZERO), income.get((account, asset), _ZERO),
                   None if mv is None else EXACT.subtract(mv, cost))
        )  # fmt: skip
    total = PnlTotal(
        market_value=_sum(r.market_value for r in rows),
        day_pnl=_sum(r.day_pnl for r in rows),
        realized=_sum(r.realized for r in rows),
        income=_sum(r.income for r in rows),
        unrealized=_sum(r.unrealized for r in rows),
        complete=all(r.day_pnl is not None and r.market_value is not None for r in rows),
    )
    report_notes = [*closing.warnings, *notes]
    unvalued = sorted({f.entry_id for f in day_flows if f.amount is None})
    if unvalued:
        report_notes.append(f"flows without a value (no price): {', '.join(unvalued)}")
    return PnlReport(
        tenant, day, cur, closing.method, rows, total,
        [MissingPrice(a, d) for a, d in sorted(missing, key=lambda m: (m[1], m[0]))],
        report_notes,
    )  # fmt: skip


def table(report: PnlReport) -> list[list[Cell]]:
    """Header, one row per position, then the total: the rows every format writes."""
    out: list[list[Cell]] = [list(COLUMNS)]
    for r in report.rows:
        out.append([r.account, r.asset, r.amount, r.price, r.market_value, r.day_pnl,
                    r.realized, r.income, r.unrealized])  # fmt: skip
    t = report.total
    out.append([TOTAL_LABEL, "", None, None, t.market_value, t.day_pnl, t.realized, t.income,
                t.unrealized])  # fmt: skip
    return out


def summary_lines(report: PnlReport) -> list[str]:
    """What a reader must know beside the table: scope, completeness, warnings."""
    lines = [
        f"Tenant {report.tenant}, {report.day.isoformat()} (UTC), values in {report.currency}, "
        f"cost basis {report.method}."
    ]
    if not report.total.complete:
        lines.append("Incomplete: the totals leave out positions whose figures are unknown.")
    lines += [f"Price missing: {m.asset} at the close of {m.day}" for m in report.missing_prices]
    lines += report.notes
    return lines


def _text(value: Decimal | None) -> str | None:
    return None if value is None else str(value)


def to_dict(report: PnlReport) -> dict[str, Any]:
    """The report as JSON-ready data: money as decimal strings, unknowns as null."""
    t = report.total
    return {
        "tenant": report.tenant,
        "date": report.day.isoformat(),
        "currency": report.currency,
        "method": report.method,
        "positions": [
            {
                "account": r.account,
                "asset": r.asset,
                "amount": str(r.amount),
                "price": _text(r.price),
                "market_value": _text(r.market_value),
                "day_pnl": _text(r.day_pnl),
                "realized": str(r.realized),
                "income": str(r.income),
                "unrealized": _text(r.unrealized),
            }
            for r in report.rows
        ],
        "total": {
            "market_value": str(t.market_value),
            "day_pnl": str(t.day_pnl),
            "realized": str(t.realized),
            "income": str(t.income),
            "unrealized": str(t.unrealized),
            "complete": t.complete,
        },
        "missing_prices": [
            {"asset": m.asset, "date": m.day.isoformat()} for m in report.missing_prices
        ],
        "notes": list(report.notes),
    }
