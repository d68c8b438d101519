"""Market-data value types: Market, Trade, Candle, OrderBook, Ticker.

Prices and amounts are float64 here: market data arrives from exchanges as
floats and feeds numeric analytics. Accounting (portfolio/) uses Decimal.
Every type validates itself on construction so nothing malformed travels on.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal, NoReturn

from cryptodesk.domain.errors import DomainError

Side = Literal["buy", "sell"]
_SIDES = ("buy", "sell")


def _positive(name: str, value: float) -> None:
    if not (value > 0 and math.isfinite(value)):
        raise DomainError(f"{name} must be a positive finite number, got {value!r}", field=name)


def _non_negative(name: str, value: float) -> None:
    if not (value >= 0 and math.isfinite(value)):
        raise DomainError(f"{name} must be a non-negative finite number, got {value!r}", field=name)


def _check_symbol(symbol: str) -> None:
    base, sep, quote = symbol.partition("/")
    if not sep or not base or not quote or "/" in quote:
        raise DomainError(f"symbol {symbol!r} is not of the form BASE/QUOTE", field="symbol")


def _bad_level(side: str, price: float, amount: float) -> NoReturn:
    """Name what is wrong with a level the fast check rejected."""
    _positive(f"{side} price", price)
    _positive(f"{side} amount", amount)
    raise DomainError(f"{side} are not strictly ordered best first", field=side)


def stream_key(exchange: str, symbol: str) -> str:
    """Bus partition key: one exchange's symbol stays ordered."""
    return f"{exchange}:{symbol}"


@dataclass(frozen=True, slots=True)
class Market:
    """A tradable market with the precision and limits the exchange enforces."""

    exchange: str
    symbol: str
    base: str
    quote: str
    price_increment: float
    amount_increment: float
    min_amount: float = 0.0
    min_notional: float = 0.0
    active: bool = True

    def __post_init__(self) -> None:
        _check_symbol(self.symbol)
        _positive("price_increment", self.price_increment)
        _positive("amount_increment", self.amount_increment)
        _non_negative("min_amount", self.min_amount)
        _non_negative("min_notional", self.min_notional)


@dataclass(frozen=True, slots=True, init=False)
class Trade:
    """One public trade; ``(exchange, symbol, id)`` is its natural key.

    Immutable like every value type here, but built on the hot path (tens of
    thousands a second), so ``__init__`` is written out: one combined check and
    slot writes that skip the frozen ``__setattr__`` (4x faster than the
    generated one). A failed check re-runs the detailed checks to name the field.
    """

    exchange: str
    symbol: str
    id: str
    ts: int
    price: float
    amount: float
    side: Side

    def __init__(
        self,
        exchange: str,
        symbol: str,
        id: str,
        ts: int,
        price: float,
        amount: float,
        side: Side,
    ) -> None:
        if not (
            exchange
            and id
            and ts >= 0
            and 0 < price < math.inf
            and 0 < amount < math.inf
            and (side == "buy" or side == "sell")
            and symbol.count("/") == 1
            and symbol[0] != "/"
            and symbol[-1] != "/"
        ):
            _explain_trade(exchange, symbol, id, ts, price, amount, side)
        _set_exchange(self, exchange)
        _set_symbol(self, symbol)
        _set_id(self, id)
        _set_ts(self, ts)
        _set_price(self, price)
        _set_amount(self, amount)
        _set_side(self, side)


_set_exchange = Trade.__dict__["exchange"].__set__
_set_symbol = Trade.__dict__["symbol"].__set__
_set_id = Trade.__dict__["id"].__set__
_set_ts = Trade.__dict__["ts"].__set__
_set_price = Trade.__dict__["price"].__set__
_set_amount = Trade.__dict__["amount"].__set__
_set_side = Trade.__dict__["side"].__set__


