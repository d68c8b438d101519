"""Upstream status per exchange, and how fresh a value served from the cache is.

The processes that call an exchange report each outcome here: ingest its
streaming feed (channel ``feed``), the scheduler each prefetch job
(``prefetch:tickers``, ``prefetch:candles``, ``prefetch:markets``). A channel
is failing while its latest report is a failure. The read side never calls an
exchange: it serves the last known good value and marks it ``stale`` when
every upstream that refreshes that kind of data is failing, or when the value
is older than the stale limit.

The record lives in the process. A process that neither ingests nor prefetches
an exchange has no reports for it, and there only a value's age marks it stale.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Generic, Literal, TypeVar

from cryptodesk.domain.timeutil import now_ms

T = TypeVar("T")
DataKind = Literal["tickers", "orderbook", "candles", "markets"]

FEED = "feed"
PREFETCH_JOBS = ("tickers", "candles", "markets")
_MAX_ERROR = 300  # an error message, not a traceback


def prefetch_channel(kind: str) -> str:
    """The channel of the prefetch job ``kind`` (``tickers``: ``prefetch:tickers``)."""
    return f"prefetch:{kind}"


# Which channels refresh each kind of served data. Compute derives tickers and
# candles from the feed's trades, and ingest loads markets when the feed starts.
REFRESHED_BY: dict[DataKind, tuple[str, ...]] = {
    "tickers": (FEED, prefetch_channel("tickers")),
    "orderbook": (FEED,),
    "candles": (FEED, prefetch_channel("candles")),
    "markets": (FEED, prefetch_channel("markets")),
}


@dataclass(frozen=True, slots=True)
class ChannelState:
    """The latest reports of one upstream channel of one exchange (epoch ms)."""

    exchange: str
    channel: str
    failing: bool  # the latest report is a failure
    last_success_ms: int | None = None
    last_failure_ms: int | None = None
    failing_since_ms: int | None = None  # first failure after the last success
    error: str | None = None  # of the latest failure


class UpstreamDown(Exception):
    """An upstream channel is failing; the message names it, for how long and why."""


class FeedStatus:
    """Success and failure reports per exchange and channel; ``clock`` is epoch ms."""

    def __init__(self, *, clock: Callable[[], int] = now_ms) -> None:
        self._clock = clock
        self._states: dict[tuple[str, str], ChannelState] = {}

    def succeeded(self, exchange: str, channel: str) -> None:
        old = self._states.get((exchange, channel))
        self._states[(exchange, channel)] = ChannelState(
            exchange,
            channel,
            False,
            last_success_ms=self._clock(),
            last_failure_ms=None if old is None else old.last_failure_ms,
            error=None if old is None else old.error,
        )

    def failed(self, exchange: str, channel: str, error: str) -> None:
        now = self._clock()
        old = self._states.get((exchange, channel))
        since = now if old is None or not old.failing else old.failing_since_ms
        self._states[(exchange, channel)] = ChannelState(
            exchange,
            channel,
            True,
            last_success_ms=None if old is None else old.last_success_ms,
            last_failure_ms=now,
            failing_since_ms=since,
            error=error[:_MAX_ERROR],
        )

    def channels(self, exchange: str) -> list[ChannelState]:
        """What was reported for ``exchange``, by channel name."""
        found = [s for (ex, _), s in self._states.items() if ex == exchange]
        return sorted(found, key=lambda s: s.channel)

    def failing(self, exchange: str, kind: DataKind) -> bool:
        """Every channel here that refreshes ``kind`` data of ``exchange`` is failing.

        One working channel keeps the data fresh (a REST ticker refresh while
        the websocket reconnects); with no report at all nothing is known here.
        """
        reported = [
            s for ch in REFRESHED_BY[kind] if (s := self._states.get((exchange, ch))) is not None
        ]
        return bool(reported) and all(s.failing for s in reported)

    def prefetch_check(self, exchange: str) -> Callable[[], Awaitable[float | None]]:
        """A ``/readyz`` check for the prefetch jobs of ``exchange``.

        Down (UpstreamDown) while any of its jobs' latest run failed, naming
        each with how long it has failed and the error; up with the age in
        milliseconds of the newest successful run (None before the first).
        """
        names = {prefetch_channel(kind) for kind in PREFETCH_JOBS}

        async def check() -> float | None:
            now = self._clock()
            states = [s for s in self.channels(exchange) if s.channel in names]
            down = [s for s in states if s.failing]
            if down:
                raise UpstreamDown("; ".join(_failing_text(s, now) for s in down))
            successes = [s.last_success_ms for s in states if s.last_success_ms is not None]
            return float(max(0, now - max(successes))) if successes else None

        return check


def _failing_text(s: ChannelState, now: int) -> str:
    since = s.failing_since_ms if s.failing_since_ms is not None else now
    return f"{s.channel} failing for {max(0, now - since) / 1000:.0f}s: {s.error}"


@dataclass(frozen=True, slots=True)
class Freshness:
    """How current a served value is.

    ``age_ms`` runs from the value's exchange time to now (None when the value
    carries no time); ``stale`` means its upstream is failing or it is older
    than the limit. A stale value is still the last known good one.
    """

    stale: bool = False
    age_ms: int | None = None


@dataclass(frozen=True, slots=True)
class Served(Generic[T]):
    """A value read from the cache or the database, with its freshness."""

    value: T
    freshness: Freshness


def judge(as_of_ms: int | None, now: int, *, limit_ms: float, failing: bool) -> Freshness:
    """Freshness of a value whose data is complete as of ``as_of_ms``.

    A clock behind the exchange's (or a simulation running ahead of real
    time) gives a negative age, shown as 0.
    """
    age = None if as_of_ms is None else max(0, now - as_of_ms)
    return Freshness(failing or (age is not None and age > limit_ms), age)
