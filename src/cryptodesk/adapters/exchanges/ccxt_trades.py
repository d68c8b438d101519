"""Trade bookkeeping of a ccxt source: which trades were handed out, and the
order trades of one millisecond keep."""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable

from cryptodesk.domain.market import Trade


class TradeTape:
    """What was handed out for one symbol: the newest ``capacity`` trade ids, and
    the newest trade, where a backfill starts.

    A trade older than every id still remembered cannot be told apart from one
    already handed out, so it is dropped (sinks are idempotent anyway).
    """

    __slots__ = ("_capacity", "_floor", "_ids", "_order", "last_id", "last_ts")

    def __init__(self, capacity: int) -> None:
        self._capacity = capacity
        self._ids: set[str] = set()
        self._order: deque[tuple[str, int]] = deque()
        self._floor = 0
        self.last_ts: int | None = None
        self.last_id: str | None = None

    def admit(self, trades: Iterable[Trade]) -> list[Trade]:
        fresh: list[Trade] = []
        ids, order = self._ids, self._order
        for t in trades:
            if t.id in ids or t.ts < self._floor:
                continue
            ids.add(t.id)
            order.append((t.id, t.ts))
            fresh.append(t)
            if self.last_ts is None or t.ts >= self.last_ts:
                self.last_ts, self.last_id = t.ts, t.id
        while len(order) > self._capacity:
            old_id, old_ts = order.popleft()
            ids.discard(old_id)
            self._floor = max(self._floor, old_ts)
        return fresh


def by_time(trade: Trade) -> tuple[int, int]:
    return trade.ts, 0


def by_time_then_id(trade: Trade) -> tuple[int, int]:
    return trade.ts, int(trade.id) if trade.id.isdigit() else -1