def _explain_trade(
    exchange: str, symbol: str, id: str, ts: int, price: float, amount: float, side: str
) -> NoReturn:
    if not exchange:
        raise DomainError("exchange must not be empty", field="exchange")
    _check_symbol(symbol)
    if not id:
        raise DomainError("trade id must not be empty", field="id")
    if ts < 0:
        raise DomainError(f"ts must be epoch ms >= 0, got {ts}", field="ts")
    _positive("price", price)
    _positive("amount", amount)
    raise DomainError(f"side must be buy or sell, got {side!r}", field="side")


@dataclass(frozen=True, slots=True)
class Candle:
    """OHLCV over ``[open_time, open_time + interval)``; ``closed`` once final.

    ``volume`` is in the base currency, ``quote_volume`` in the quote currency.
    A candle with ``trades == 0`` is a flat gap-filler at the previous close.
    """

    exchange: str
    symbol: str
    interval: str
    open_time: int
    open: float
    high: float
    low: float
    close: float
    volume: float
    quote_volume: float = 0.0
    trades: int = 0
    closed: bool = False

    def __post_init__(self) -> None:
        _check_symbol(self.symbol)
        for name in ("open", "high", "low", "close"):
            _positive(name, getattr(self, name))
        _non_negative("volume", self.volume)
        _non_negative("quote_volume", self.quote_volume)
        if self.trades < 0:
            raise DomainError("trades must be >= 0", field="trades")
        if not (self.low <= min(self.open, self.close) and max(self.open, self.close) <= self.high):
            raise DomainError(
                f"OHLC inconsistent: o={self.open} h={self.high} l={self.low} c={self.close}",
                field="ohlc",
            )


@dataclass(frozen=True, slots=True)
class OrderBook:
    """An L2 snapshot: ``bids`` best (highest) first, ``asks`` best (lowest) first."""

    exchange: str
    symbol: str
    ts: int
    bids: tuple[tuple[float, float], ...]
    asks: tuple[tuple[float, float], ...]
    sequence: int = 0

    def __post_init__(self) -> None:
        _check_symbol(self.symbol)
        # One tight loop per side: books arrive many times a second per market.
        prev = math.inf
        for price, amount in self.bids:
            if not (0 < price < prev and 0 < amount < math.inf):
                _bad_level("bids", price, amount)
            prev = price
        prev = 0.0
        for price, amount in self.asks:
            if not (prev < price < math.inf and 0 < amount < math.inf):
                _bad_level("asks", price, amount)
            prev = price
        if self.bids and self.asks and self.bids[0][0] >= self.asks[0][0]:
            raise DomainError(
                f"crossed book: best bid {self.bids[0][0]} >= best ask {self.asks[0][0]}",
                field="bids",
            )

    def best_bid(self) -> float | None:
        return self.bids[0][0] if self.bids else None

    def best_ask(self) -> float | None:
        return self.asks[0][0] if self.asks else None

    def top(self, depth: int) -> OrderBook:
        return OrderBook(
            self.exchange, self.symbol, self.ts, self.bids[:depth], self.asks[:depth], self.sequence
        )


@dataclass(frozen=True, slots=True)
class Ticker:
    """Latest price and rolling 24 h statistics for one market."""

    exchange: str
    symbol: str
    ts: int
    last: float
    bid: float | None = None
    ask: float | None = None
    open_24h: float | None = None
    high_24h: float | None = None
    low_24h: float | None = None
    volume_24h: float = 0.0
    quote_volume_24h: float = 0.0

    def __post_init__(self) -> None:
        _check_symbol(self.symbol)
        _positive("last", self.last)
        if self.bid is not None and self.ask is not None and self.bid >= self.ask:
            raise DomainError(f"crossed ticker: bid {self.bid} >= ask {self.ask}", field="bid")

    @property
    def change_24h(self) -> float | None:
        """Fractional change over 24 h (0.01 = +1 %)."""
        if self.open_24h is None:
            return None
        return self.last / self.open_24h - 1.0
