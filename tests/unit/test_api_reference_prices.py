"""GET /api/v1/reference-prices over ASGI: exact decimals from the cache, age and
staleness (by the time of the last fetch), missing assets, and a 400 for an
asset that is not configured."""

from __future__ import annotations

from decimal import Decimal

import httpx
from fastapi import FastAPI

from cryptodesk.api.problems import PROBLEM_MEDIA_TYPE, install_problem_handlers
from cryptodesk.api.routes.prices import reference_prices_router
from cryptodesk.services.reference_prices import CachedPrice, ReferencePrice

T0 = 1_704_067_200_000
CACHED = {
    # Fetched 2 s after CoinGecko's update, 10 s ago: fresh.
    "ATOM": CachedPrice(
        ReferencePrice("ATOM", "cosmos", "usd", Decimal("7.01234567"), T0, T0 + 2_000,
                       "coingecko"), 12_000),
    # Fetched 5 s after the update, 65 s ago: stale with a 60 s limit.
    "XMR": CachedPrice(
        ReferencePrice("XMR", "monero", "usd", Decimal("118.90"), T0, T0 + 5_000, "coingecko"),
        70_000),
}  # fmt: skip


def app() -> FastAPI:
    async def read(asset: str) -> CachedPrice | None:
        return CACHED.get(asset)

    api = FastAPI()
    api.include_router(
        reference_prices_router(read, ["ATOM", "XMR", "OSMO"], stale_after_ms=60_000)
    )
    install_problem_handlers(api)
    return api


async def get(params: dict[str, str] | None = None) -> httpx.Response:
    transport = httpx.ASGITransport(app=app())
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        return await client.get("/api/v1/reference-prices", params=params)


async def test_every_configured_asset_with_age_and_staleness() -> None:
    r = await get()
    assert r.status_code == 200
    assert r.json() == {
        "prices": [
            {"asset": "ATOM", "coin_id": "cosmos", "vs_currency": "usd", "price": "7.01234567",
             "as_of": "2024-01-01T00:00:00.000Z", "age_seconds": 12.0, "stale": False,
             "source": "coingecko"},
            {"asset": "XMR", "coin_id": "monero", "vs_currency": "usd", "price": "118.90",
             "as_of": "2024-01-01T00:00:00.000Z", "age_seconds": 70.0, "stale": True,
             "source": "coingecko"},
        ],
        "missing": ["OSMO"],
    }  # fmt: skip
    assert r.headers["cryptodesk-data-age"] == "70"
    assert r.headers["cryptodesk-data-stale"] == "true"


async def test_some_assets_case_insensitive() -> None:
    r = await get({"assets": "atom, atom"})
    assert [p["asset"] for p in r.json()["prices"]] == ["ATOM"]
    assert r.headers["cryptodesk-data-stale"] == "false"
    assert r.headers["cryptodesk-data-age"] == "12"


async def test_an_asset_not_configured_is_a_400_naming_it() -> None:
    r = await get({"assets": "ATOM,DOGE"})
    assert r.status_code == 400
    assert r.headers["content-type"].startswith(PROBLEM_MEDIA_TYPE)
    assert r.json()["detail"] == (
        "not a configured reference asset: DOGE; configured: ATOM, XMR, OSMO"
    )
