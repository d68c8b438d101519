"""Every outbound exchange call passes one guard per exchange: a weighted rate
limiter (limiter.py), Retry-After handling with retries, and a circuit breaker.

An HTTP 429 or 418 pauses the whole exchange (every caller, every process)
for its Retry-After (seconds or an HTTP-date), or for an exponential backoff
with jitter when the exchange gives none; waiters already holding slots take
new ones after the pause, so the queue does not fire at once when it ends.
"""

from __future__ import annotations

import asyncio
import contextvars
import email.utils
import enum
import math
import random
import weakref
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

import aiohttp
import ccxt.async_support as ccxt  # type: ignore[import-untyped]
import structlog
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from cryptodesk.adapters.exchanges.breaker import BreakerState, CircuitBreaker, CircuitOpenError
from cryptodesk.adapters.exchanges.limiter import (
    Admission,
    Clock,
    Limiter,
    RateLimitedError,
    Reservation,
    SystemClock,
    TokenBucket,
    limiter_redis_url,
)
from cryptodesk.domain.backoff import backoff_delays

__all__ = [
    "Admission",
    "BreakerState",
    "CircuitOpenError",
    "Clock",
    "ExchangeGuard",
    "GuardMetrics",
    "Limiter",
    "RateLimitedError",
    "Reservation",
    "SystemClock",
    "TokenBucket",
    "UpstreamHTTPError",
    "limiter_redis_url",
    "parse_retry_after",
]

T = TypeVar("T")
log = structlog.get_logger(__name__)


class UpstreamHTTPError(Exception):
    """Raised by non-ccxt callers of ``ExchangeGuard.call`` for an HTTP error status,
    so the guard can see the status and Retry-After."""

    def __init__(self, status: int, headers: Mapping[str, str] | None = None, message: str = ""):
        self.status = status
        self.headers = dict(headers or {})
        super().__init__(message or f"HTTP {status}")


def parse_retry_after(value: str | None, *, now: float) -> float | None:
    """Seconds to wait from a Retry-After header: delay-seconds or an HTTP-date
    (RFC 9110 10.2.3) relative to ``now`` (epoch seconds). None if absent or bad."""
    if value is None or not value.strip():
        return None
    text = value.strip()
    try:
        seconds = float(text)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(text)
        except (TypeError, ValueError, IndexError):
            return None
        if when.tzinfo is None:  # an HTTP-date is always GMT
            return None
        return max(0.0, when.timestamp() - now)
    return seconds if math.isfinite(seconds) and seconds >= 0 else None


# -- metrics ----------------------------------------------------------------------

_METRICS: weakref.WeakKeyDictionary[CollectorRegistry, GuardMetrics] = weakref.WeakKeyDictionary()


class GuardMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.limiter_wait = Histogram(
            "cryptodesk_exchange_limiter_wait_seconds",
            "Time a call waited for the exchange's rate limiter.",
            ["exchange"],
            registry=registry,
            buckets=(0.001, 0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300),
        )
        self.rejections = Counter(
            "cryptodesk_exchange_rejections_total",
            "Calls refused: by the exchange (status 429, 418, or rate_limited when a "
            "ccxt error gave no status), by our breaker (circuit_open) or by our "
            "limiter (wait_too_long).",
            ["exchange", "status"],
            registry=registry,
        )
        self.breaker_state = Gauge(
            "cryptodesk_exchange_breaker_state",
            "Circuit breaker state: 0 closed, 1 half-open, 2 open.",
            ["exchange"],
            registry=registry,
        )
        self.breaker_transitions = Counter(
            "cryptodesk_exchange_breaker_transitions_total",
            "Circuit breaker state changes.",
            ["exchange", "from_state", "to_state"],
            registry=registry,
        )

    @classmethod
    def of(cls, registry: CollectorRegistry) -> GuardMetrics:
        """The one set per registry (each exchange's guard registers nothing new)."""
        metrics = _METRICS.get(registry)
        if metrics is None:
            metrics = _METRICS[registry] = cls(registry)
        return metrics


# -- the guard --------------------------------------------------------------------


class _Outcome(enum.Enum):
    RATE_LIMITED = "rate_limited"  # the exchange answered: slow down, retry
    TRANSIENT = "transient"  # the exchange failed: counts for the breaker, retry
    PERMANENT = "permanent"  # the exchange answered no: raise as is


