"""Daily closes of several assets from the stored candles, aligned for risk analytics.

Each asset's series is the candles (``interval``, ``1d`` by default) of
``ASSET/Q`` for each quote ``Q`` of the currency then its par quotes, on each
configured exchange in order, as ``ClosePrices`` orders them: the first market
with candles in the window is the asset's series. The window is the ``days``
periods before the one in progress, aligned on their open times. Before an
asset's first candle its price is NaN (it was not listed yet); a missing period
after that takes the previous close (forward-filled) and is counted, so a report
can say so. An asset with no candles in the window is excluded, with the reason.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from cryptodesk.adapters.db.base import MarketStore
from cryptodesk.domain.errors import DomainError
from cryptodesk.domain.interval import Interval
from cryptodesk.domain.timeutil import now_ms, to_iso

FloatArray = npt.NDArray[np.float64]


class InsufficientHistory(DomainError):
    """Nothing at all can be computed from the stored history (the API's 422)."""


@dataclass(frozen=True, slots=True)
class History:
    """Aligned closes: ``prices[t, i]`` of ``assets[i]`` at period open ``times[t]``."""

    times: npt.NDArray[np.int64]
    assets: tuple[str, ...]
    prices: FloatArray
    sources: dict[str, str]
    filled: dict[str, int]
    excluded: list[dict[str, str]]
    end: int  # open time of the period in progress: the last row's close

    def common_returns(self) -> FloatArray:
        """Simple returns over the rows where every asset has a price."""
        rows = np.flatnonzero(~np.isnan(self.prices).any(axis=1))
        if len(rows) < 2:
            raise InsufficientHistory("the assets have fewer than two common closes", field="days")
        m = self.prices[rows[0] :]
        returns: FloatArray = m[1:] / m[:-1] - 1.0
        return returns

    def summary(self) -> dict[str, Any]:
        return {
            a: {"source": self.sources[a], "forward_filled": self.filled[a],
                "first": to_iso(int(self.times[int(np.argmax(~np.isnan(self.prices[:, i])))]))}
            for i, a in enumerate(self.assets)
        }  # fmt: skip


class CloseHistory:
    """Aligned daily closes of assets priced in ``currency`` (or its ``par`` quotes)."""

    def __init__(
        self,
        store: MarketStore,
        *,
        exchanges: Sequence[str],
        currency: str,
        par: Sequence[str],
        interval: str = "1d",
        clock: Callable[[], int] = now_ms,
    ) -> None:
        self._store = store
        self._exchanges = list(exchanges)
        self.currency = currency
        self._par = tuple(par)
        self.interval = Interval.parse(interval)
        self._clock = clock

    async def closes(self, assets: Sequence[str], days: int) -> History:
        """The aligned closes of ``assets`` over the ``days`` periods before now."""
        ms = self.interval.ms
        end = self._clock() // ms * ms
        times = np.arange(end - days * ms, end, ms, dtype=np.int64)
        columns: list[FloatArray] = []
        kept: list[str] = []
        sources: dict[str, str] = {}
        filled: dict[str, int] = {}
        excluded: list[dict[str, str]] = []
        for asset in assets:
            found = await self._series(asset, int(times[0]), end, days)
            if found is None:
                excluded.append({"asset": asset, "reason": "no stored candles in the window"})
                continue
            source, closes = found
            column = np.full(days, np.nan)
            index = ((np.array(list(closes)) - times[0]) // ms).astype(np.intp)
            column[index] = list(closes.values())
            first = int(index.min())
            gaps = np.flatnonzero(np.isnan(column[first:])) + first
            for i in gaps:  # forward fill from the previous close
                column[i] = column[i - 1]
            columns.append(column)
            kept.append(asset)
            sources[asset], filled[asset] = source, len(gaps)
        prices = np.column_stack(columns) if columns else np.empty((days, 0))
        return History(times, tuple(kept), prices, sources, filled, excluded, end)

    async def _series(
        self, asset: str, start: int, end: int, days: int
    ) -> tuple[str, dict[int, float]] | None:
        for quote in (self.currency, *self._par):
            if quote == asset:
                continue
            symbol = f"{asset}/{quote}"
            for ex in self._exchanges:
                candles = await self._store.get_candles(
                    ex, symbol, self.interval.name, start=start, end=end, limit=days
                )
                if candles:
                    closes = {c.open_time: c.close for c in candles}
                    return f"candle:{ex}:{symbol}:{self.interval.name}", closes
        return None
