"""FeedStatus: per-channel reports, which data kinds they make stale, the prefetch
health check, and the freshness rule."""

from __future__ import annotations

import pytest

from cryptodesk.observability.health import HealthRegistry
from cryptodesk.observability.metrics import Metrics
from cryptodesk.services.feed_status import (
    FEED,
    ChannelState,
    FeedStatus,
    Freshness,
    UpstreamDown,
    judge,
    prefetch_channel,
)

T0 = 1_714_521_600_000
TICKERS = prefetch_channel("tickers")
CANDLES = prefetch_channel("candles")


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> int:
        return self.now


def status() -> tuple[FeedStatus, Clock]:
    clock = Clock()
    return FeedStatus(clock=clock), clock


def test_a_channel_fails_until_its_next_success_and_keeps_the_streak_start():
    s, clock = status()
    s.succeeded("binance", FEED)
    clock.now += 1_000
    s.failed("binance", FEED, "ConnectionError: reset")
    clock.now += 5_000
    s.failed("binance", FEED, "ConnectionError: refused")
    assert s.channels("binance") == [
        ChannelState(
            "binance", FEED, True,
            last_success_ms=T0, last_failure_ms=T0 + 6_000,
            failing_since_ms=T0 + 1_000, error="ConnectionError: refused",
        )
    ]  # fmt: skip
    clock.now += 1_000
    s.succeeded("binance", FEED)
    (state,) = s.channels("binance")
    assert (state.failing, state.last_success_ms, state.failing_since_ms) == (
        False,
        T0 + 7_000,
        None,
    )
    # The last error stays on record for whoever looks.
    assert (state.last_failure_ms, state.error) == (T0 + 6_000, "ConnectionError: refused")
    assert s.channels("kraken") == []


def test_errors_are_cut_to_a_message():
    s, _ = status()
    s.failed("binance", FEED, "x" * 5000)
    assert s.channels("binance")[0].error == "x" * 300


def test_a_kind_is_failing_only_when_every_channel_that_refreshes_it_fails():
    s, _ = status()
    # Nothing reported here: nothing known, not failing.
    assert not s.failing("binance", "tickers")
    s.failed("binance", FEED, "ws closed")
    assert s.failing("binance", "tickers")
    assert s.failing("binance", "orderbook")
    # A REST ticker refresh that works keeps tickers fresh; the book has no REST path.
    s.succeeded("binance", TICKERS)
    assert not s.failing("binance", "tickers")
    assert s.failing("binance", "orderbook")
    assert s.failing("binance", "candles")
    s.failed("binance", TICKERS, "HTTP 502")
    assert s.failing("binance", "tickers")
    # Channels are per exchange.
    assert not s.failing("kraken", "tickers")


def test_a_failing_prefetch_alone_makes_its_kind_failing():
    # A scheduler-only process: no feed reports at all.
    s, _ = status()
    s.failed("binance", CANDLES, "PrefetchError: 1 series failed")
    assert s.failing("binance", "candles")
    assert not s.failing("binance", "tickers")
    assert not s.failing("binance", "orderbook")


async def test_prefetch_check_names_each_failing_job_with_its_duration():
    s, clock = status()
    check = s.prefetch_check("binance")
    assert await check() is None  # no run yet
    s.succeeded("binance", TICKERS)
    s.succeeded("binance", FEED)  # the feed is not the prefetch's business
    clock.now += 4_000
    assert await check() == 4_000.0  # age of the newest successful run
    s.failed("binance", CANDLES, "PrefetchError: 1 series failed")
    clock.now += 12_000
    s.failed("binance", TICKERS, "NetworkError: timeout")
    clock.now += 3_000
    with pytest.raises(UpstreamDown) as exc:
        await check()
    assert str(exc.value) == (
        "prefetch:candles failing for 15s: PrefetchError: 1 series failed; "
        "prefetch:tickers failing for 3s: NetworkError: timeout"
    )
    s.succeeded("binance", CANDLES)
    s.succeeded("binance", TICKERS)
    assert await check() == 0.0


async def test_prefetch_check_in_readyz_is_an_optional_component():
    s, _ = status()
    health = HealthRegistry(Metrics())
    health.register("prefetch:binance", s.prefetch_check("binance"), required=False)
    s.failed("binance", TICKERS, "NetworkError: timeout")
    result = (await health.check_all())["prefetch:binance"]
    assert (result.ok, result.required) == (False, False)
    assert result.detail == "UpstreamDown: prefetch:tickers failing for 0s: NetworkError: timeout"


@pytest.mark.parametrize(
    ("as_of", "failing", "expected"),
    [
        (T0 - 60_000, False, Freshness(False, 60_000)),  # exactly the limit: still fresh
        (T0 - 60_001, False, Freshness(True, 60_001)),
        (T0 - 1_000, True, Freshness(True, 1_000)),
        (T0 + 5_000, False, Freshness(False, 0)),  # ahead of our clock
        (None, False, Freshness(False, None)),
        (None, True, Freshness(True, None)),
    ],
)
def test_judge(as_of, failing, expected):
    assert judge(as_of, T0, limit_ms=60_000, failing=failing) == expected
