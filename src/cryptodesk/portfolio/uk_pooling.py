"""UK share pooling (method ``uk``): same-day rule, 30-day rule, section 104 pool.

HMRC's rules for cryptoassets held by individuals (Cryptoassets Manual
CRYPTO22200-CRYPTO22260; TCGA 1992 s104, s105, s106A). A disposal of a token
is identified, in this order, with:

1. acquisitions of the same token on the same day (s105): all of one day's
   acquisitions are one acquisition, all of its disposals one disposal;
2. acquisitions in the 30 days after the disposal day (s106A, "bed and
   breakfasting"), earliest acquisition first; disposals claim them earliest
   disposal first, and an acquisition's own same-day disposals come before any
   earlier disposal's claim;
3. the section 104 pool: everything else, at average cost.

Conventions of this engine:

- A day is the UK calendar day (HMRC's): the UTC day, except that in British
  Summer Time (from 01:00 UTC on the last Sunday of March to 01:00 UTC on the
  last Sunday of October, the Summer Time Order 2002 rule) a trade from
  23:00 UTC belongs to the next day (``uk_day``).
- The pool belongs to the person, not to an account: ``Move`` changes
  nothing, a ``Remove`` (withdrawal) takes its quantity and a proportional
  share of cost out of the pool without a disposal line (more than the pool
  holds removes the pool, with a warning). ``lot_ids`` are ignored: pooled
  tokens cannot be specifically identified.
- What a day's acquisitions leave unmatched joins the pool at the start of
  that day; a day's disposals share its matches in time order (same-day,
  then 30-day, then pool), so their lines add up to the single disposal.
- Disposal lines, one per match: ``lot_id`` is ``"same-day"``,
  ``"bed-and-breakfast:<acquiring entry id>"`` or ``"s104"``. ``acquired`` is
  the acquisition's time for same-day and 30-day matches; for the pool it is
  the earliest acquisition still represented in it (the first one since the
  pool was last empty: average cost keeps a share of every acquisition).
- UK capital gains have no short or long term; ``term`` is computed with
  ``term_of`` like every other method, so reports treat all methods alike.
- Money is exact Decimal; proportional shares are rounded to ``SPLIT_STEP``
  and the last share takes the remainder, so nothing is gained or lost in
  rounding. HMRC's worked examples round to whole pounds.
- A disposal that same-day, 30-day and pool together cannot cover is a
  ``MissingAcquisition`` for the rest: the pool never goes negative.
"""

from __future__ import annotations

from bisect import bisect_right
from datetime import date, timedelta
from decimal import Decimal
from functools import lru_cache

from cryptodesk.domain.interval import DAY_MS
from cryptodesk.portfolio.tax_events import Acquire, Dispose, Event, Remove, TaxEvents
from cryptodesk.portfolio.tax_lots import (
    SPLIT_STEP,
    CostBasisResult,
    DisposalLine,
    Holding,
    MissingAcquisition,
    OpenLot,
    term_of,
)

_ZERO = Decimal(0)
# s106A(5): acquisitions "within the period of thirty days after" the disposal,
# i.e. on the 1st to the 30th day after it.
BED_AND_BREAKFAST_DAYS = 30
_EPOCH_ORDINAL = date(1970, 1, 1).toordinal()
POOL_ACCOUNT = ""  # the pool is per person: its open lot names no account


def _share(cost: Decimal, part: Decimal, whole: Decimal) -> Decimal:
    """``cost * part / whole`` to ``SPLIT_STEP``; the whole cost when ``part`` is all of it."""
    if part >= whole:
        return cost
    piece = (cost * part / whole).quantize(SPLIT_STEP)
    return piece if piece <= cost else cost


