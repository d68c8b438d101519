"""Compute: closed candles -> volatility circuit breakers -> alerts and cached states.

The service is its own consumer group (``circuit-breakers``) on ``candles`` and
starts at the end of the topic (``start="latest"``): a breaker is about now, and
replaying a topic's retained past would announce halts long over. Its memory
comes from elsewhere instead: at start-up each market's windows are filled
from the stored candles (when a store is given) and its state (halted, since
when, next check) from the cache, so a restart neither forgets a halt nor
waits hours for history. A candle at or before a market's newest point is
ignored, which makes redeliveries and the overlap with the store harmless.

Each transition is published on ``alerts`` (key ``exchange:symbol``) before the
candles are acked, so delivery is at-least-once. After every batch the state of
each market it touched is written to the cache, one key per market
(``circuit_breaker:EXCHANGE:SYMBOL``, written whatever the state, so a cache
that lost its data is whole again one candle later). ``BreakerStates`` reads
them from any process: the API, the trading engine's pre-trade checks.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

import msgspec
import structlog

from cryptodesk.adapters.bus.base import Bus
from cryptodesk.adapters.cache.base import Cache
from cryptodesk.adapters.db.base import MarketStore
from cryptodesk.analytics.vol_breaker import BreakerSettings, BreakerState, VolatilityBreaker
from cryptodesk.domain import codec
from cryptodesk.domain.errors import DomainError
from cryptodesk.domain.interval import Interval
from cryptodesk.domain.market import stream_key
from cryptodesk.domain.timeutil import to_iso
from cryptodesk.observability.metrics import Metrics
from cryptodesk.services.consume import consume
from cryptodesk.services.retry import retry_forever

log = structlog.get_logger(__name__)
TOPIC = "alerts"
GROUP = "circuit-breakers"
_encode = msgspec.json.Encoder().encode
_decode = msgspec.json.Decoder().decode


def cache_key(exchange: str, symbol: str) -> str:
    return f"circuit_breaker:{exchange}:{symbol}"


def alert_json(state: BreakerState) -> dict[str, Any]:
    """The ``alerts`` form of a transition (times ISO 8601 UTC, as the API)."""
    return {
        "type": "circuit_breaker",
        "exchange": state.exchange,
        "symbol": state.symbol,
        "state": state.state,
        "since": to_iso(state.since_ms),
        "short_volatility": state.short_vol,
        "long_volatility": state.long_vol,
        "ratio": state.ratio,
        "reason": state.reason,
    }


def encode_state(state: BreakerState, cooldown_until: int | None) -> bytes:
    """The cached form: epoch ms inside, plus when a halted market is next checked."""
    return _encode(
        {
            "exchange": state.exchange, "symbol": state.symbol, "state": state.state,
            "since": state.since_ms, "short_vol": state.short_vol, "long_vol": state.long_vol,
            "ratio": state.ratio, "reason": state.reason, "cooldown_until": cooldown_until,
        }
    )  # fmt: skip


def decode_state(raw: bytes) -> tuple[BreakerState, int | None]:
    d = _decode(raw)
    if d["state"] not in ("active", "halted"):
        raise ValueError(f"unknown breaker state {d['state']!r}")
    state = BreakerState(d["exchange"], d["symbol"], d["state"], d["since"], d["short_vol"],
                         d["long_vol"], d["ratio"], d["reason"])  # fmt: skip
    return state, d["cooldown_until"]


class BreakerStates:
    """Reads the breakers' states from the cache; usable from any process.

    A market with no cached state (never seen, or the cache lost it and no
    candle has come since) is unknown: left out of ``states`` and not halted.
    """

    def __init__(self, cache: Cache, *, exchanges: Sequence[str], symbols: Sequence[str]) -> None:
        self._cache = cache
        self._markets = [(e, s) for e in exchanges for s in symbols]

    async def states(self) -> list[BreakerState]:
        """The known states, in (exchange, symbol) order of the settings."""
        raw = await self._cache.get_many([cache_key(e, s) for e, s in self._markets])
        found = []
        for value in raw:
            if value is not None and (state := _decoded(value)) is not None:
                found.append(state)
        return found

    async def is_halted(self, exchange: str, symbol: str) -> bool:
        raw = await self._cache.get(cache_key(exchange, symbol))
        state = None if raw is None else _decoded(raw)
        return state is not None and state.state == "halted"


def _decoded(raw: bytes) -> BreakerState | None:
    try:
        return decode_state(raw)[0]
    except (ValueError, KeyError, TypeError, msgspec.DecodeError) as exc:
        log.warning("cached circuit breaker state unreadable", error=repr(exc))
        return None


class CircuitBreakerService:
    """One volatility breaker per configured exchange x symbol on one interval."""

    def __init__(
        self,
        bus: Bus,
        cache: Cache,
        settings: BreakerSettings,
        *,
        exchanges: Sequence[str],
        symbols: Sequence[str],
        interval: Interval,
        store: MarketStore | None = None,
        metrics: Metrics | None = None,
        group: str = GROUP,
    ) -> None:
        self._bus = bus
        self._cache = cache
        self._settings = settings
        self._markets = {(e, s) for e in exchanges for s in symbols}
        self._interval = interval
        self._store = store
        self._metrics = metrics
        self._group = group
        self._breakers: dict[tuple[str, str], VolatilityBreaker] = {}
        self.published = 0

    @property
    def breakers(self) -> dict[tuple[str, str], VolatilityBreaker]:
        return self._breakers

    async def recover(self) -> None:
        """Resume every market from the cache (state) and the store (windows)."""
        for exchange, symbol in sorted(self._markets):
            breaker = await self._resumed(exchange, symbol)
            if breaker is not None:
                self._breakers[(exchange, symbol)] = breaker

    async def _resumed(self, exchange: str, symbol: str) -> VolatilityBreaker | None:
        cached = None
        try:
            raw = await self._cache.get(cache_key(exchange, symbol))
            cached = None if raw is None else decode_state(raw)
        except Exception as exc:  # the cache is best effort: start active
            log.warning("circuit breaker state not resumed", exchange=exchange, symbol=symbol,
                        error=repr(exc))  # fmt: skip
        points: list[tuple[int, float]] = []
        if self._store is not None:
            store, n, iv = self._store, self._settings.closes_needed, self._interval
            candles = await retry_forever(
                lambda: store.get_candles(exchange, symbol, iv.name, limit=n, newest_first=True),
                what="read candles",
            )
            points = [(c.open_time + iv.ms, c.close) for c in reversed(candles) if c.closed]
        if cached is None and not points:
            return None  # the first candle starts it
        if cached is None:
            breaker = VolatilityBreaker(exchange, symbol, self._settings, since_ms=points[-1][0])
        else:
            state, until = cached
            breaker = VolatilityBreaker(
                exchange, symbol, self._settings, since_ms=state.since_ms, state=state.state,
                reason=state.reason, cooldown_until=until,
            )  # fmt: skip
        breaker.warm(points)
        return breaker

    async def run(self, stop: asyncio.Event) -> None:
        """Consume ``candles`` until ``stop`` is set and nothing more arrives."""
        await consume(self._bus, "candles", group=self._group, stop=stop, handle=self.process,
                      metrics=self._metrics, batch=500)  # fmt: skip

    async def process(self, values: Sequence[bytes]) -> list[BreakerState]:
        """Feed the encoded candles in ``values``; publish and cache; return the
        transitions."""
        transitions: list[BreakerState] = []
        touched: dict[tuple[str, str], VolatilityBreaker] = {}
        for value in values:
            try:
                candle = codec.decode_candle(value)
            except (DomainError, ValueError, KeyError, TypeError) as exc:
                # The candle sinks dead-letter it; here it is only skipped.
                log.warning("undecodable candle skipped", error=repr(exc))
                continue
            market = (candle.exchange, candle.symbol)
            if (
                not candle.closed
                or candle.interval != self._interval.name
                or market not in self._markets
            ):
                continue
            close_ms = candle.open_time + self._interval.ms
            breaker = self._breakers.get(market)
            if breaker is None:
                breaker = VolatilityBreaker(*market, self._settings, since_ms=close_ms)
                self._breakers[market] = breaker
            change = breaker.update(close_ms, candle.close)
            touched[market] = breaker
            if change is not None:
                transitions.append(change)
                log.warning("circuit breaker", exchange=change.exchange, symbol=change.symbol,
                            state=change.state, reason=change.reason)  # fmt: skip
        if transitions:
            items = [
                (stream_key(t.exchange, t.symbol), _encode(alert_json(t))) for t in transitions
            ]
            await retry_forever(
                lambda: self._bus.publish_many(TOPIC, items), what="publish breaker alerts"
            )
            self.published += len(items)
        if touched:
            states = {
                cache_key(*m): encode_state(b.state, b.cooldown_until) for m, b in touched.items()
            }
            try:
                await self._cache.set_many(states)
            except Exception as exc:  # rewritten with the next candle
                log.warning("circuit breaker states not cached", error=repr(exc))
        return transitions
