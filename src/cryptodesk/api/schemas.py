"""Response models: the API's wire form, documented in the OpenAPI schema.

Prices and amounts leave as decimal strings so no JSON parser rounds them
through a binary float of its own; times leave as ISO 8601 UTC strings.
Market data says how fresh it is: ``stale`` and ``age_seconds`` (see
``services.feed_status``).
"""

from __future__ import annotations

import math
from decimal import Decimal
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from cryptodesk.api import examples as ex
from cryptodesk.domain.market import Candle, Market, OrderBook, Ticker
from cryptodesk.domain.timeutil import to_iso
from cryptodesk.observability.health import ComponentHealth
from cryptodesk.services.feed_status import Freshness


def decimal_str(value: float) -> str:
    """Shortest string that round-trips to ``value``, never in exponent notation.

    ``repr`` gives the shortest round-trip digits (``1e-08``); Decimal turns
    them into plain positional form (``0.00000001``) without adding digits.
    """
    if not math.isfinite(value):
        raise ValueError(f"not a finite number: {value!r}")
    if value == 0:
        return "0"
    text = format(Decimal(repr(value)), "f")
    if "." in text:
        text = text.rstrip("0").rstrip(".")
    return text


# Volumes are float sums of many trade amounts and pick up binary noise in the
# last bits (2.19099 + ... = 2.190990000000001). Ten decimal places is finer than
# any exchange's amount or price precision, so rounding there shows the exact sum.
VOLUME_DECIMALS = 10


def volume_str(value: float) -> str:
    return decimal_str(round(value, VOLUME_DECIMALS))


def optional_decimal(value: float | None) -> str | None:
    return None if value is None or not math.isfinite(value) else decimal_str(value)


class _Model(BaseModel):
    model_config = ConfigDict(frozen=True)


STALE_DESCRIPTION = (
    "True while the exchange's upstream is failing or the value is older than the "
    "stale limit (CRYPTODESK_FEED_STALE_SECONDS); it is still the last known good value."
)


def _stale() -> Any:
    return Field(examples=[False], description=STALE_DESCRIPTION)


def _age(description: str, *, nullable: bool = False) -> Any:
    return Field(examples=[None] if nullable else [1.25], description=description)


def age_seconds(f: Freshness) -> float | None:
    return None if f.age_ms is None else f.age_ms / 1000


def known_age(f: Freshness) -> float:
    """The age of a value that carries its exchange time, so always has one."""
    if f.age_ms is None:
        raise ValueError("a timestamped value has an age")
    return f.age_ms / 1000


class MarketOut(_Model):
    model_config = ConfigDict(json_schema_extra={"examples": [ex.MARKET]})

    exchange: str = Field(examples=["sim"])
    symbol: str = Field(examples=["BTC/USDT"])
    base: str = Field(examples=["BTC"])
    quote: str = Field(examples=["USDT"])
    price_increment: str = Field(examples=["0.01"], description="Tick size.")
    amount_increment: str = Field(examples=["0.00001"], description="Lot size.")
    min_amount: str = Field(examples=["0.00001"])
    min_notional: str = Field(examples=["5"], description="Minimum order value in quote.")
    active: bool = Field(examples=[True])
    stale: bool = _stale()
    age_seconds: float | None = _age(
        "Always null: markets carry no exchange time, only a failing upstream makes them stale.",
        nullable=True,
    )

    @classmethod
    def of(cls, m: Market, f: Freshness) -> MarketOut:
        return cls(
            exchange=m.exchange,
            symbol=m.symbol,
            base=m.base,
            quote=m.quote,
            price_increment=decimal_str(m.price_increment),
            amount_increment=decimal_str(m.amount_increment),
            min_amount=decimal_str(m.min_amount),
            min_notional=decimal_str(m.min_notional),
            active=m.active,
            stale=f.stale,
            age_seconds=age_seconds(f),
        )


class MarketsResponse(_Model):
    model_config = ConfigDict(json_schema_extra={"examples": [{"markets": [ex.MARKET]}]})

    markets: list[MarketOut]


class TickerOut(_Model):
    model_config = ConfigDict(json_schema_extra={"examples": [ex.TICKER]})

    exchange: str = Field(examples=["sim"])
    symbol: str = Field(examples=["BTC/USDT"])
    time: str = Field(examples=["2024-05-01T12:00:00.000Z"], description="Last trade time.")
    last: str = Field(examples=["67012.35"])
    bid: str | None = Field(examples=["67012.3"])
    ask: str | None = Field(examples=["67012.4"])
    open_24h: str | None = Field(examples=["66000"])
    high_24h: str | None = Field(examples=["67500"])
    low_24h: str | None = Field(examples=["65800.5"])
    volume_24h: str = Field(examples=["1234.5678"], description="Base currency.")
    quote_volume_24h: str = Field(examples=["82000000.12"], description="Quote currency.")
    change_24h: str | None = Field(examples=["0.0153"], description="Fraction: 0.01 = +1 %.")
    stale: bool = _stale()
    age_seconds: float = _age("Seconds since `time`, the last trade (millisecond precision).")

    @classmethod
    def of(cls, t: Ticker, f: Freshness) -> TickerOut:
        return cls(
            exchange=t.exchange,
            symbol=t.symbol,
            time=to_iso(t.ts),
            last=decimal_str(t.last),
            bid=optional_decimal(t.bid),
            ask=optional_decimal(t.ask),
            open_24h=optional_decimal(t.open_24h),
            high_24h=optional_decimal(t.high_24h),
            low_24h=optional_decimal(t.low_24h),
            volume_24h=volume_str(t.volume_24h),
            quote_volume_24h=volume_str(t.quote_volume_24h),
            change_24h=optional_decimal(t.change_24h),
            stale=f.stale,
            age_seconds=known_age(f),
        )


