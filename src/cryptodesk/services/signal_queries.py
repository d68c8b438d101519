"""Read side of signals for the API: stored signals, rule sets, indicator values.

Parameters are validated here (through ``MarketQueries`` for exchange, symbol
and interval) so every error names the parameter and maps to problem+json.
Indicator values are computed on request from stored candles with the
vectorised registry; nothing here calls an exchange.
"""

from __future__ import annotations

import base64
import binascii
import math
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import msgspec

from cryptodesk.adapters.db.base import MarketStore
from cryptodesk.adapters.db.signal_store import ListKey, SignalFilter, SqlSignalStore, list_key
from cryptodesk.analytics.indicators import IndicatorError, IndicatorSpec, compute, parse_specs
from cryptodesk.domain.interval import DAY_MS, Interval
from cryptodesk.domain.signals import SIGNAL_KINDS, Signal
from cryptodesk.domain.timeutil import MAX_TS_MS, now_ms
from cryptodesk.services.market_queries import InvalidParameter, MarketQueries, NotFound
from cryptodesk.services.signal_rules import (
    RULE_ID_PATTERN,
    EffectiveRules,
    RuleBook,
    SignalRuleSet,
)

MAX_SIGNAL_LIMIT = 1000
MAX_INDICATOR_CANDLES = 10_000
# Recursive indicators (EMA, RSI, MACD, ATR, ADX) are computed over this many
# times their longest period, as the signal rules rebuild theirs (analytics.signals).
RECURSIVE_FACTOR = 30
_FINITE = {"sma", "wma", "bbands", "cci"}
_CURSOR_VERSION = 1
_RULE_ID = re.compile(RULE_ID_PATTERN)


@dataclass(frozen=True, slots=True)
class SignalPage:
    signals: list[Signal]
    next_cursor: str | None


@dataclass(frozen=True, slots=True)
class IndicatorValues:
    """The newest values of ``specs`` on the series' newest stored candle."""

    exchange: str
    symbol: str
    interval: str
    specs: list[IndicatorSpec]
    open_time: int
    close: float
    candles: int  # how many candles the values were computed over
    values: dict[str, float | None]


