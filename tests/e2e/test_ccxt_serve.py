"""``serve`` on a ccxt exchange: a fake Binance (its REST and websocket wire format)
feeds trades that become candles, the scheduler prefetches its klines and
tickers; an unknown exchange id and a symbol binance does not list are
reported in /readyz while the rest runs.

The fake runs on an event loop of its own in a thread; ``serve`` is a real
process pointed at it through CRYPTODESK_EXCHANGE_CONFIG__BINANCE__*_URL.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest

from cryptodesk.domain.timeutil import now_ms
from tests.e2e.conftest import LoopThread, wait_for
from tests.fakes.binance import FakeBinance

pytestmark = [pytest.mark.e2e, pytest.mark.xdist_group("e2e")]
H = 3_600_000


@pytest.fixture
def binance() -> Iterator[LoopThread]:
    with LoopThread() as loop:
        loop.fake = loop.run(_make())
        loop.run(loop.fake.start())
        try:
            yield loop
        finally:
            loop.run(loop.fake.stop())


async def _make() -> FakeBinance:
    return FakeBinance()  # made on the fake's own loop


def _iso(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, tz=UTC).strftime("%Y-%m-%dT%H:%M:%S.000Z")


def test_serve_streams_prefetches_and_reports_an_unknown_exchange(server_factory, binance):
    fake = binance.fake
    now = now_ms()
    hour = now - now % H
    fake.now = now
    # History only REST knows: three closed hourly klines, ten hours back.
    klines = [
        [hour - (10 - i) * H, f"6400{i}.10", f"6410{i}.00", f"6390{i}.50", f"6405{i}.25",
         f"1{i}.5", hour - (9 - i) * H - 1, "770000.5", 100 + i, "6.0", "385000.0", "0"]
        for i in range(3)
    ]  # fmt: skip
    fake.add_klines("BTCUSDT", "1h", klines)
    fake.set_ticker(
        "BTCUSDT", priceChange="10.5", priceChangePercent="0.016", weightedAvgPrice="64000.1",
        prevClosePrice="64000.00", lastPrice="64010.50", lastQty="0.01", bidPrice="64010.40",
        bidQty="1.5", askPrice="64010.60", askQty="2.5", openPrice="64000.00",
        highPrice="64500.00", lowPrice="63200.00", volume="1234.567", quoteVolume="79012345.67",
        openTime=now - 86_400_000, closeTime=now - 1, firstId=1, lastId=1000, count=1000,
    )  # fmt: skip
    fake.set_book("BTCUSDT", [("64010.40", "1.5")], [("64010.60", "2.5")], last_update_id=1000)

    server = server_factory(
        CRYPTODESK_EXCHANGES="binance,nosuchex",
        CRYPTODESK_SYMBOLS="BTC/USDT,DOGE/EUR",  # binance lists no DOGE/EUR
        CRYPTODESK_INTERVALS="1h",
        CRYPTODESK_CANDLE_GRACE_MS="0",
        CRYPTODESK_PREFETCH_TICKERS_SECONDS="1",
        CRYPTODESK_PREFETCH_JITTER="0",
        CRYPTODESK_EXCHANGE_CONFIG__BINANCE__HTTP_URL=fake.base_url,
        CRYPTODESK_EXCHANGE_CONFIG__BINANCE__WS_URL=fake.ws_url,
    )
    binance.run(fake.wait_subscribed("btcusdt@trade", timeout=60))
    # Trades of the previous hour, then one of this hour closes that candle.
    last_hour = [("64000.00", "0.5"), ("64100.00", "0.25"), ("63950.50", "1.0")]
    for i, (price, qty) in enumerate(last_hour):
        binance.run(fake.push_trade("BTCUSDT", price, qty, buyer_maker=i % 2 == 0,
                                    time=hour - H + 60_000 * (i + 1)))  # fmt: skip
    binance.run(fake.push_trade("BTCUSDT", "64020.00", "0.1", buyer_maker=False, time=now))

    with server.client() as client:

        def candles() -> list[dict[str, Any]] | None:
            r = client.get("/api/v1/candles", params={
                "exchange": "binance", "symbol": "BTC/USDT", "interval": "1h",
                "start": _iso(hour - 10 * H), "end": _iso(hour),
            })  # fmt: skip
            body = r.json().get("candles", []) if r.status_code == 200 else []
            return body if len(body) >= 4 else None

        served = wait_for(candles, timeout=60)
        by_time = {c["open_time_ms"]: c for c in served}
        for row in klines:  # prefetched over REST, exactly as the exchange sent them
            c = by_time[row[0]]
            assert [float(c[k]) for k in ("open", "high", "low", "close", "volume")] == [
                float(x) for x in row[1:6]
            ]
        built = by_time[hour - H]  # made from the websocket trades
        assert [float(built[k]) for k in ("open", "high", "low", "close")] == [
            64000.0, 64100.0, 63950.5, 63950.5,
        ]  # fmt: skip
        assert float(built["volume"]) == 1.75
        assert built["trades"] == 3

        ready = client.get("/readyz").json()
        components = {c["name"]: c for c in ready["components"]}
        # Streaming BTC/USDT (the candle above), naming what it cannot stream.
        assert components["feed:binance"]["status"] == "down", components
        assert "binance does not list DOGE/EUR" in components["feed:binance"]["error"]
        assert components["feed:nosuchex"]["status"] == "down"
        assert "unknown exchange 'nosuchex'" in components["feed:nosuchex"]["error"]

        admin = server.auth("admin")

        def jobs() -> dict[str, Any] | None:
            body = client.get("/api/v1/admin/jobs", headers=admin).json()
            by_id = {j["job"]: j for j in body["jobs"]}
            ok = by_id.get("tickers:binance", {}).get("outcome") == "ok"
            return by_id if ok and by_id["candles:binance"].get("outcome") else None

        listed = wait_for(jobs, timeout=60)
        assert set(listed) >= {"candles:binance", "tickers:binance", "markets:binance"}
        assert listed["candles:binance"]["outcome"] == "ok", listed["candles:binance"]
        # Configured, so listed, but never run: no exchange answers to that id.
        assert listed["candles:nosuchex"]["outcome"] is None
    assert server.stop() == 0
    assert fake.rest_calls("/api/v3/klines"), "the scheduler fetched no klines"
