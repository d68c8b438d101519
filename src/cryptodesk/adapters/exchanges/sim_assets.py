"""The simulated exchange's coins: realistic prices, volatilities, market betas,
trade rates and book depth, and the markets (increments, minimums) built from them.

The figures are round, recent-history values for the majors on large spot venues;
they only need to be plausible, and changing them changes the simulated stream.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

from cryptodesk.domain.market import Market
from cryptodesk.domain.symbol import Symbol

_MIN_NOTIONAL_USD = 5.0  # Binance's spot minimum


@dataclass(frozen=True, slots=True)
class AssetProfile:
    """How one base currency behaves, in USD terms."""

    usd_price: float
    annual_vol: float  # calm-regime diffusive vol
    beta: float  # loading on the market factor (correlation = beta_i * beta_j)
    trades_per_second: float
    level_notional_usd: float  # typical size resting at one book level


ASSETS: Mapping[str, AssetProfile] = {
    "BTC": AssetProfile(67_000.0, 0.55, 0.95, 8.0, 150_000.0),
    "ETH": AssetProfile(3_500.0, 0.70, 0.84, 6.0, 80_000.0),
    "SOL": AssetProfile(150.0, 0.95, 0.74, 4.0, 40_000.0),
    "BNB": AssetProfile(580.0, 0.60, 0.70, 2.0, 30_000.0),
    "XRP": AssetProfile(0.52, 0.85, 0.65, 3.0, 25_000.0),
    "ADA": AssetProfile(0.45, 0.90, 0.68, 1.5, 15_000.0),
    "DOGE": AssetProfile(0.15, 1.00, 0.62, 2.5, 20_000.0),
    "USDC": AssetProfile(1.0, 0.01, 0.0, 2.0, 200_000.0),
}
# An unknown coin: a dollar, alt-coin vol, loosely tied to the market.
DEFAULT_ASSET = AssetProfile(1.0, 0.90, 0.60, 1.0, 10_000.0)
# Quote currencies in USD; an unknown quote is taken as a dollar stablecoin.
QUOTE_USD: Mapping[str, float] = {
    "USDT": 1.0, "USD": 1.0, "USDC": 1.0, "FDUSD": 1.0, "DAI": 1.0, "TUSD": 1.0,
    "EUR": 1.08, "GBP": 1.27, "BTC": 67_000.0, "ETH": 3_500.0,
}  # fmt: skip


def _decimals(price: float, significant: int) -> int:
    """Decimal places giving ``significant`` digits for ``price``."""
    return significant - 1 - math.floor(math.log10(price))


def market_for(symbol: str, *, exchange: str = "sim") -> Market:
    """The simulated market of ``symbol`` with its power-of-ten increments."""
    sym = Symbol.parse(symbol)
    price = start_price(str(sym))
    price_dec = max(_decimals(price, 6), 2)  # cents for prices of 1000 and above
    usd = ASSETS.get(sym.base, DEFAULT_ASSET).usd_price
    amount_dec = max(math.ceil(math.log10(usd)), 0)  # one increment is worth at most ~$1
    quote_usd = QUOTE_USD.get(sym.quote, 1.0)
    return Market(
        exchange=exchange,
        symbol=str(sym),
        base=sym.base,
        quote=sym.quote,
        price_increment=10.0**-price_dec,
        amount_increment=10.0**-amount_dec,
        min_amount=10.0**-amount_dec,
        min_notional=_MIN_NOTIONAL_USD / quote_usd,
    )


def start_price(symbol: str) -> float:
    """The opening mid: the base's USD price over the quote's (ETH/BTC ~ 0.052)."""
    sym = Symbol.parse(symbol)
    return ASSETS.get(sym.base, DEFAULT_ASSET).usd_price / QUOTE_USD.get(sym.quote, 1.0)
