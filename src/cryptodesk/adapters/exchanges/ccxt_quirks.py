"""What differs between exchanges behind ccxt's unified API, kept in one table
per concern so adding an exchange touches this file (and its fake) only."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class TradeRest:
    """How one exchange's REST trades line up with its websocket trades."""

    params: dict[str, Any] = field(default_factory=dict)
    since: bool = True  # the endpoint filters by time; otherwise it serves the newest
    # Trade ids count up by one, and older trades can be paged by id with these
    # params (an API key is needed); a gap is then known exactly.
    by_id: dict[str, Any] | None = None


# binance: ccxt's default REST trades are aggregate trades, numbered apart from
# the websocket's ``trade`` stream; /api/v3/trades carries the same ids (newest
# 1000, no time filter), /api/v3/historicalTrades pages older ones by id.
TRADE_REST = {
    "binance": TradeRest(
        {"fetchTradesMethod": "publicGetTrades"},
        since=False,
        by_id={"fetchTradesMethod": "publicGetHistoricalTrades"},
    ),
}
# binance: spot markets only (our symbols are spot; the futures endpoints cost
# weight and time), and neither the currency list nor the margin pairs, which
# ccxt fetches from signed endpoints whenever an API key is configured.
OPTIONS: dict[str, dict[str, Any]] = {
    "binance": {
        "fetchMarkets": {"types": ["spot"]},
        "fetchCurrencies": False,
        "fetchMargins": False,
    },
}


def rebase(urls: Any, bases: dict[str, str]) -> Any:
    """Every URL in ccxt's nested ``urls['api']`` with scheme and host replaced:
    ``ws``/``wss`` by ``bases['ws']``, ``http``/``https`` by ``bases['http']``."""
    if isinstance(urls, dict):
        return {key: rebase(value, bases) for key, value in urls.items()}
    if isinstance(urls, str) and "://" in urls:
        scheme, rest = urls.split("://", 1)
        base = bases.get("ws" if scheme.startswith("ws") else "http")
        if base is not None:
            path = rest.partition("/")[2]
            return f"{base.rstrip('/')}/{path}" if path else base.rstrip("/")
    return urls
