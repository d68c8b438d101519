"""ccxt's unified structures (markets, trades, OHLCV rows, order books, tickers)
to our domain types.

Pure functions, no I/O: each takes one ccxt dict and returns one validated
value, or raises ``PayloadError`` naming what is wrong, so the caller counts
the entry, logs it with the exchange and endpoint, and skips it. Trades are
mapped tens of thousands of times a second; ``map_trade`` does the least work
that still validates.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Mapping, Sequence
from typing import Any

from ccxt.base.decimal_to_precision import (  # type: ignore[import-untyped]
    DECIMAL_PLACES,
    SIGNIFICANT_DIGITS,
    TICK_SIZE,
)

from cryptodesk.domain.errors import DomainError
from cryptodesk.domain.market import Candle, Market, OrderBook, Ticker, Trade

__all__ = [
    "DECIMAL_PLACES",
    "SIGNIFICANT_DIGITS",
    "TICK_SIZE",
    "PayloadError",
    "increment",
    "map_market",
    "map_ohlcv",
    "map_order_book",
    "map_ticker",
    "map_trade",
]


class PayloadError(ValueError):
    """An exchange entry that cannot become a domain value; the message says why."""


def increment(precision: Any, mode: int, *, magnitude: float = 1.0) -> float:
    """The smallest step a ccxt precision value allows, as a float.

    ccxt reports precision in the exchange's ``precisionMode``: TICK_SIZE gives
    the step itself (0.01), DECIMAL_PLACES a digit count (2 -> 0.01), and
    SIGNIFICANT_DIGITS a count of significant digits, whose step depends on the
    size of the number: 5 digits at a price of 60,000 step by 1, at 0.5 by
    0.00001. ``magnitude`` is that number (a recent price); 1.0 when unknown.
    """
    if precision is None or isinstance(precision, bool):
        raise PayloadError(f"precision is {precision!r}")
    try:
        value = float(precision)
    except (TypeError, ValueError):
        raise PayloadError(f"precision {precision!r} is not a number") from None
    if not math.isfinite(value):
        raise PayloadError(f"precision {precision!r} is not a finite number")
    if mode == TICK_SIZE:
        if value <= 0:
            raise PayloadError(f"tick size {precision!r} is not positive")
        return value
    if value != int(value):
        raise PayloadError(f"precision {precision!r} is not a whole number of digits")
    digits = int(value)
    if mode == DECIMAL_PLACES:
        exponent = -digits  # 0 places: whole units
    elif mode == SIGNIFICANT_DIGITS:
        if digits < 1:
            raise PayloadError(f"precision {precision!r} is fewer than one significant digit")
        if not (magnitude > 0 and math.isfinite(magnitude)):
            raise PayloadError(f"magnitude {magnitude!r} is not a positive number")
        exponent = math.floor(math.log10(magnitude)) - digits + 1
    else:
        raise PayloadError(f"unknown ccxt precision mode {mode!r}")
    # Through the decimal literal, so 2 places give exactly float("0.01"), the
    # same value TICK_SIZE exchanges report.
    return float(f"1e{exponent}")


def _min_limit(limits: Mapping[str, Any], key: str) -> float:
    value = (limits.get(key) or {}).get("min")
    if value is None:
        return 0.0
    found = float(value)
    if not (found >= 0 and math.isfinite(found)):
        raise PayloadError(f"limits.{key}.min is {value!r}")
    return found


def map_market(
    raw: Mapping[str, Any],
    exchange: str,
    *,
    precision_mode: int = TICK_SIZE,
    reference_price: float | None = None,
) -> Market:
    """A ccxt market: precision to increments, ``limits`` to minimums.

    ``reference_price`` sizes the price step of SIGNIFICANT_DIGITS exchanges;
    their amount step is taken at the minimum amount (or 1.0).
    """
    try:
        symbol, base, quote = raw["symbol"], raw["base"], raw["quote"]
        precision = raw.get("precision") or {}
        limits = raw.get("limits") or {}
        min_amount = _min_limit(limits, "amount")
        min_notional = _min_limit(limits, "cost")
        price_step = increment(
            precision.get("price"), precision_mode, magnitude=reference_price or 1.0
        )
        amount_step = increment(
            precision.get("amount"), precision_mode, magnitude=min_amount or 1.0
        )
        return Market(
            exchange=exchange,
            symbol=symbol,
            base=base,
            quote=quote,
            price_increment=price_step,
            amount_increment=amount_step,
            min_amount=min_amount,
            min_notional=min_notional,
            # ccxt leaves ``active`` None when the exchange does not say: listed
            # markets trade unless told otherwise.
            active=raw.get("active") is not False,
        )
    except PayloadError as exc:
        raise PayloadError(f"market {raw.get('symbol')!r}: {exc}") from None
    except (DomainError, KeyError, TypeError, ValueError, AttributeError) as exc:
        raise PayloadError(f"market {raw.get('symbol')!r}: {_reason(exc)}") from None


def synthetic_trade_id(ts: Any, price: Any, amount: Any, side: Any) -> str:
    """A stable id for exchanges that publish trades without one, so a trade
    seen twice (live, then in a REST backfill) keeps one natural key. Two
    identical fills in the same millisecond collapse into one; there is no
    way to tell them apart on such an exchange."""
    digest = hashlib.blake2b(f"{ts}|{price}|{amount}|{side}".encode(), digest_size=8)
    return f"h{digest.hexdigest()}"


def map_trade(raw: Mapping[str, Any], exchange: str) -> Trade:
    """A ccxt trade. The symbol is ccxt's unified one, as the exchange was asked."""
    try:
        tid = raw["id"]
        ts = raw["timestamp"]
        price = raw["price"]
        amount = raw["amount"]
        side = raw["side"]
        if tid is None:
            tid = synthetic_trade_id(ts, price, amount, side)
        return Trade(exchange, raw["symbol"], str(tid), int(ts), float(price), float(amount), side)
    except (DomainError, KeyError, TypeError, ValueError, AttributeError, IndexError) as exc:
        absent = [k for k in _TRADE_FIELDS if _get(raw, k) is None]
        reason = f"no {', '.join(absent)}" if absent else _reason(exc)
        raise PayloadError(f"trade {_get(raw, 'id')!r}: {reason}") from None


