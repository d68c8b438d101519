"""Cross-exchange arbitrage: buy where it is cheapest, sell where it is dearest.

For one symbol, given each exchange's best bid and ask and its taker fee
(both legs cross the spread, so both pay taker): buying on exchange A costs
``ask_A * (1 + fee_A)`` per unit, selling on B yields ``bid_B * (1 - fee_B)``;
the net spread is ``sell_net / buy_net - 1``, the gross spread
``bid_B / ask_A - 1``. The best pair (A != B) maximises the net spread.

Decimal throughout: the inputs are the exchanges' decimal prices (a float
from the domain converts exactly through its repr, see ``quote``) and the
results are exact to 28 digits, so comparing a spread with a threshold never
flips on binary rounding, and the alerts carry them as strings like the API's
money. The book depth at the top is not considered: the spread says whether a
trade is worth it, not how much of it there is.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from decimal import Decimal

DEFAULT_TAKER_FEE = Decimal("0.001")
_ONE = Decimal(1)


@dataclass(frozen=True, slots=True)
class Quote:
    """One exchange's top of book for a symbol; a missing side is None."""

    exchange: str
    bid: Decimal | None
    ask: Decimal | None
    ts: int


def quote(exchange: str, bid: float | None, ask: float | None, ts: int) -> Quote:
    """A quote from domain floats: ``repr`` is the shortest decimal that reads back
    as the same float, i.e. the price the exchange sent (an int is read as a float,
    so 101 and 101.0 give the same quote)."""
    return Quote(
        exchange,
        None if bid is None else Decimal(repr(float(bid))),
        None if ask is None else Decimal(repr(float(ask))),
        ts,
    )


@dataclass(frozen=True, slots=True)
class ArbitrageOpportunity:
    """Buy ``symbol`` at ``ask`` on ``buy_exchange``, sell at ``bid`` on
    ``sell_exchange``; ``time`` (epoch ms) is the older of the two quotes."""

    symbol: str
    buy_exchange: str
    sell_exchange: str
    ask: Decimal
    bid: Decimal
    buy_fee: Decimal
    sell_fee: Decimal
    net_spread: Decimal
    gross_spread: Decimal
    time: int

    def exceeds(self, threshold: Decimal) -> bool:
        """Worth an alert: the net spread is strictly above ``threshold``."""
        return self.net_spread > threshold

    @property
    def pair(self) -> tuple[str, str]:
        return self.buy_exchange, self.sell_exchange


def best_opportunity(
    symbol: str,
    quotes: Iterable[Quote],
    fees: Mapping[str, Decimal],
    *,
    default_fee: Decimal = DEFAULT_TAKER_FEE,
) -> ArbitrageOpportunity | None:
    """The pair of different exchanges with the highest net spread (which may be
    negative), or None when no two exchanges offer an ask and a bid.

    Ties go to the first pair in (buy exchange, sell exchange) name order, so
    the answer does not depend on the order of ``quotes``.
    """
    by_exchange = sorted(quotes, key=lambda q: q.exchange)
    best: ArbitrageOpportunity | None = None
    for buy in by_exchange:
        if buy.ask is None:
            continue
        buy_fee = fees.get(buy.exchange, default_fee)
        buy_net = buy.ask * (_ONE + buy_fee)
        for sell in by_exchange:
            if sell.bid is None or sell.exchange == buy.exchange:
                continue
            sell_fee = fees.get(sell.exchange, default_fee)
            net = sell.bid * (_ONE - sell_fee) / buy_net - _ONE
            if best is None or net > best.net_spread:
                best = ArbitrageOpportunity(
                    symbol, buy.exchange, sell.exchange, buy.ask, sell.bid, buy_fee, sell_fee,
                    net, sell.bid / buy.ask - _ONE, min(buy.ts, sell.ts),
                )  # fmt: skip
    return best


def find_opportunity(
    symbol: str,
    quotes: Iterable[Quote],
    fees: Mapping[str, Decimal],
    *,
    threshold: Decimal,
    default_fee: Decimal = DEFAULT_TAKER_FEE,
) -> ArbitrageOpportunity | None:
    """The best opportunity if its net spread is above ``threshold``, else None."""
    best = best_opportunity(symbol, quotes, fees, default_fee=default_fee)
    return best if best is not None and best.exceeds(threshold) else None
