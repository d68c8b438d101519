"""The object types of ``/api/v1/graphql``: the REST payloads' fields, in camelCase.

The conventions are the REST API's: money, quantities and prices are decimal
strings (a GraphQL ``Float`` is a binary double and would round them), times
are ISO 8601 UTC strings, and epoch milliseconds go beside them as ``Long``
(GraphQL's ``Int`` is 32 bits, too small for epoch milliseconds). A value that
is unknown (a position without a price) is ``null``, never zero.

Every list that can grow with a tenant's data takes ``first`` (default
``DEFAULT_FIRST``, at most ``MAX_FIRST``): one query never builds an answer
larger than the caps allow.
"""

from __future__ import annotations

from collections.abc import Callable
from decimal import Decimal
from typing import Any, Final, NewType, TypeVar

import strawberry
from strawberry.types.scalar import ScalarDefinition

from cryptodesk.api.schemas import decimal_str
from cryptodesk.domain.errors import DomainError
from cryptodesk.domain.signals import Signal as DomainSignal
from cryptodesk.domain.timeutil import to_iso
from cryptodesk.portfolio import valuation
from cryptodesk.portfolio.hash_chain import StoredEntry
from cryptodesk.services.portfolio_valuation import PortfolioView
from cryptodesk.services.portfolio_valuation import Quote as DomainQuote

DEFAULT_FIRST: Final = 100
MAX_FIRST: Final = 500

Long = NewType("Long", int)
LONG: Final[ScalarDefinition] = strawberry.scalar(
    name="Long",
    description="A 64-bit integer as a JSON number: epoch milliseconds (UTC) or a "
    "duration in milliseconds.",
    serialize=int,
    parse_value=int,
)


_Resolver = TypeVar("_Resolver", bound=Callable[..., Any])


def described(text: str) -> Callable[[_Resolver], _Resolver]:
    """``@strawberry.field(description=text)``, typed: the resolver keeps its signature."""
    decorate: Callable[[_Resolver], _Resolver] = strawberry.field(description=text)
    return decorate


def cap(first: int, field: str = "first") -> int:
    """``first`` when it is 1..MAX_FIRST, else a ``DomainError`` naming ``field``."""
    if not 1 <= first <= MAX_FIRST:
        raise DomainError(f"{field} must be 1..{MAX_FIRST}, got {first}", field=field)
    return first


def _dec(value: Decimal) -> str:
    return format(value, "f")


def _opt(value: Decimal | None) -> str | None:
    return None if value is None else format(value, "f")


def _long(value: int | None) -> Long | None:
    return None if value is None else Long(value)


# ---- portfolio -----------------------------------------------------------------------


@strawberry.type(description="Sums over the positions; marketValue and unrealized cover "
                 "the priced positions only (complete: false when some had no price).")  # fmt: skip
class Totals:
    cost_basis: str
    market_value: str
    unrealized: str
    realized: str
    income: str
    complete: bool

    @classmethod
    def of(cls, t: valuation.Totals) -> Totals:
        return cls(
            cost_basis=_dec(t.cost_basis), market_value=_dec(t.market_value),
            unrealized=_dec(t.unrealized), realized=_dec(t.realized), income=_dec(t.income),
            complete=t.complete,
        )  # fmt: skip


@strawberry.type(description="One asset on one account (account null: over every account; "
                 "'*' when the method pools accounts, as uk does).")  # fmt: skip
class Position:
    account: str | None
    asset: str
    amount: str
    cost_basis: str
    price: str | None = strawberry.field(description="In the report currency; null: unknown.")
    market_value: str | None
    unrealized: str | None
    realized: str
    income: str
    allocation: str | None = strawberry.field(
        description="Percent of the priced total, half-even to 0.01."
    )

    @classmethod
    def of(cls, p: valuation.Position) -> Position:
        return cls(
            account=p.account, asset=p.asset, amount=_dec(p.amount),
            cost_basis=_dec(p.cost_basis), price=_opt(p.price),
            market_value=_opt(p.market_value), unrealized=_opt(p.unrealized),
            realized=_dec(p.realized), income=_dec(p.income), allocation=_opt(p.allocation),
        )  # fmt: skip


@strawberry.type(description="A position that could not be valued for want of a price.")
class MissingPrice:
    account: str | None
    asset: str
    amount: str


@strawberry.type(description="The price behind an asset's value; price null: none known.")
class Quote:
    asset: str
    price: str | None
    source: str | None = strawberry.field(
        description="currency, par, ticker:<exchange>:<symbol>, coingecko or "
        "candle:<exchange>:<symbol>:<interval>."
    )
    as_of: str | None = strawberry.field(description="When the price was true (ISO 8601).")
    as_of_ms: Long | None
    age_ms: Long | None

    @classmethod
    def of(cls, asset: str, q: DomainQuote | None) -> Quote:
        if q is None:
            return cls(asset=asset, price=None, source=None, as_of=None, as_of_ms=None,
                       age_ms=None)  # fmt: skip
        return cls(
            asset=asset, price=_dec(q.price), source=q.source,
            as_of=None if q.as_of is None else to_iso(q.as_of), as_of_ms=_long(q.as_of),
            age_ms=_long(q.age_ms),
        )  # fmt: skip