class _AcquiredDay:
    """One token's acquisitions on one day: a single acquisition (s105(1)(a)).

    ``free``/``free_cost`` is what neither the same-day rule nor a 30-day
    match has taken; it joins the pool once the day is reached. ``events``
    (entry id, time, amount) only name the acquisitions a match draws on, in
    time order; every cost share comes out of the day's single total.
    """

    __slots__ = ("cursor", "events", "free", "free_cost", "same", "same_cost", "used")

    def __init__(self, entry_id: str, timestamp: int, amount: Decimal, cost: Decimal) -> None:
        self.events = [(entry_id, timestamp, amount)]
        self.free = amount
        self.free_cost = cost
        self.cursor = 0  # first event not wholly matched
        self.used = _ZERO  # matched part of events[cursor]
        self.same = _ZERO
        self.same_cost = _ZERO

    def take(self, amount: Decimal) -> Decimal:
        cost = _share(self.free_cost, amount, self.free)
        self.free -= amount
        self.free_cost -= cost
        return cost

    def advance(self, amount: Decimal) -> None:
        """Skip ``amount`` of the events' quantity (matched without naming an entry)."""
        events = self.events
        while amount > _ZERO:
            left = events[self.cursor][2] - self.used
            if amount < left:
                self.used += amount
                return
            amount -= left
            self.cursor += 1
            self.used = _ZERO


class _Match:
    """Part of a day's disposals identified with one acquisition, the pool, or nothing."""

    __slots__ = ("acquired", "amount", "cost", "lot_id")

    def __init__(self, lot_id: str | None, acquired: int, amount: Decimal, cost: Decimal) -> None:
        self.lot_id = lot_id  # None: no acquisition covers it (a missing acquisition)
        self.acquired = acquired
        self.amount = amount
        self.cost = cost


class _Token:
    """Everything known about one token: its acquisition days, disposals per day, its pool."""

    __slots__ = ("by_day", "days", "joined", "plan", "plan_at", "planned", "pool", "pool_cost",
                 "pool_since", "sold")  # fmt: skip

    def __init__(self) -> None:
        self.by_day: dict[int, _AcquiredDay] = {}
        self.days: list[int] = []  # acquisition days, ascending
        self.joined = 0  # days[:joined] have put what they had left into the pool
        self.sold: dict[int, Decimal] = {}  # day -> total disposed that day
        self.pool = _ZERO
        self.pool_cost = _ZERO
        self.pool_since = 0  # earliest acquisition represented in the pool
        # The matches of the day ``planned``, handed out to its disposals in
        # time order; ``plan_at`` is the first one not yet handed out.
        self.planned: int | None = None
        self.plan: list[_Match] = []
        self.plan_at = 0

    def catch_up(self, day: int) -> None:
        """Pool what acquisitions up to ``day`` have left unmatched.

        Final by then: only disposals before an acquisition's day can claim it
        under the 30-day rule, and its same-day match is known from the start.
        """
        days = self.days
        i = self.joined
        while i < len(days) and days[i] <= day:
            acquired = self.by_day[days[i]]
            i += 1
            if acquired.free > _ZERO:
                if self.pool <= _ZERO:
                    self.pool_since = acquired.events[acquired.cursor][1]
                self.pool += acquired.free
                self.pool_cost += acquired.free_cost
                acquired.free = _ZERO
                acquired.free_cost = _ZERO
        self.joined = i

    def take_pool(self, amount: Decimal) -> Decimal:
        cost = _share(self.pool_cost, amount, self.pool)
        self.pool -= amount
        self.pool_cost -= cost
        return cost

    def make_plan(self, day: int) -> None:
        """Identify the whole day's disposals (one disposal, s105(1)(b)) with acquisitions."""
        self.catch_up(day)
        rest = self.sold[day]
        plan: list[_Match] = []
        same = self.by_day.get(day)
        if same is not None and same.same > _ZERO:
            plan.append(_Match("same-day", same.events[0][1], same.same, same.same_cost))
            rest -= same.same
        days = self.days
        i = bisect_right(days, day)
        last = day + BED_AND_BREAKFAST_DAYS
        while rest > _ZERO and i < len(days) and days[i] <= last:
            later = self.by_day[days[i]]
            i += 1
            while rest > _ZERO and later.free > _ZERO:
                entry_id, acquired, amount = later.events[later.cursor]
                piece = min(rest, amount - later.used)
                lot_id = f"bed-and-breakfast:{entry_id}"
                plan.append(_Match(lot_id, acquired, piece, later.take(piece)))
                later.advance(piece)
                rest -= piece
        if rest > _ZERO and self.pool > _ZERO:
            piece = min(rest, self.pool)
            since = self.pool_since
            plan.append(_Match("s104", since, piece, self.take_pool(piece)))
            rest -= piece
        if rest > _ZERO:
            plan.append(_Match(None, 0, rest, _ZERO))
        self.planned = day
        self.plan = plan
        self.plan_at = 0


