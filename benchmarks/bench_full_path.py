"""The full order path on the matching benchmark's flow: validation, pre-trade risk,
the order log and the order manager in front of the same matching engine.

The 1,000,000 operations of ``benchmarks.bench_matching`` (same seed, same order)
go in as ``OrderRequest`` decimals through ``OrderManager.submit`` / ``cancel``:
``Instrument.validate`` (tick 1, lot 1: the flow's integers are the prices and
quantities), ``PreTradeRisk.check`` with a balance reservation (both accounts hold
plenty; no size or rate limits, so no order is refused), the in-memory order log,
the engine, fills with fees, positions and balance settlement, and an update per
change. The final book is checked against the flow's reference book, as for the
engine alone. The garbage collector is tuned as ``cryptodesk serve`` tunes it
(``runtime.tune_gc``), since that is the process the order service runs in.

Case ``full_path_1m``: value = operations/s (wall clock).

    python -m benchmarks.bench_full_path
"""

from __future__ import annotations

import gc
from collections.abc import Callable
from decimal import Decimal
from typing import Any

from benchmarks.bench_matching import SYMBOL, _check, _flow, run_engine
from cryptodesk.domain.orders import OrderRequest
from cryptodesk.trading.balances import Balances
from cryptodesk.trading.instruments import Instrument
from cryptodesk.trading.matching import MatchingEngine
from cryptodesk.trading.oms import OrderManager
from cryptodesk.trading.order_log import MemoryOrderLog
from cryptodesk.trading.pretrade import PreTradeRisk, RiskLimits

Result = dict[str, Any]
_PLENTY = Decimal(10) ** 15


class FullPath:
    """``OrderEntry`` over an ``OrderManager``: the flow's integer ids, sides, prices
    and quantities become requests; the manager's updates are the events taken."""

    def __init__(self) -> None:
        instrument = Instrument(SYMBOL, "BTC", "USDT", tick_size=Decimal(1), lot_size=Decimal(1),
                                min_notional=Decimal(0))  # fmt: skip
        risk = PreTradeRisk(RiskLimits(), Balances(), halted=lambda symbol: False,
                            clock=lambda: 0)  # fmt: skip
        self.manager = OrderManager({SYMBOL: instrument}, risk, MemoryOrderLog(), clock=lambda: 0)
        for account in ("buyer", "seller"):
            for asset in ("BTC", "USDT"):
                self.manager.deposit(account, asset, _PLENTY)
        self._ids: dict[int, tuple[str, str]] = {}

    def limit(self, oid: int, account: str, side: int, price: int, qty: int) -> None:
        order = self.manager.submit(OrderRequest(
            account, SYMBOL, "buy" if side == 1 else "sell", "limit", Decimal(qty), Decimal(price),
        ))  # fmt: skip
        self._ids[oid] = (account, order.order_id)

    def market(self, oid: int, account: str, side: int, qty: int) -> None:
        self.manager.submit(OrderRequest(
            account, SYMBOL, "buy" if side == 1 else "sell", "market", Decimal(qty),
        ))  # fmt: skip

    def cancel(self, oid: int) -> bool:
        account, order_id = self._ids.pop(oid)
        self.manager.cancel(account, order_id)
        return True

    def take_events(self) -> list[Any]:
        return self.manager.take_updates()

    def l3(self) -> Any:
        engine: MatchingEngine = self.manager.book(SYMBOL)
        return engine.l3()


def full_path_1m() -> Result:
    from cryptodesk.runtime import tune_gc

    flow, want = _flow()
    tune_gc()  # as cryptodesk serve does before it starts the order service
    seconds, got, entry, updates = run_engine(flow, entry=FullPath())
    _check("full path", got, want)
    rejected = sum(1 for o in entry.manager.orders("buyer") if o.status == "rejected")
    return {"value": len(flow) / seconds, "unit": "operations/s", "seconds": round(seconds, 3),
            "updates": updates, "rejected": rejected,
            "gc_thresholds": "/".join(map(str, gc.get_threshold()))}  # fmt: skip


def cases() -> dict[str, Callable[[], Result]]:
    return {"full_path_1m": full_path_1m}


if __name__ == "__main__":
    for name, fn in cases().items():
        print(name, fn(), flush=True)