@strawberry.type(description="The valuation at the latest cached prices (never fetched from "
                 "an exchange on a request), as GET /api/v1/portfolio.")  # fmt: skip
class Portfolio:
    view: strawberry.Private[PortfolioView]
    currency: str
    method: str
    total: Totals

    @described("Per (account, asset), sorted.")
    def positions(self, first: int = DEFAULT_FIRST) -> list[Position]:
        return [Position.of(p) for p in self.view.valuation.positions[: cap(first)]]

    @described("Per asset over every account, sorted.")
    def assets(self, first: int = DEFAULT_FIRST) -> list[Position]:
        return [Position.of(p) for p in self.view.valuation.assets[: cap(first)]]

    @strawberry.field
    def missing_prices(self, first: int = DEFAULT_FIRST) -> list[MissingPrice]:
        return [
            MissingPrice(account=m.account, asset=m.asset, amount=_dec(m.amount))
            for m in self.view.valuation.missing_prices[: cap(first)]
        ]

    @described("One per asset held, sorted by asset.")
    def quotes(self, first: int = DEFAULT_FIRST) -> list[Quote]:
        found = sorted(self.view.quotes.items())[: cap(first)]
        return [Quote.of(asset, q) for asset, q in found]

    @strawberry.field
    def warnings(self, first: int = DEFAULT_FIRST) -> list[str]:
        return list(self.view.valuation.warnings[: cap(first)])

    @classmethod
    def of(cls, view: PortfolioView) -> Portfolio:
        v = view.valuation
        return cls(view=view, currency=v.currency, method=v.method, total=Totals.of(v.total))


# ---- ledger --------------------------------------------------------------------------


@strawberry.type(description="A lot chosen for specific identification.")
class LotPick:
    id: str = strawberry.field(description="The acquiring entry's id.")
    amount: str


@strawberry.type(description="A ledger entry with its place in the tenant's hash chain, "
                 "as GET /api/v1/ledger answers it.")  # fmt: skip
class Transaction:
    id: str
    seq: int = strawberry.field(description="Position in the tenant's hash chain, from 1.")
    hash: str = strawberry.field(description="sha256 of the chain up to this entry.")
    timestamp: str
    timestamp_ms: Long
    kind: str = strawberry.field(
        description="buy, sell, deposit, withdrawal, transfer, income, spend or fee."
    )
    subkind: str | None
    account: str
    asset: str
    amount: str
    counter_asset: str | None
    counter_amount: str | None
    fee_asset: str | None
    fee_amount: str | None
    fee_value: str | None
    to_account: str | None
    value: str | None = strawberry.field(description="Fair value in the report currency.")
    lot_ids: list[LotPick]
    note: str
    reverses: str | None = strawberry.field(description="The entry this one corrects.")
    external_id: str | None
    tags: list[str]

    @classmethod
    def of(cls, s: StoredEntry) -> Transaction:
        e = s.entry
        return cls(
            id=e.id, seq=s.seq, hash=s.hash, timestamp=to_iso(e.timestamp),
            timestamp_ms=Long(e.timestamp), kind=e.kind, subkind=e.subkind,
            account=e.account, asset=e.asset, amount=_dec(e.amount),
            counter_asset=e.counter_asset, counter_amount=_opt(e.counter_amount),
            fee_asset=e.fee_asset, fee_amount=_opt(e.fee_amount), fee_value=_opt(e.fee_value),
            to_account=e.to_account, value=_opt(e.value),
            lot_ids=[LotPick(id=i, amount=_dec(a)) for i, a in e.lot_ids], note=e.note,
            reverses=e.reverses, external_id=e.external_id, tags=list(e.tags),
        )  # fmt: skip


@strawberry.type(description="Entries in chain order (seq ascending).")
class TransactionPage:
    items: list[Transaction]
    next_cursor: str | None = strawberry.field(
        description="Pass as cursor (same filters) for the next page; null on the last."
    )


# ---- signals -------------------------------------------------------------------------


@strawberry.type(description="An indicator value a rule read; null while warming up.")
class IndicatorValue:
    name: str
    value: float | None


@strawberry.type(description="A rule firing on a closed candle, as GET /api/v1/signals.")
class Signal:
    rule: str
    kind: str
    exchange: str
    symbol: str
    interval: str
    open_time: str = strawberry.field(description="The candle's (ISO 8601).")
    open_time_ms: Long
    close: str = strawberry.field(description="The candle's close.")
    values: list[IndicatorValue]
    detected_at: str = strawberry.field(description="When the rule ran (ISO 8601).")

    @classmethod
    def of(cls, s: DomainSignal) -> Signal:
        return cls(
            rule=s.rule, kind=s.kind, exchange=s.exchange, symbol=s.symbol,
            interval=s.interval, open_time=to_iso(s.open_time),
            open_time_ms=Long(s.open_time), close=decimal_str(s.close),
            values=[IndicatorValue(name=k, value=v if v == v else None)
                    for k, v in s.values.items()],
            detected_at=to_iso(s.detected_at),
        )  # fmt: skip


@strawberry.type(description="Signals oldest first.")
class SignalPage:
    items: list[Signal]
    next_cursor: str | None = strawberry.field(
        description="Pass as cursor (same filters) for the next page; null on the last."
    )
