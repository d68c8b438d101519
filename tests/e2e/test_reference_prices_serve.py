"""CoinGecko reference prices in ``serve``: the scheduler refreshes them from a fake
CoinGecko (its documented wire format) into the cache, the API serves them
exactly, and keeps serving the last known price, marked stale, while CoinGecko
fails; /readyz names the failing refresh."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from cryptodesk.domain.timeutil import now_ms
from tests.e2e.conftest import LoopThread, wait_for
from tests.fakes.coingecko import DEFAULT_COINS, Coin, FakeCoinGecko

pytestmark = [pytest.mark.e2e, pytest.mark.xdist_group("e2e")]


async def _make() -> FakeCoinGecko:
    return FakeCoinGecko((*DEFAULT_COINS, Coin("monero", "xmr", "Monero")))


@pytest.fixture
def coingecko() -> Iterator[LoopThread]:
    with LoopThread() as loop:
        loop.fake = loop.run(_make())
        loop.run(loop.fake.start())
        try:
            yield loop
        finally:
            loop.run(loop.fake.stop())


def test_reference_prices_are_served_from_the_cache_and_go_stale(server_factory, coingecko):
    fake = coingecko.fake
    updated = now_ms() // 1000 - 5
    fake.now_s = updated + 5
    fake.set_price("cosmos", "usd", "7.01234567", updated_s=updated)
    fake.set_price("monero", "usd", "118.9", updated_s=updated)
    server = server_factory(
        CRYPTODESK_COINGECKO_ASSETS="ATOM,XMR=monero",  # ATOM: found by symbol
        CRYPTODESK_COINGECKO_BASE_URL=fake.api_url,
        CRYPTODESK_COINGECKO_REFRESH_SECONDS="1",
    )
    with server.client() as client:

        def served() -> dict[str, Any] | None:
            r = client.get("/api/v1/reference-prices")
            return r.json() if r.status_code == 200 and not r.json()["missing"] else None

        body = wait_for(served, timeout=30)
        by_asset = {p["asset"]: p for p in body["prices"]}
        assert by_asset["ATOM"]["price"] == "7.01234567"  # every digit, as CoinGecko sent it
        assert by_asset["XMR"]["price"] == "118.9"
        assert by_asset["ATOM"]["coin_id"] == "cosmos"
        assert by_asset["ATOM"]["source"] == "coingecko"
        assert by_asset["ATOM"]["stale"] is False

        # CoinGecko fails from now on: the last known price stays, marked stale.
        fake.fail_next("/simple/price", 500, {"error": "internal"}, times=10_000)

        def stale() -> Any:
            r = client.get("/api/v1/reference-prices", params={"assets": "atom"})
            return r if r.json()["prices"][0]["stale"] else None

        r = wait_for(stale, timeout=30)
        [atom] = r.json()["prices"]
        assert atom["price"] == "7.01234567"
        assert atom["age_seconds"] > 3
        assert r.headers["cryptodesk-data-stale"] == "true"
        assert int(r.headers["cryptodesk-data-age"]) >= 3

        def failing() -> dict[str, Any] | None:
            ready = client.get("/readyz").json()
            parts = {c["name"]: c for c in ready["components"]}
            down = parts.get("prices:coingecko", {}).get("status") == "down"
            return ready if down else None

        ready = wait_for(failing, timeout=30)
        assert ready["status"] == "degraded"  # optional: the rest is still served

        bad = client.get("/api/v1/reference-prices", params={"assets": "DOGE"})
        assert bad.status_code == 400
        assert bad.headers["content-type"].startswith("application/problem+json")
        assert "not a configured reference asset: DOGE" in bad.json()["detail"]
    assert server.stop() == 0
