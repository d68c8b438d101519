"""Reference price sources: prices of assets that no configured exchange lists.

A source answers in its own coin ids (CoinGecko's ``bitcoin``, not ``BTC``);
mapping the project's asset symbols to those ids is the service's job
(``services/reference_prices.py``). Prices are ``Decimal`` exactly as the
source wrote them, times integer epoch milliseconds (UTC).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Protocol

__all__ = [
    "ChartPoint",
    "CoinListing",
    "PriceSource",
    "SpotPrice",
    "SpotPrices",
    "UnknownCoinError",
]


class UnknownCoinError(LookupError):
    """The source has no coin with this id."""

    def __init__(self, source: str, coin_id: str) -> None:
        self.source = source
        self.coin_id = coin_id
        super().__init__(f"{source} has no coin with id {coin_id!r}")


@dataclass(frozen=True, slots=True)
class CoinListing:
    """One coin the source knows: its id, ticker symbol (lower case) and name."""

    id: str
    symbol: str
    name: str


@dataclass(frozen=True, slots=True)
class SpotPrice:
    """The source's latest price of ``coin_id`` in ``vs_currency``, as of ``as_of``."""

    coin_id: str
    vs_currency: str
    price: Decimal
    as_of: int  # epoch ms of the source's last update of this price


@dataclass(frozen=True, slots=True)
class SpotPrices:
    """One answer for several coins.

    ``missing`` were requested and absent from a well-formed answer (the source
    does not know the id, or has no price in that currency); ``malformed`` had
    an entry that could not be read and was skipped.
    """

    prices: dict[str, SpotPrice]
    missing: frozenset[str] = frozenset()
    malformed: frozenset[str] = frozenset()


@dataclass(frozen=True, slots=True)
class ChartPoint:
    """One point of a price chart; market cap and volume when the source gives them."""

    ts: int  # epoch ms
    price: Decimal
    market_cap: Decimal | None = None
    volume: Decimal | None = None


class PriceSource(Protocol):
    """What the reference price service needs from a source."""

    @property
    def source(self) -> str:
        """Short name stored with every price (``coingecko``)."""
        ...

    async def coins_list(self) -> list[CoinListing]: ...

    async def simple_price(self, coin_ids: Sequence[str], vs_currency: str) -> SpotPrices: ...

    async def daily_chart(self, coin_id: str, vs_currency: str, days: int) -> list[ChartPoint]:
        """Daily points of the last ``days`` days, oldest first, at 00:00 UTC;
        ``UnknownCoinError`` when the source has no such coin."""
        ...

    async def close(self) -> None: ...