class TickersResponse(_Model):
    model_config = ConfigDict(json_schema_extra={"examples": [{"tickers": [ex.TICKER]}]})

    tickers: list[TickerOut]


class CandleOut(_Model):
    model_config = ConfigDict(json_schema_extra={"examples": [ex.CANDLE]})

    open_time: str = Field(examples=["2024-05-01T12:00:00.000Z"])
    open_time_ms: int = Field(examples=[1714564800000])
    open: str = Field(examples=["67000.1"])
    high: str = Field(examples=["67100"])
    low: str = Field(examples=["66950.25"])
    close: str = Field(examples=["67012.35"])
    volume: str = Field(examples=["12.345"], description="Base currency.")
    quote_volume: str = Field(examples=["827312.5"], description="Quote currency.")
    trades: int = Field(examples=[421], description="0 marks a flat gap-filler candle.")
    closed: bool = Field(examples=[True], description="False only for the candle in progress.")

    @classmethod
    def of(cls, c: Candle) -> CandleOut:
        return cls(
            open_time=to_iso(c.open_time),
            open_time_ms=c.open_time,
            open=decimal_str(c.open),
            high=decimal_str(c.high),
            low=decimal_str(c.low),
            close=decimal_str(c.close),
            volume=volume_str(c.volume),
            quote_volume=volume_str(c.quote_volume),
            trades=c.trades,
            closed=c.closed,
        )


class CandlesResponse(_Model):
    model_config = ConfigDict(json_schema_extra={"examples": [ex.CANDLES]})

    exchange: str = Field(examples=["sim"])
    symbol: str = Field(examples=["BTC/USDT"])
    interval: str = Field(examples=["1m"])
    candles: list[CandleOut] = Field(description="Oldest first.")
    next_cursor: str | None = Field(
        examples=[None], description="Pass as `cursor` for the next page; null at the end."
    )
    stale: bool = Field(
        examples=[False],
        description="True while the exchange's upstream is failing or the series' newest "
        "finalized candle closed more than one interval plus the stale limit "
        "(CRYPTODESK_FEED_STALE_SECONDS) ago. Past candles are final; this is about the series.",
    )
    age_seconds: float | None = _age(
        "Seconds since the close of the series' newest finalized candle, whichever page this "
        "is; null when the series has none yet.",
        nullable=True,
    )


class OrderBookOut(_Model):
    model_config = ConfigDict(json_schema_extra={"examples": [ex.ORDER_BOOK]})

    exchange: str = Field(examples=["sim"])
    symbol: str = Field(examples=["ETH/USDT"])
    time: str = Field(examples=["2024-05-01T12:00:00.000Z"])
    sequence: int = Field(examples=[1234])
    bids: list[tuple[str, str]] = Field(
        examples=[[["3001.5", "1.2"], ["3001.4", "0.5"]]],
        description="[price, amount] levels, best (highest) first.",
    )
    asks: list[tuple[str, str]] = Field(
        examples=[[["3001.6", "0.8"], ["3001.7", "2"]]],
        description="[price, amount] levels, best (lowest) first.",
    )
    stale: bool = _stale()
    age_seconds: float = _age("Seconds since `time`, the snapshot (millisecond precision).")

    @classmethod
    def of(cls, b: OrderBook, f: Freshness) -> OrderBookOut:
        return cls(
            exchange=b.exchange,
            symbol=b.symbol,
            time=to_iso(b.ts),
            sequence=b.sequence,
            bids=[(decimal_str(p), decimal_str(a)) for p, a in b.bids],
            asks=[(decimal_str(p), decimal_str(a)) for p, a in b.asks],
            stale=f.stale,
            age_seconds=known_age(f),
        )


class Liveness(_Model):
    model_config = ConfigDict(json_schema_extra={"examples": [{"status": "ok"}]})

    status: Literal["ok"] = "ok"


class ComponentOut(_Model):
    name: str = Field(examples=["database"])
    status: Literal["up", "down"] = Field(examples=["up"])
    latency_ms: float | None = Field(
        examples=[0.42],
        description="Probe round trip; for a feed, the age of its newest event. "
        "Null for self-reported.",
    )
    error: str | None = Field(examples=[None], description="Why it is down; null when up.")
    required: bool = Field(
        True, examples=[True], description="False: when down the service is degraded, not unready."
    )

    @classmethod
    def of(cls, h: ComponentHealth) -> ComponentOut:
        return cls(
            name=h.name,
            status="up" if h.ok else "down",
            latency_ms=h.latency_ms,
            error=None if h.ok else h.detail,
            required=h.required,
        )


class Readiness(_Model):
    model_config = ConfigDict(json_schema_extra={"examples": [ex.READINESS]})

    status: Literal["ready", "degraded", "not_ready"] = Field(
        examples=["ready"], description="degraded: an optional component (the cache) is down."
    )
    components: list[ComponentOut]


class ParamError(_Model):
    name: str = Field(examples=["symbol"])
    reason: str = Field(examples=["unknown symbol 'DOGE/USDT'"])


class Problem(_Model):
    """RFC 9457 problem details (``application/problem+json``)."""

    type: str = Field(examples=["https://cryptodesk.dev/problems/unknown-symbol"])
    title: str = Field(examples=["Unknown symbol"])
    status: int = Field(examples=[404])
    detail: str = Field(examples=["unknown symbol 'DOGE/USDT'; this server serves: BTC/USDT"])
    instance: str = Field(examples=["/api/v1/candles"])
    errors: list[ParamError] | None = None