_TRADE_FIELDS = ("symbol", "timestamp", "price", "amount", "side")


def map_ohlcv(
    row: Sequence[Any], exchange: str, symbol: str, interval: str, *, closed: bool
) -> Candle:
    """A ccxt OHLCV row ``[open_time, open, high, low, close, volume]``.

    ccxt drops the quote volume and trade count some exchanges send, so they
    are 0 here.
    """
    try:
        if len(row) < 6:
            raise PayloadError(f"{len(row)} fields, expected 6")
        volume = row[5]
        return Candle(
            exchange=exchange,
            symbol=symbol,
            interval=interval,
            open_time=int(row[0]),
            open=float(row[1]),
            high=float(row[2]),
            low=float(row[3]),
            close=float(row[4]),
            # A market with no trades in the interval reports no volume.
            volume=0.0 if volume is None else float(volume),
            closed=closed,
        )
    except (PayloadError, DomainError, TypeError, ValueError, IndexError) as exc:
        first = row[0] if isinstance(row, Sequence) and row else None
        raise PayloadError(f"candle {first!r}: {_reason(exc)}") from None


def _levels(side: Any, depth: int) -> tuple[tuple[float, float], ...]:
    # Entries may carry a third field (an order count); only price and amount matter.
    return tuple((float(level[0]), float(level[1])) for level in side[:depth])


def map_order_book(
    raw: Mapping[str, Any], exchange: str, symbol: str, *, depth: int, now_ms: int
) -> OrderBook:
    """The best ``depth`` levels of a ccxt order book, validated (ordered, not crossed).

    ``now_ms`` stands in when the exchange gives no time (binance's REST snapshot).
    """
    try:
        bids = _levels(raw["bids"], depth)
        asks = _levels(raw["asks"], depth)
        ts = raw.get("timestamp")
        nonce = raw.get("nonce")
        return OrderBook(
            exchange,
            symbol,
            now_ms if ts is None else int(ts),
            bids,
            asks,
            0 if nonce is None else int(nonce),
        )
    except (DomainError, KeyError, TypeError, ValueError, IndexError, AttributeError) as exc:
        raise PayloadError(f"order book of {symbol}: {_reason(exc)}") from None


def _positive_or_none(raw: Mapping[str, Any], key: str) -> float | None:
    value = raw.get(key)
    if value is None:
        return None
    found = float(value)
    # Exchanges send 0 for "no bid" or "no trades today"; that is no value.
    return found if found > 0 and math.isfinite(found) else None


def map_ticker(raw: Mapping[str, Any], exchange: str, *, now_ms: int) -> Ticker:
    """A ccxt ticker; ``now_ms`` stands in when the exchange gives no time."""
    try:
        last = _positive_or_none(raw, "last") or _positive_or_none(raw, "close")
        if last is None:
            raise PayloadError("no last price")
        ts = raw.get("timestamp")
        return Ticker(
            exchange=exchange,
            symbol=raw["symbol"],
            ts=now_ms if ts is None else int(ts),
            last=last,
            bid=_positive_or_none(raw, "bid"),
            ask=_positive_or_none(raw, "ask"),
            open_24h=_positive_or_none(raw, "open"),
            high_24h=_positive_or_none(raw, "high"),
            low_24h=_positive_or_none(raw, "low"),
            volume_24h=_positive_or_none(raw, "baseVolume") or 0.0,
            quote_volume_24h=_positive_or_none(raw, "quoteVolume") or 0.0,
        )
    except (PayloadError, DomainError, KeyError, TypeError, ValueError, AttributeError) as exc:
        raise PayloadError(f"ticker {_get(raw, 'symbol')!r}: {_reason(exc)}") from None


def _get(raw: Any, key: str) -> Any:
    return raw.get(key) if isinstance(raw, Mapping) else None


def _reason(exc: Exception) -> str:
    if isinstance(exc, KeyError):
        return f"missing field {exc.args[0]!r}"
    return str(exc) or type(exc).__name__