def history(spec: IndicatorSpec, interval_ms: int) -> int:
    """Candles that make ``spec``'s newest value what a long history would give.

    Windowed indicators need their window; recursive ones ``RECURSIVE_FACTOR``
    times their longest period; VWAP restarts every UTC day, so one day (it
    needs at least one candle). OBV is a running total from the first candle
    read, so its level depends on the history and it gets the maximum.
    """
    ints = [int(p) for p, d in zip(spec.params, spec.definition.params, strict=True)
            if d.kind is int]  # fmt: skip
    if spec.name in _FINITE:
        need = ints[0]
    elif spec.name == "mfi":
        need = ints[0] + 1  # money flow compares each typical price with the previous
    elif spec.name == "stoch":
        need = sum(ints)
    elif spec.name == "vwap":
        need = max(1, DAY_MS // interval_ms) + 1
    elif spec.name == "obv":
        need = MAX_INDICATOR_CANDLES
    elif spec.name == "macd":
        need = RECURSIVE_FACTOR * (ints[1] + ints[2])
    elif spec.name == "adx":
        need = RECURSIVE_FACTOR * 2 * ints[0]  # two Wilder stages (DM, then DX)
    else:
        need = RECURSIVE_FACTOR * max(ints, default=1)
    return min(MAX_INDICATOR_CANDLES, need + 1)


class SignalQueries:
    def __init__(
        self,
        market: MarketQueries,
        store: MarketStore,
        signals: SqlSignalStore,
        rules: RuleBook,
        *,
        exchanges: Sequence[str],
        symbols: Sequence[str],
        intervals: Sequence[str],
        clock: Callable[[], int] = now_ms,
    ) -> None:
        self._market = market
        self._store = store
        self._signals = signals
        self._book = rules
        self._exchanges = list(exchanges)
        self._symbols = list(symbols)
        self._intervals = list(intervals)
        self._clock = clock

    # ---- signals --------------------------------------------------------------------

    async def signals(
        self,
        *,
        exchange: str | None = None,
        symbol: str | None = None,
        interval: str | None = None,
        rule: str | None = None,
        kind: str | None = None,
        start: int | None = None,
        end: int | None = None,
        limit: int = 100,
        cursor: str | None = None,
    ) -> SignalPage:
        """One page of stored signals, oldest first, paged like candles: with
        ``start`` forward from it, else backward from the newest (before ``end``)."""
        where = SignalFilter(
            exchange=None if exchange is None else self._market.exchange(exchange),
            symbol=None if symbol is None else self._market.symbol(symbol),
            interval=None if interval is None else self._market.interval(interval),
            rule=None if rule is None else _rule_id(rule),
            kind=None if kind is None else _kind(kind),
            start=start,
            end=end,
        )
        if not 1 <= limit <= MAX_SIGNAL_LIMIT:
            raise InvalidParameter(
                f"limit must be 1..{MAX_SIGNAL_LIMIT}, got {limit}",
                field="limit", code="invalid-parameter",
            )  # fmt: skip
        if start is not None and end is not None and start >= end:
            raise InvalidParameter(
                "end must be later than start", field="end", code="invalid-parameter"
            )
        forward, boundary = start is not None, None
        if cursor is not None:
            forward, boundary, query = _decode_cursor(cursor)
            if query != _query(where):
                raise _bad_cursor("cursor belongs to a query with other filters; match them")
        if forward:
            rows = await self._signals.signals(where, limit=limit + 1, after=boundary)
            page = rows[:limit]
            more = len(rows) > limit
            edge = page[-1] if page else None
        else:
            rows = await self._signals.signals(
                where, limit=limit + 1, before=boundary, newest_first=True
            )
            page = rows[:limit]
            page.reverse()
            more = len(rows) > limit
            edge = page[0] if page else None
        next_cursor = None
        if more and edge is not None:
            next_cursor = _encode_cursor(forward, list_key(edge), _query(where))
        return SignalPage(page, next_cursor)

    # ---- rules ----------------------------------------------------------------------

    async def rules(self) -> EffectiveRules:
        return await self._book.current()

    async def replace_rules(self, rule_set: SignalRuleSet) -> EffectiveRules:
        """Store ``rule_set`` once every exchange, symbol and interval it names is served."""
        served = {
            "exchanges": self._exchanges, "symbols": self._symbols, "intervals": self._intervals,
        }  # fmt: skip
        for i, rule in enumerate(rule_set.rules):
            for name, allowed in served.items():
                for item in getattr(rule, name):
                    if item not in allowed:
                        raise InvalidParameter(
                            f"rule {rule.id!r}: {item!r} is not served here; "
                            f"{name}: {', '.join(allowed)}",
                            field=f"rules.{i}.{name}", code="invalid-parameter",
                        )  # fmt: skip
        return await self._book.replace(rule_set.rules, at=self._clock())

    # ---- indicators -----------------------------------------------------------------

    async def indicators(
        self, exchange: str, symbol: str, interval: str, names: str
    ) -> IndicatorValues:
        ex, sym = self._market.exchange(exchange), self._market.symbol(symbol)
        iv = self._market.interval(interval)
        try:
            specs = parse_specs(names)
        except IndicatorError as exc:
            raise InvalidParameter(str(exc), field="names", code="invalid-parameter") from None
        ms = Interval.parse(iv).ms
        count = max(history(spec, ms) for spec in specs)
        candles = await self._store.get_candles(ex, sym, iv, limit=count, newest_first=True)
        if not candles:
            raise NotFound(f"no candles stored yet for {sym} {iv} on {ex}", field=None,
                           code="no-data")  # fmt: skip
        candles.reverse()
        arrays = {
            "ts": [float(c.open_time) for c in candles],
            "open": [c.open for c in candles],
            "high": [c.high for c in candles],
            "low": [c.low for c in candles],
            "close": [c.close for c in candles],
            "volume": [c.volume for c in candles],
        }
        columns = compute(specs, arrays)
        values = {name: _finite(float(col[-1])) for name, col in columns.items()}
        last = candles[-1]
        return IndicatorValues(ex, sym, iv, specs, last.open_time, last.close, len(candles),
                               values)  # fmt: skip


def _finite(value: float) -> float | None:
    return value if math.isfinite(value) else None


def _rule_id(text: str) -> str:
    if not _RULE_ID.match(text):
        raise InvalidParameter(f"rule {text!r} is not a rule id", field="rule",
                               code="invalid-parameter")  # fmt: skip
    return text


def _kind(text: str) -> str:
    if text not in SIGNAL_KINDS:
        raise InvalidParameter(
            f"unknown signal kind {text!r}; known: {', '.join(SIGNAL_KINDS)}",
            field="kind", code="invalid-parameter",
        )  # fmt: skip
    return text


# ---- cursors --------------------------------------------------------------------------


def _query(w: SignalFilter) -> list[Any]:
    return [w.exchange, w.symbol, w.interval, w.rule, w.kind, w.start, w.end]


def _encode_cursor(forward: bool, boundary: ListKey, query: list[Any]) -> str:
    body = {"v": _CURSOR_VERSION, "d": "f" if forward else "b", "k": list(boundary), "q": query}
    return base64.urlsafe_b64encode(msgspec.json.encode(body)).rstrip(b"=").decode("ascii")


def _bad_cursor(reason: str) -> InvalidParameter:
    return InvalidParameter(reason, field="cursor", code="invalid-cursor")


def _decode_cursor(text: str) -> tuple[bool, ListKey, list[Any]]:
    try:
        body = msgspec.json.decode(base64.urlsafe_b64decode(text + "=" * (-len(text) % 4)))
    except (binascii.Error, ValueError):
        raise _bad_cursor("cursor is not one this server issued") from None
    if not isinstance(body, dict) or body.get("v") != _CURSOR_VERSION:
        raise _bad_cursor("cursor is not one this server issued")
    direction, key, query = body.get("d"), body.get("k"), body.get("q")
    if (
        direction not in ("f", "b")
        or not isinstance(key, list)
        or len(key) != 5
        or not (type(key[0]) is int and 0 <= key[0] <= MAX_TS_MS)
        or not all(isinstance(x, str) for x in key[1:])
        or not isinstance(query, list)
        or len(query) != 7
    ):
        raise _bad_cursor("cursor is not one this server issued")
    t, exchange, symbol, interval, rule = key
    return direction == "f", (t, exchange, symbol, interval, rule), query