def _index(events: list[Event]) -> tuple[dict[str, _Token], list[Dispose | Remove]]:
    """Acquisitions and disposal totals per (token, day), same-day matches made.

    Also returns the disposals and withdrawals in time order: all that is left
    to walk once acquisitions are indexed.
    """
    tokens: dict[str, _Token] = {}
    work: list[Dispose | Remove] = []
    for event in events:
        if isinstance(event, Acquire):
            token = tokens.get(event.asset)
            if token is None:
                token = tokens[event.asset] = _Token()
            day = uk_day(event.timestamp)
            acquired = token.by_day.get(day)
            if acquired is None:
                token.by_day[day] = _AcquiredDay(
                    event.entry_id, event.timestamp, event.amount, event.cost
                )
                token.days.append(day)
            else:
                acquired.free += event.amount
                acquired.free_cost += event.cost
                acquired.events.append((event.entry_id, event.timestamp, event.amount))
        elif isinstance(event, Dispose | Remove):
            work.append(event)
            token = tokens.get(event.asset)
            if token is None:
                token = tokens[event.asset] = _Token()
            if isinstance(event, Dispose):
                day = uk_day(event.timestamp)
                token.sold[day] = token.sold.get(day, _ZERO) + event.amount
    for token in tokens.values():
        by_day = token.by_day
        for day, sold in token.sold.items():
            acquired = by_day.get(day)
            if acquired is not None:
                same = min(sold, acquired.free)
                acquired.same = same
                acquired.same_cost = acquired.take(same)
                acquired.advance(same)
    return tokens, work


def _last_sunday_0100_utc(year: int, month: int) -> int:
    """Epoch ms of 01:00 UTC on the last Sunday of ``month`` (March or October)."""
    last = date(year, month, 31)
    sunday = last - timedelta(days=(last.weekday() + 1) % 7)
    return (sunday.toordinal() - _EPOCH_ORDINAL) * DAY_MS + 3_600_000


@lru_cache(maxsize=256)
def _summer_time(year: int) -> tuple[int, int]:
    return _last_sunday_0100_utc(year, 3), _last_sunday_0100_utc(year, 10)


def uk_day(ts: int) -> int:
    """The UK calendar day of ``ts`` (days since 1970-01-01): an hour ahead of UTC
    in British Summer Time."""
    utc_day = ts // DAY_MS
    year = date.fromordinal(_EPOCH_ORDINAL + utc_day).year
    start, end = _summer_time(year)
    return (ts + 3_600_000) // DAY_MS if start <= ts < end else utc_day


