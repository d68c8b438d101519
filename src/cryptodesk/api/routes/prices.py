"""``GET /api/v1/reference-prices``: prices of assets no configured exchange lists.

The scheduler refreshes them from the price source (CoinGecko) into the cache;
this route reads the cache only, never the source. A price last fetched more
than ``stale_after_ms`` ago (the source has been failing for a while) is still
served, marked ``stale``, with its age since the source's update time, in the
body and in the ``cryptodesk-data-age`` / ``cryptodesk-data-stale`` headers like the market routes.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import Annotated

from fastapi import APIRouter, Query, Response
from pydantic import BaseModel, ConfigDict, Field

from cryptodesk.api.routes.market import AGE_HEADER, STALE_HEADER
from cryptodesk.api.schemas import Problem
from cryptodesk.api.security import requires
from cryptodesk.domain.timeutil import to_iso
from cryptodesk.services.market_queries import InvalidParameter
from cryptodesk.services.reference_prices import CachedPrice

ReadPrice = Callable[[str], Awaitable[CachedPrice | None]]


class ReferencePriceOut(BaseModel):
    model_config = ConfigDict(frozen=True)

    asset: str = Field(examples=["ATOM"])
    coin_id: str = Field(examples=["cosmos"], description="The source's id of the coin.")
    vs_currency: str = Field(examples=["usd"])
    price: str = Field(examples=["7.0123"], description="Exact decimal, as the source sent it.")
    as_of: str = Field(examples=["2024-05-01T12:00:00.000Z"], description="Source's update time.")
    age_seconds: float = Field(examples=[42.5], description="Now minus as_of.")
    stale: bool = Field(
        description="Not fetched for three refresh intervals: the source is failing."
    )
    source: str = Field(examples=["coingecko"])


class ReferencePricesResponse(BaseModel):
    model_config = ConfigDict(frozen=True)

    prices: list[ReferencePriceOut]
    missing: list[str] = Field(
        description="Configured assets with no cached price yet (or none for a day)."
    )


def reference_prices_router(
    read: ReadPrice, assets: Sequence[str], *, stale_after_ms: int
) -> APIRouter:
    configured = [a.upper() for a in assets]
    router = APIRouter(prefix="/api/v1", tags=["reference prices"])

    @router.get(
        "/reference-prices",
        dependencies=[requires("market:read")],
        response_model=ReferencePricesResponse,
        responses={400: {"model": Problem, "content": {"application/problem+json": {}}}},
        summary="Cached prices of the configured reference assets (COINGECKO_ASSETS).",
    )
    async def reference_prices(
        response: Response,
        assets: Annotated[
            str | None,
            Query(description="Comma-separated assets; default every configured one.",
                  max_length=2000),
        ] = None,
    ) -> ReferencePricesResponse:  # fmt: skip
        wanted = configured
        if assets is not None:
            wanted = [a.strip().upper() for a in assets.split(",") if a.strip()]
            unknown = [a for a in wanted if a not in configured]
            if unknown or not wanted:
                raise InvalidParameter(
                    f"not a configured reference asset: {', '.join(unknown) or '(none)'}; "
                    f"configured: {', '.join(configured)}",
                    field="assets",
                    code="unknown-asset",
                )
        prices: list[ReferencePriceOut] = []
        missing: list[str] = []
        for asset in dict.fromkeys(wanted):
            cached = await read(asset)
            if cached is None:
                missing.append(asset)
                continue
            p = cached.price
            # Stale: not fetched for a while (the source fails), however old the
            # source's own update time was when it was fetched.
            since_fetch = cached.age_ms - max(0, p.fetched_at - p.as_of)
            prices.append(
                ReferencePriceOut(
                    asset=p.asset, coin_id=p.coin_id, vs_currency=p.vs_currency,
                    price=str(p.price), as_of=to_iso(p.as_of),
                    age_seconds=round(cached.age_ms / 1000, 3),
                    stale=since_fetch > stale_after_ms, source=p.source,
                )
            )  # fmt: skip
        if prices:
            # Whole seconds of the oldest price, as the market routes say it.
            response.headers[AGE_HEADER] = str(max(int(p.age_seconds) for p in prices))
        response.headers[STALE_HEADER] = "true" if any(p.stale for p in prices) else "false"
        return ReferencePricesResponse(prices=prices, missing=missing)

    return router
