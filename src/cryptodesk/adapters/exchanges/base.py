"""The market-data source interface: the simulator, replay files and ccxt implement it.

Method names follow ccxt's ``watch_*`` family so the ccxt adapter is a thin
mapping. Iterators run until cancelled or until ``close`` is called.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Protocol

from cryptodesk.domain.market import Market, OrderBook, Trade


class UnknownExchangeError(ValueError):
    """No exchange has this id; the message names it."""


class UnknownSymbolError(ValueError):
    """The exchange does not list this symbol; the message names both."""


class MarketDataSource(Protocol):
    @property
    def exchange(self) -> str:
        """The exchange id used in every event (``sim``, ``binance``...)."""
        ...

    async def load_markets(self) -> list[Market]: ...

    def watch_trades(self, symbol: str) -> AsyncIterator[list[Trade]]:
        """Batches of new trades for ``symbol``, in exchange order."""
        ...

    def watch_order_book(self, symbol: str) -> AsyncIterator[OrderBook]:
        """Successive L2 snapshots of ``symbol``'s book."""
        ...

    async def close(self) -> None: ...