def match_uk(events: TaxEvents, *, currency: str, long_term_days: int = 365) -> CostBasisResult:
    """Apply the UK matching rules to every disposal; the pool per token is what remains."""
    ordered = sorted(events.events, key=lambda e: e.timestamp)
    tokens, work = _index(ordered)
    result = CostBasisResult(
        "uk", currency, False, income=list(events.income), warnings=list(events.warnings)
    )
    lines = result.disposals
    missing = result.missing_acquisitions
    for event in work:
        token = tokens[event.asset]
        day = uk_day(event.timestamp)
        if type(event) is Dispose:
            if token.planned != day:
                token.make_plan(day)
            _dispose(event, token, lines, missing, long_term_days)
        else:
            assert isinstance(event, Remove)
            token.catch_up(day)
            _remove(event, token, result.warnings)
    for asset in sorted(tokens):
        token = tokens[asset]
        if token.days:
            token.catch_up(token.days[-1])
        if token.pool > _ZERO:
            result.holdings.append(Holding(asset, token.pool, token.pool_cost))
            result.lots.append(
                OpenLot("s104", POOL_ACCOUNT, asset, token.pool, token.pool_cost, token.pool_since)
            )
    return result


def _dispose(
    event: Dispose,
    token: _Token,
    lines: list[DisposalLine],
    missing: list[MissingAcquisition],
    long_term_days: int,
) -> None:
    """Hand the next ``event.amount`` of the day's matches to this disposal."""
    need = event.amount
    if need <= _ZERO:
        return
    plan = token.plan
    if token.plan_at == len(plan):
        # Only reachable when amounts outgrow Decimal's precision and the day's
        # disposals no longer add up to their total: report, never invent.
        plan.append(_Match(None, 0, need, _ZERO))
    match = plan[token.plan_at]
    if need <= match.amount:  # the usual case: one match covers the whole disposal
        if need == match.amount:
            cost = match.cost
            token.plan_at += 1
        else:
            cost = _share(match.cost, need, match.amount)
            match.amount -= need
            match.cost -= cost
        _line(event, match.lot_id, match.acquired, need, event.proceeds, cost, lines, missing,
              long_term_days)  # fmt: skip
        return
    # Several matches: proceeds follow the amounts, each share rounded at its
    # running total so the shares add up to the proceeds exactly.
    whole, proceeds = event.amount, event.proceeds
    done = done_proceeds = _ZERO
    while need > _ZERO:
        if token.plan_at == len(plan):
            plan.append(_Match(None, 0, need, _ZERO))
        match = plan[token.plan_at]
        amount = match.amount
        if need < amount:
            amount = need
            cost = _share(match.cost, need, match.amount)
            match.amount -= need
            match.cost -= cost
        else:
            cost = match.cost
            token.plan_at += 1
        need -= amount
        done += amount
        if need > _ZERO:
            upto = min((proceeds * done / whole).quantize(SPLIT_STEP), proceeds)
            share, done_proceeds = upto - done_proceeds, upto
        else:
            share = proceeds - done_proceeds
        _line(event, match.lot_id, match.acquired, amount, share, cost, lines, missing,
              long_term_days)  # fmt: skip


def _line(
    event: Dispose,
    lot_id: str | None,
    acquired: int,
    amount: Decimal,
    proceeds: Decimal,
    cost: Decimal,
    lines: list[DisposalLine],
    missing: list[MissingAcquisition],
    long_term_days: int,
) -> None:
    disposed = event.timestamp
    if lot_id is None:
        missing.append(
            MissingAcquisition(event.entry_id, event.asset, amount, disposed, proceeds,
                               event.account)
        )  # fmt: skip
        return
    term = term_of(acquired, disposed, long_term_days)
    lines.append(
        DisposalLine(event.entry_id, event.asset, amount, acquired, disposed, proceeds, cost,
                     proceeds - cost, term, lot_id, event.account, event.kind)
    )  # fmt: skip


def _remove(event: Remove, token: _Token, warnings: list[str]) -> None:
    """A withdrawal takes its quantity and a proportional share of cost out of the pool."""
    amount = event.amount
    if amount > token.pool:
        warnings.append(
            f"withdrawal {event.entry_id} of {event.amount} {event.asset} exceeds the "
            f"section 104 pool of {token.pool}: only the pool is removed"
        )
        amount = token.pool
    if amount > _ZERO:
        token.take_pool(amount)
