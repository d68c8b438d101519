"""Flows of value in and out of positions, and the returns they imply (TWR, MWR).

The valued portfolio is what carries lots: every asset except the report
currency (cash in the currency is outside it). Value crosses its boundary,
and moves between its positions, as **flows** (positive into a position,
negative out of it), valued in the report currency:

- ``buy``/``sell`` against the currency: the currency amount paid in, or the
  proceeds taken out, of the crypto position. A crypto-to-crypto trade moves
  its ``value`` out of one position and into the other (an *internal* pair).
- A fee paid in the currency is cash paid in from outside: an inflow to the
  position the entry concerns, so the fee shows as a loss of that position.
  A fee paid in crypto is no flow: fewer units, a loss where they were held.
- ``deposit`` (in) and ``withdrawal``/``spend`` (out) at the entry's ``value``;
  ``transfer`` moves value between two own accounts (internal pair). Without a
  ``value`` the amount is valued at the ``price`` the caller supplies (the
  day's close), and without that the flow is unvalued (``amount`` None).
- ``income`` and ``fee`` entries are no flows: income is return, a fee a loss.

Returns are computed over daily closes (UTC), with every flow of a day taken
at the **start** of that day (before its market move):

- time-weighted: ``r_i = V_i / (V_{i-1} + F_i) - 1`` per day, linked as
  ``prod(1 + r_i) - 1``; annualised only over a year or more (GIPS).
- money-weighted: the internal rate of return of the dated cash flows
  (the start value and flows in, the end value out), annual with 365-day
  years: ``sum(c_k * (1 + r) ** ((T - t_k) / 365 days)) = 0``, solved with
  ``scipy.optimize.brentq``. None, with a note, when no rate solves it.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from decimal import ROUND_HALF_EVEN, Context, Decimal
from typing import Any, Final

from cryptodesk.domain.errors import DomainError
from cryptodesk.portfolio.ledger import LedgerEntry, effective_entries
from cryptodesk.portfolio.valuation import EXACT

DAY_MS: Final = 86_400_000
DAYS_PER_YEAR: Final = 365  # crypto trades every day of the year
RETURN_STEP: Final = Decimal("1e-10")
_ZERO: Final = Decimal(0)
_ONE: Final = Decimal(1)
_RATIO: Final = Context(prec=40, rounding=ROUND_HALF_EVEN)
# Daily log growth rates the IRR search covers: -1 (about -63 % a day) to 1.9,
# the largest for which (1 + r) over 365 days still fits a float.
_H_LOW: Final = -1.0
_H_HIGH: Final = 1.9

PriceAt = Callable[[str, int], Decimal | None]


def _no_price(_asset: str, _ts: int) -> Decimal | None:
    return None


@dataclass(frozen=True, slots=True)
class Flow:
    """Value into (+) or out of (-) one position; ``amount`` None: it could not be valued."""

    ts: int
    account: str
    asset: str
    amount: Decimal | None
    entry_id: str
    internal: bool  # a transfer or crypto-to-crypto leg: its pair cancels it in the total


def flows(
    entries: Iterable[LedgerEntry],
    currency: str,
    *,
    start: int | None = None,
    end: int | None = None,
    price: PriceAt = _no_price,
) -> list[Flow]:
    """The flows of the entries with ``start <= timestamp < end`` (see the module docstring).

    Reversals are applied over all of ``entries`` before the window is cut.
    """
    out: list[Flow] = []
    for e in sorted(effective_entries(list(entries)), key=lambda e: e.timestamp):
        if (start is not None and e.timestamp < start) or (end is not None and e.timestamp >= end):
            continue
        _entry_flows(e, currency, price, out)
    return out


def _valued(e: LedgerEntry, asset: str, amount: Decimal, price: PriceAt) -> Decimal | None:
    if e.value is not None:
        return e.value
    p = price(asset, e.timestamp)
    return None if p is None else EXACT.multiply(amount, p)


def _entry_flows(e: LedgerEntry, cur: str, price: PriceAt, out: list[Flow]) -> None:
    def add(account: str, asset: str, amount: Decimal | None, internal: bool = False) -> None:
        out.append(Flow(e.timestamp, account, asset, amount, e.id, internal))

    fee_home = e.asset  # the position a fee paid in the currency is charged to
    if e.kind in ("buy", "sell"):
        assert e.counter_asset is not None
        assert e.counter_amount is not None
        got, got_amount, gave, gave_amount = (
            (e.asset, e.amount, e.counter_asset, e.counter_amount)
            if e.kind == "buy"
            else (e.counter_asset, e.counter_amount, e.asset, e.amount)
        )
        if gave == cur:
            v: Decimal | None = gave_amount
        elif got == cur:
            v = got_amount
        else:
            v = _valued(e, got, got_amount, price)
        internal = got != cur and gave != cur
        if got != cur:
            add(e.account, got, v, internal)
        if gave != cur:
            add(e.account, gave, None if v is None else -v, internal)
        fee_home = got if got != cur else gave
    elif e.asset != cur:
        if e.kind == "deposit":
            add(e.account, e.asset, _valued(e, e.asset, e.amount, price))
        elif e.kind in ("withdrawal", "spend"):
            v = _valued(e, e.asset, e.amount, price)
            add(e.account, e.asset, None if v is None else -v)
        elif e.kind == "transfer":
            assert e.to_account is not None
            v = _valued(e, e.asset, e.amount, price)
            add(e.account, e.asset, None if v is None else -v, True)
            add(e.to_account, e.asset, v, True)
    if e.fee_asset == cur and e.fee_amount is not None and fee_home != cur:
        add(e.account, fee_home, e.fee_amount)


def daily_net_flows(items: Iterable[Flow]) -> tuple[dict[date, Decimal], list[Flow]]:
    """External (non-internal) flows summed per UTC day, and the unvalued ones."""
    per_day: dict[date, Decimal] = {}
    unvalued: list[Flow] = []
    for f in items:
        if f.internal:
            continue
        if f.amount is None:
            unvalued.append(f)
            continue
        day = utc_day(f.ts)
        per_day[day] = EXACT.add(per_day.get(day, _ZERO), f.amount)
    return per_day, unvalued


def utc_day(ts: int) -> date:
    return datetime.fromtimestamp(ts / 1000, tz=UTC).date()


def day_start(day: date) -> int:
    """Epoch ms of 00:00 UTC on ``day``."""
    return (day - date(1970, 1, 1)).days * DAY_MS


# ---- returns ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Rate:
    """A return as a fraction (0.1 = 10 %), or None with the reason in ``note``."""

    value: Decimal | None
    note: str | None = None


def _rounded(x: Decimal) -> Decimal:
    return x.quantize(RETURN_STEP, rounding=ROUND_HALF_EVEN)


def time_weighted(start_value: Decimal, periods: Sequence[tuple[Decimal, Decimal]]) -> Rate:
    """Linked return over ``periods`` of (flow at the period's start, value at its end).

    A period that starts with no capital and ends with none is skipped (there
    was nothing to earn on); one that starts with none or less and ends with
    value has no defined return, and neither has the whole.
    """
    growth = _ONE
    before = start_value
    for i, (flow, after) in enumerate(periods, start=1):
        capital = EXACT.add(before, flow)
        if capital <= _ZERO:
            if after == _ZERO:
                before = after
                continue
            return Rate(None, f"period {i} starts with no capital ({capital}) but ends at {after}")
        growth = _RATIO.multiply(growth, _RATIO.divide(after, capital))
        before = after
    return Rate(_rounded(growth - _ONE))


def annualize(rate: Decimal, days: int) -> Decimal | None:
    """``(1 + rate) ** (365 / days) - 1``; None for a total loss or no time."""
    if days <= 0 or rate <= -_ONE:
        return None
    power = _RATIO.power(_ONE + rate, _RATIO.divide(Decimal(DAYS_PER_YEAR), Decimal(days)))
    return _rounded(power - _ONE)


def internal_rate(cash_flows: Sequence[tuple[int, Decimal]]) -> Rate:
    """Annual IRR (365-day years) of investor cash flows (ts ms, amount: - paid in, + out).

    Solved in the daily log rate ``h`` (``1 + r = e ** (365 h)``) over the
    future value at the last date, scaled by ``e ** (-h * span)`` for
    ``h > 0`` so no term overflows; of several roots the one nearest zero is
    taken. None, with a note, when the flows never change sign or no rate in
    the searched range (about -63 % to +570 % a day) solves them.
    """
    if not cash_flows:
        return Rate(None, "no cash flows")
    end = max(ts for ts, _ in cash_flows)
    days = [(end - ts) / DAY_MS for ts, _ in cash_flows]
    amounts = [float(a) for _, a in cash_flows]
    span = max(days)
    if all(a >= 0 for a in amounts) or all(a <= 0 for a in amounts):
        return Rate(None, "the cash flows never change sign: no rate of return solves them")

    def scaled_future_value(h: float) -> float:
        shift = span if h > 0 else 0.0
        return math.fsum(a * math.exp(h * (d - shift)) for a, d in zip(amounts, days, strict=True))

    grid = sorted({0.0, _H_LOW, _H_HIGH} | {s * 1e-6 * 2**i for i in range(22) for s in (-1, 1)})
    grid = [h for h in grid if _H_LOW <= h <= _H_HIGH]
    values = [scaled_future_value(h) for h in grid]
    brackets: list[tuple[float, float]] = []
    for i, (h, fh) in enumerate(zip(grid, values, strict=True)):
        if fh == 0.0:
            brackets.append((h, h))
        elif i + 1 < len(grid) and fh * values[i + 1] < 0:
            brackets.append((h, grid[i + 1]))
    if not brackets:
        return Rate(None, "no rate of return between -63 % and +570 % a day solves the cash flows")
    a, b = min(brackets, key=lambda ab: min(abs(ab[0]), abs(ab[1])))
    from scipy.optimize import brentq  # type: ignore[import-untyped]  # ~20 MB: on first use

    h = a if a == b else float(brentq(scaled_future_value, a, b, xtol=1e-16, maxiter=500))
    return Rate(_rounded(Decimal(repr(math.expm1(DAYS_PER_YEAR * h)))))


# ---- the period report ---------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Performance:
    """Returns from the close of ``start`` to the close of ``end`` (UTC days)."""

    start: date
    end: date
    days: int
    start_value: Decimal | None
    end_value: Decimal | None
    net_flows: Decimal
    twr: Rate
    twr_annualized: Decimal | None  # only over a year or more
    mwr: Rate  # annual
    notes: tuple[str, ...] = ()


def period_returns(
    values: Mapping[date, Decimal | None],
    net_flows: Mapping[date, Decimal],
    start: date,
    end: date,
) -> Performance:
    """TWR and MWR from closing values per day and external flows per day.

    Days without a (complete) value are skipped: their flows move to the
    start of the next valued day. ``start`` and ``end`` must have values.
    """
    if end <= start:
        raise DomainError(f"end {end} must be after start {start}", field="end")
    days = (end - start).days
    flows_in = [
        net_flows[d] for d in sorted(net_flows) if start < d <= end
    ]  # flows on the start day are before its close: already in the start value
    net = sum(flows_in, _ZERO)
    first, last = values.get(start), values.get(end)
    if first is None or last is None:
        missing = ", ".join(str(d) for d in (start, end) if values.get(d) is None)
        note = f"no complete portfolio value at the close of {missing}"
        none = Rate(None, note)
        return Performance(start, end, days, first, last, net, none, None, none, (note,))
    notes: list[str] = []
    periods: list[tuple[Decimal, Decimal]] = []
    pending = _ZERO
    day = start
    while day < end:
        day += timedelta(days=1)
        pending = EXACT.add(pending, net_flows.get(day, _ZERO))
        closing = values.get(day)
        if closing is None:
            notes.append(f"no complete value at the close of {day}: its flows move to the next day")
            continue
        periods.append((pending, closing))
        pending = _ZERO
    twr = time_weighted(first, periods)
    yearly = annualize(twr.value, days) if twr.value is not None and days >= 365 else None
    cash = [(day_start(start + timedelta(days=1)), -first)]
    cash += [(day_start(d), -f) for d, f in sorted(net_flows.items()) if start < d <= end and f]
    cash.append((day_start(end + timedelta(days=1)), last))
    mwr = internal_rate(cash)
    notes += [r.note for r in (twr, mwr) if r.note]
    return Performance(start, end, days, first, last, net, twr, yearly, mwr, tuple(notes))


def _text(x: Decimal | None) -> str | None:
    return None if x is None else format(x, "f")


def to_dict(p: Performance) -> dict[str, Any]:
    """JSON-ready: dates ISO, money and rates as decimal strings, unknowns as null."""
    return {
        "start": p.start.isoformat(), "end": p.end.isoformat(), "days": p.days,
        "start_value": _text(p.start_value), "end_value": _text(p.end_value),
        "net_flows": _text(p.net_flows), "twr": _text(p.twr.value),
        "twr_annualized": _text(p.twr_annualized), "mwr": _text(p.mwr.value),
        "notes": list(p.notes),
    }  # fmt: skip
