"""The tax report: a cost basis result as the JSON document an accountant reads.

Shape (every money value and amount a ``str(Decimal)``, full precision, never
a float; every time ISO 8601 UTC)::

    {"year", "method", "currency", "per_wallet",
     "summary": {"proceeds", "cost_basis", "gain", "short_term_gain",
                 "long_term_gain", "income"},
     "disposals": [{"disposal_id", "asset", "amount", "acquired", "disposed",
                    "proceeds", "cost_basis", "gain", "term",
                    "lot_id", "account", "kind"}],
     "income": [{"entry_id", "asset", "amount", "received", "value", "subkind", "account"}],
     "holdings": [{"asset", "amount", "cost_basis"} (+ "account" when per wallet)],
     "missing_acquisitions": [{"disposal_id", "asset", "amount", "disposed",
                               "proceeds", "account"}],
     "warnings": [str]}

One disposal line per matched lot, as IRS Form 8949 lists them. The summary
adds up exactly the lines listed: ``gain == proceeds - cost_basis`` and
``short_term_gain + long_term_gain == gain``. Proceeds of missing
acquisitions are not in the summary (they have no cost basis to net against);
they are listed on their own and counted in ``warnings``.

Years are UTC calendar years. :func:`tax_report_for` computes a year from the
entries up to its end, since the gains of a year never depend on later
entries, with one exception: the UK 30-day ("bed and breakfast") rule matches
a disposal with acquisitions of the following 30 days, so the ``uk`` method
also reads the first 30 days of the next year.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime
from decimal import ROUND_HALF_UP, Decimal
from typing import Any, Final

from cryptodesk.domain.errors import DomainError
from cryptodesk.domain.timeutil import MAX_TS_MS, MIN_TS_MS, to_iso
from cryptodesk.portfolio.cost_basis import compute
from cryptodesk.portfolio.ledger import LedgerEntry, effective_entries
from cryptodesk.portfolio.tax_lots import LONG_TERM_DAYS, METHODS, CostBasisResult, Holding
from cryptodesk.portfolio.uk_pooling import BED_AND_BREAKFAST_DAYS

TaxReport = dict[str, Any]
_ZERO: Final = Decimal(0)
_CENT: Final = Decimal("0.01")
_DAY_MS: Final = 86_400_000
MIN_YEAR: Final = datetime.fromtimestamp(MIN_TS_MS / 1000, tz=UTC).year
MAX_YEAR: Final = datetime.fromtimestamp(MAX_TS_MS / 1000, tz=UTC).year - 1


def dec(value: Decimal) -> str:
    """``str(value)``, with a negative zero written as zero."""
    return str(value.copy_abs() if value.is_zero() else value)


def year_bounds(year: int) -> tuple[int, int]:
    """Epoch ms of the start of ``year`` (inclusive) and of the next year (exclusive), UTC."""
    if not MIN_YEAR <= year <= MAX_YEAR:
        raise DomainError(f"year {year} is out of range ({MIN_YEAR}..{MAX_YEAR})", field="year")
    start = datetime(year, 1, 1, tzinfo=UTC)
    end = datetime(year + 1, 1, 1, tzinfo=UTC)
    return int(start.timestamp()) * 1000, int(end.timestamp()) * 1000


def build_tax_report(
    result: CostBasisResult,
    *,
    year: int | None = None,
    holdings_at_year_end: Sequence[Holding] | None = None,
) -> TaxReport:
    """The report of ``result``, its lines limited to ``year`` when given.

    Holdings are ``holdings_at_year_end`` when given, else the result's own:
    for a year, ``result`` should then be computed over the entries up to the
    end of that year, as :func:`tax_report_for` does.
    """
    if year is None:
        start, end = MIN_TS_MS, MAX_TS_MS
    else:
        start, end = year_bounds(year)
    disposals = [d for d in result.disposals if start <= d.disposed < end]
    income = [i for i in result.income if start <= i.received < end]
    missing = [m for m in result.missing_acquisitions if start <= m.disposed < end]
    holdings = result.holdings if holdings_at_year_end is None else holdings_at_year_end

    proceeds = sum((d.proceeds for d in disposals), _ZERO)
    cost = sum((d.cost_basis for d in disposals), _ZERO)
    short = sum((d.gain for d in disposals if d.term == "short"), _ZERO)
    long = sum((d.gain for d in disposals if d.term == "long"), _ZERO)
    warnings = list(result.warnings)
    if missing:
        unmatched = sum((m.proceeds for m in missing), _ZERO)
        warnings.append(
            f"{len(missing)} disposal(s) have no matching acquisition: proceeds "
            f"{dec(unmatched)} {result.currency} are listed in missing_acquisitions "
            "and not in the summary"
        )
    return {
        "year": year,
        "method": result.method,
        "currency": result.currency,
        "per_wallet": result.per_wallet,
        "summary": {
            "proceeds": dec(proceeds),
            "cost_basis": dec(cost),
            "gain": dec(proceeds - cost),
            "short_term_gain": dec(short),
            "long_term_gain": dec(long),
            "income": dec(sum((i.value for i in income), _ZERO)),
        },
        "disposals": [
            {
                "disposal_id": d.disposal_id,
                "asset": d.asset,
                "amount": dec(d.amount),
                "acquired": to_iso(d.acquired),
                "disposed": to_iso(d.disposed),
                "proceeds": dec(d.proceeds),
                "cost_basis": dec(d.cost_basis),
                "gain": dec(d.gain),
                "term": d.term,
                "lot_id": d.lot_id,
                "account": d.account,
                "kind": d.kind,
            }
            for d in disposals
        ],
        "income": [
            {
                "entry_id": i.entry_id,
                "asset": i.asset,
                "amount": dec(i.amount),
                "received": to_iso(i.received),
                "value": dec(i.value),
                "subkind": i.subkind,
                "account": i.account,
            }
            for i in income
        ],
        "holdings": [_holding(h, per_wallet=result.per_wallet) for h in holdings],
        "missing_acquisitions": [
            {
                "disposal_id": m.disposal_id,
                "asset": m.asset,
                "amount": dec(m.amount),
                "disposed": to_iso(m.disposed),
                "proceeds": dec(m.proceeds),
                "account": m.account,
            }
            for m in missing
        ],
        "warnings": warnings,
    }


def _holding(holding: Holding, *, per_wallet: bool) -> dict[str, str]:
    row = {
        "asset": holding.asset,
        "amount": dec(holding.amount),
        "cost_basis": dec(holding.cost_basis),
    }
    if per_wallet and holding.account is not None:
        row["account"] = holding.account
    return row


def tax_report_for(
    entries: Iterable[LedgerEntry],
    *,
    method: str,
    currency: str = "USD",
    year: int | None = None,
    per_wallet: bool = False,
    long_term_days: int = LONG_TERM_DAYS,
    par: Collection[str] = (),
) -> TaxReport:
    """Run the cost basis engine over ``entries`` and build the report of ``year``.

    ``par``: assets valued 1:1 with ``currency`` where an entry gives no value.

    Corrections apply first (a reversal dated after the year still removes the
    entry it reverses: it says that entry never happened). Then only the
    entries up to the end of the year count, plus, for ``uk``, those of the
    next 30 days (acquisitions there may match a disposal of the year under
    the 30-day rule); holdings are those at the end of the year in every case.
    """
    if method not in METHODS:
        raise DomainError(f"method {method!r} is not one of {', '.join(METHODS)}", field="method")
    if long_term_days < 1:
        raise DomainError(
            f"long_term_days must be positive, got {long_term_days}", field="long_term_days"
        )
    end = None if year is None else year_bounds(year)[1]
    options: dict[str, Any] = {
        "method": method,
        "currency": currency,
        "per_wallet": per_wallet,
        "long_term_days": long_term_days,
        "par": tuple(par),
    }
    effective = effective_entries(list(entries))
    if end is None:
        return build_tax_report(compute(effective, **options))
    up_to_year_end = [e for e in effective if e.timestamp < end]
    if method != "uk":
        return build_tax_report(compute(up_to_year_end, **options), year=year)
    # The 30-day rule reaches the 30th UTC day after a disposal: for 31 December, 30 January.
    horizon = end + BED_AND_BREAKFAST_DAYS * _DAY_MS
    with_look_ahead = [e for e in effective if e.timestamp < horizon]
    at_year_end = compute(up_to_year_end, **options)
    return build_tax_report(
        compute(with_look_ahead, **options), year=year, holdings_at_year_end=at_year_end.holdings
    )


@dataclass(frozen=True, slots=True)
class Form8949Line:
    """One row of IRS Form 8949 (columns a to h), money in whole cents.

    ``part`` is ``"I"`` (short term) or ``"II"`` (long term). Proceeds and
    cost are each rounded half up to cents and the gain is their difference,
    so every row adds up as the form's column (h) instructions require
    ((d) minus (e), plus (g)); the totals then add the rounded rows.
    """

    part: str
    description: str
    acquired: date
    disposed: date
    proceeds: Decimal
    cost_basis: Decimal
    code: str
    adjustment: Decimal | None
    gain: Decimal


def to_cents(value: Decimal) -> Decimal:
    rounded = value.quantize(_CENT, rounding=ROUND_HALF_UP)
    return rounded.copy_abs() if rounded.is_zero() else rounded


def plain(amount: Decimal) -> str:
    """An amount as positional text without trailing zeros (``0.5``, ``100``)."""
    text = f"{amount.normalize():f}"
    return "0" if text in ("-0", "0") else text


def utc_date(iso: str) -> date:
    return datetime.fromisoformat(iso.replace("Z", "+00:00")).astimezone(UTC).date()


def form_8949_lines(report: TaxReport) -> list[Form8949Line]:
    """The report's disposal lines as Form 8949 rows: Part I first, then Part II."""
    lines = []
    for part, term in (("I", "short"), ("II", "long")):
        for d in report["disposals"]:
            if d["term"] != term:
                continue
            proceeds = to_cents(Decimal(d["proceeds"]))
            cost = to_cents(Decimal(d["cost_basis"]))
            lines.append(
                Form8949Line(
                    part=part,
                    description=f"{plain(Decimal(d['amount']))} {d['asset']}",
                    acquired=utc_date(d["acquired"]),
                    disposed=utc_date(d["disposed"]),
                    proceeds=proceeds,
                    cost_basis=cost,
                    code="",
                    adjustment=None,
                    gain=to_cents(proceeds - cost),
                )
            )
    return lines


def us_date(day: date) -> str:
    """MM/DD/YYYY, as Form 8949 asks for dates (Mo., day, yr.)."""
    return day.strftime("%m/%d/%Y")