@dataclass
class _Scope:
    """One attempt of ``call``: what it prepaid, and the last response ccxt saw."""

    guard: ExchangeGuard
    prepaid: float = 0.0
    status: int | None = None
    headers: Mapping[str, str] | None = None


_SCOPE: contextvars.ContextVar[_Scope | None] = contextvars.ContextVar(
    "cryptodesk_exchange_guard", default=None
)
_RATE_LIMITED_ERRORS = (ccxt.RateLimitExceeded, ccxt.DDoSProtection)
_TRANSIENT_ERRORS = (ccxt.NetworkError, TimeoutError, OSError, aiohttp.ClientConnectionError)


class ExchangeGuard:
    """Rate limit, Retry-After, retries and circuit breaker for one exchange.

    ``install(exchange)`` routes a ccxt exchange's throttle through the guard, so
    each request pays its endpoint's ccxt cost. ``call`` wraps one logical
    operation: it prepays ``cost`` (requests made inside it spend that credit
    first, so nothing is charged twice), retries rate limits and transient
    failures, and feeds the breaker.
    """

    def __init__(
        self,
        exchange_id: str,
        *,
        rate_limit_ms: float,
        capacity: float = 1.0,
        redis_url: str | None = None,
        key_prefix: str = "cryptodesk:",
        metrics_registry: CollectorRegistry | None = None,
        failure_threshold: int = 5,
        cool_down: float = 30.0,
        max_attempts: int = 5,
        max_wait: float = 300.0,
        backoff_initial: float = 0.5,
        backoff_cap: float = 30.0,
        attempt_timeout: float | None = None,
        clock: Clock | None = None,
        rng: random.Random | None = None,
    ) -> None:
        if max_attempts < 1:
            raise ValueError("max_attempts must be at least 1")
        self.exchange_id = exchange_id
        self.clock = clock or SystemClock()
        self.metrics = GuardMetrics.of(metrics_registry or CollectorRegistry())
        self.limiter = Limiter(
            exchange_id,
            rate_limit_ms=rate_limit_ms,
            capacity=capacity,
            clock=self.clock,
            max_wait=max_wait,
            redis_url=redis_url,
            key_prefix=key_prefix,
        )
        self.breaker = CircuitBreaker(
            exchange_id,
            failure_threshold=failure_threshold,
            cool_down=cool_down,
            clock=self.clock.monotonic,
            on_transition=self._on_transition,
        )
        self.metrics.breaker_state.labels(exchange_id).set(BreakerState.CLOSED)
        self._max_attempts = max_attempts
        self._backoff = (backoff_initial, backoff_cap)
        self._attempt_timeout = attempt_timeout
        self._rng = rng

    @classmethod
    def for_exchange(cls, exchange: Any, **options: Any) -> ExchangeGuard:
        """A guard with the ccxt exchange's own published limits, installed on it."""
        bucket = exchange.tokenBucket or {}
        options.setdefault("capacity", float(bucket.get("capacity", 1.0)))
        guard = cls(exchange.id, rate_limit_ms=float(exchange.rateLimit), **options)
        guard.install(exchange)
        return guard

    def install(self, exchange: Any) -> None:
        """Make ``exchange`` (a ccxt async instance) throttle through this guard and
        report each response's status and headers to the call that made it."""
        exchange.enableRateLimit = True
        exchange.throttle = self.throttle
        original = exchange.on_rest_response

        def on_rest_response(code: int, reason: str, url: str, method: str,
                             headers: Mapping[str, str], body: str, *rest: Any) -> Any:  # fmt: skip
            scope = _SCOPE.get()
            if scope is not None and scope.guard is self:
                scope.status, scope.headers = int(code), headers
            return original(code, reason, url, method, headers, body, *rest)

        exchange.on_rest_response = on_rest_response

    async def throttle(self, cost: float | None = 1.0) -> None:
        """Wait for ``cost`` units of the exchange's budget (ccxt's throttle hook).

        Outside ``call`` an open breaker refuses the request at once.
        """
        due = 1.0 if cost is None else float(cost)
        scope = _SCOPE.get()
        if scope is not None and scope.guard is self:
            covered = min(due, scope.prepaid)
            scope.prepaid -= covered
            due -= covered
            if due <= 0:
                return
        else:
            try:
                self.breaker.check()
            except CircuitOpenError:
                self.metrics.rejections.labels(self.exchange_id, "circuit_open").inc()
                raise
        await self._acquire(due)

    async def call(
        self, factory: Callable[[], Awaitable[T]], *, cost: float = 1.0, endpoint: str
    ) -> T:
        """Run ``factory()`` under the limiter and breaker, retrying what is worth it."""
        delays = backoff_delays(*self._backoff, rng=self._rng)
        attempt = 0
        while True:
            attempt += 1
            try:
                self.breaker.before_call()
            except CircuitOpenError:
                self.metrics.rejections.labels(self.exchange_id, "circuit_open").inc()
                raise
            scope = _Scope(self)
            try:
                await self._acquire(cost)
                scope.prepaid = cost
                result = await self._attempt(factory, scope)
            except (asyncio.CancelledError, RateLimitedError):
                self.breaker.release()
                raise
            except Exception as exc:
                outcome, status, headers = _classify(exc, scope)
                if outcome is _Outcome.PERMANENT:
                    self.breaker.record_success()  # the exchange is up; the request is wrong
                    raise
                last = attempt >= self._max_attempts
                if outcome is _Outcome.RATE_LIMITED:
                    self.breaker.record_success()
                    label = str(status) if status is not None else "rate_limited"
                    self.metrics.rejections.labels(self.exchange_id, label).inc()
                    told = parse_retry_after(_header(headers, "Retry-After"), now=self.clock.time())
                    pause = told if told is not None else next(delays)
                    await self.limiter.pause(pause)
                    log.warning("exchange rate limited us", exchange=self.exchange_id,
                                endpoint=endpoint, status=status, pause=round(pause, 3),
                                retry_after=told is not None, attempt=attempt)  # fmt: skip
                    if last:
                        raise
                    continue
                self.breaker.record_failure()
                if last or self.breaker.is_refusing():
                    raise
                delay = next(delays)
                log.warning("exchange call failed, retrying", exchange=self.exchange_id,
                            endpoint=endpoint, error=str(exc) or type(exc).__name__,
                            attempt=attempt, retry_in=round(delay, 3))  # fmt: skip
                await self.clock.sleep(delay)
                continue
            self.breaker.record_success()
            return result

    async def close(self) -> None:
        await self.limiter.close()

    async def _attempt(self, factory: Callable[[], Awaitable[T]], scope: _Scope) -> T:
        token = _SCOPE.set(scope)
        try:
            if self._attempt_timeout is None:
                return await factory()
            async with asyncio.timeout(self._attempt_timeout):
                return await factory()
        finally:
            _SCOPE.reset(token)

    async def _acquire(self, cost: float) -> None:
        try:
            admission = await self.limiter.acquire(cost)
        except RateLimitedError:
            self.metrics.rejections.labels(self.exchange_id, "wait_too_long").inc()
            raise
        self.metrics.limiter_wait.labels(self.exchange_id).observe(admission.waited)

    def _on_transition(self, old: BreakerState, new: BreakerState) -> None:
        self.metrics.breaker_state.labels(self.exchange_id).set(new)
        self.metrics.breaker_transitions.labels(
            self.exchange_id, old.name.lower(), new.name.lower()
        ).inc()
        log.warning("exchange circuit breaker", exchange=self.exchange_id,
                    from_state=old.name.lower(), to_state=new.name.lower())  # fmt: skip


def _header(headers: Mapping[str, str] | None, name: str) -> str | None:
    for key, value in (headers or {}).items():
        if key.lower() == name.lower():
            return value
    return None


def _classify(
    exc: Exception, scope: _Scope
) -> tuple[_Outcome, int | None, Mapping[str, str] | None]:
    """What a failed attempt means, from the HTTP status when one was seen (ccxt
    maps many 4xx to ExchangeNotAvailable, and binance a 429 to DDoSProtection)."""
    status, headers = scope.status, scope.headers
    if isinstance(exc, UpstreamHTTPError | aiohttp.ClientResponseError):
        status, headers = exc.status, exc.headers
    if status is not None and status < 400:
        status = None  # an earlier successful response of the same attempt
    if status in (418, 429) or isinstance(exc, _RATE_LIMITED_ERRORS):
        return _Outcome.RATE_LIMITED, status, headers
    if status is not None:
        transient = status == 408 or status >= 500
        return (_Outcome.TRANSIENT if transient else _Outcome.PERMANENT), status, headers
    if isinstance(exc, _TRANSIENT_ERRORS):
        return _Outcome.TRANSIENT, None, headers
    return _Outcome.PERMANENT, None, headers
