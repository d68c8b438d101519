"""The matching engine against two reference books on one seeded order flow.

The flow (``benchmarks.order_flow``: ~60% passive limits near the touch, ~30%
cancels of resting orders, ~10% marketable orders) has 1,000,000 operations on
one market and is generated once, before any clock starts. Every book sees the
same operations in the same order:

- ``pyorderbook`` (pure Python): ticks become prices in cents (``ticks / 100``; it
  stores ``Decimal``); a market order becomes a limit at the last price level it
  reaches (the flow sizes market orders so they always fill completely); cancels
  take the ``Order`` object, kept in a dict by id.
- ``liquibook`` (C++ behind SWIG): its plain ``OrderBook`` with no listeners, so
  callbacks are never delivered to Python; a market order is price 0; cancels take
  the ``SimpleOrder``, kept in a dict by id (the book holds raw pointers to them).
- ``cryptodesk.trading.matching.MatchingEngine``: events are taken every 1,000
  operations, as a consumer would. Orders go in as account ``buyer`` or
  ``seller`` by side, so self-trade prevention never changes the outcome.

After each run the final book is checked against the generator's reference book
(resting orders and quantity per side); a run whose book differs raises.

Cases: ``pyorderbook_1m``, ``liquibook_1m``, ``engine_1m`` (operations/s);
``engine_vs_fastest_reference`` (all three on the flow in one run, side by side:
the faster reference's seconds / the engine's); ``engine_latency`` (p99 µs of
each call, timed with ``perf_counter_ns``, garbage collector on at CPython's default
thresholds: more frequent collections than ``cryptodesk serve``'s ``tune_gc``);
``engine_memory_100k`` (MB the engine holds for 100,000 resting orders, measured
in a fresh child process); ``driver_floor_1m`` (the driver loop over a book that
does nothing: the floor under every Python-driven case, and what is left per
operation for a book to run at 3x liquibook). The full path (pre-trade risk + OMS in front of the
engine) plugs in through ``run_engine``: see ``cases()``.

    python -m benchmarks.bench_matching
"""

from __future__ import annotations

import gc
import json
import subprocess
import sys
import time
import tracemalloc
from collections.abc import Callable, Iterable
from functools import cache
from pathlib import Path
from typing import Any, Protocol

from benchmarks.order_flow import BUY, CANCEL, LIMIT, SELL, FlowGenerator, Op, resting_orders

N_OPS = 1_000_000
N_RESTING = 100_000
SEED = 1
EVENT_BATCH = 1_000  # operations between two take_events() calls
_CPYTHON_GC_THRESHOLDS = (700, 10, 10)  # the latency case runs at the stricter defaults
SYMBOL = "BTC/USDT"
ACCOUNTS = {BUY: "buyer", SELL: "seller"}  # a buy never meets a resting buy

Result = dict[str, Any]
# (resting orders, resting qty) per side: BUY first
BookState = tuple[tuple[int, int], tuple[int, int]]


class OrderEntry(Protocol):
    """What the flow needs from the engine, or from anything put in front of it."""

    def limit(self, oid: int, account: str, side: int, price: int, qty: int) -> None: ...
    def market(self, oid: int, account: str, side: int, qty: int) -> None: ...
    def cancel(self, oid: int) -> bool: ...
    def take_events(self) -> list[tuple[Any, ...]]: ...


@cache
def _flow() -> tuple[list[Op], BookState]:
    generator = FlowGenerator(SEED)
    ops = generator.generate(N_OPS)
    return ops, _state((o[0], o[2]) for o in generator.book.orders.values())


def _state(side_qty: Iterable[tuple[int, int]]) -> BookState:
    counts = {BUY: [0, 0], SELL: [0, 0]}
    for side, qty in side_qty:
        counts[side][0] += 1
        counts[side][1] += qty
    return (counts[BUY][0], counts[BUY][1]), (counts[SELL][0], counts[SELL][1])


def _check(name: str, got: BookState, want: BookState) -> None:
    if got != want:
        raise RuntimeError(f"{name} ended with book {got}, the reference with {want}")


# ---- drivers: each returns (seconds, final book, what holds the book) ------------


def run_pyorderbook(flow: list[Op]) -> tuple[float, BookState, Any]:
    from pyorderbook import Book, Order, Side  # type: ignore[import-untyped]

    book = Book()
    orders: dict[int, Any] = {}
    sides = {BUY: Side.BID, SELL: Side.ASK}
    match, cancel = book.match, book.cancel
    began = time.perf_counter()
    for op, oid, side, price, qty in flow:
        if op == CANCEL:
            cancel(orders.pop(oid))
        else:
            order = Order(sides[side], SYMBOL, price / 100, qty)
            match(order)
            if op == LIMIT:
                orders[oid] = order
    seconds = time.perf_counter() - began
    rest = book.order_map.values()
    state = _state((BUY if o.side == Side.BID else SELL, o.quantity) for o in rest)
    return seconds, state, (book, orders)


def run_liquibook(flow: list[Op], *, callbacks: bool = False) -> tuple[float, BookState, Any]:
    """liquibook on ``flow``; with ``callbacks`` an order listener receives its accept,
    fill and cancel notifications in Python (what our engine's events carry)."""
    import liquibook  # type: ignore[import-untyped]

    book = liquibook.liquibook_book_OrderBook()
    orders: dict[int, Any] = {}
    book.set_symbol(SYMBOL)
    if callbacks:
        sink: list[tuple[Any, ...]] = []

        def keep(event: tuple[Any, ...]) -> None:
            sink.append(event)
            if len(sink) >= EVENT_BATCH:  # taken by a consumer, as the engine's are
                sink.clear()

        class Listener(liquibook.OrderListener):  # type: ignore[misc]
            def on_accept(self, order: Any) -> None:
                keep(("accepted", order))

            def on_fill(self, passive: Any, aggressive: Any, qty: int, cost: int) -> None:
                keep(("trade", passive, aggressive, qty, cost))

            def on_cancel(self, order: Any) -> None:
                keep(("cancelled", order))

        listener = Listener()
        book.set_order_listener(listener)
        orders[-1] = listener  # kept alive as long as the book
    make, add, cancel = liquibook.SimpleOrder, book.add, book.cancel
    began = time.perf_counter()
    for op, oid, side, price, qty in flow:
        if op == CANCEL:
            cancel(orders.pop(oid))
        elif op == LIMIT:
            order = make(side == BUY, price, qty)
            orders[oid] = order  # the book keeps a raw pointer: the object must live
            add(order)
        else:
            add(make(side == BUY, 0, qty))  # price 0 is liquibook's market order
    seconds = time.perf_counter() - began
    # Without listeners liquibook never updates SimpleOrder fields; its trackers know.
    bids = [(BUY, t.open_qty()) for t in book.bids().values()]
    asks = [(SELL, t.open_qty()) for t in book.asks().values()]
    return seconds, _state(bids + asks), (book, orders)


def run_engine(
    flow: list[Op], entry: OrderEntry | None = None
) -> tuple[float, BookState, Any, int]:
    """Drive ``entry`` (default: a fresh ``MatchingEngine``); also returns the events."""
    if entry is None:
        from cryptodesk.trading.matching import MatchingEngine

        entry = MatchingEngine(SYMBOL)
    limit, market, cancel, take = entry.limit, entry.market, entry.cancel, entry.take_events
    buyer, seller = ACCOUNTS[BUY], ACCOUNTS[SELL]
    events = 0
    began = time.perf_counter()
    for start in range(0, len(flow), EVENT_BATCH):
        for op, oid, side, price, qty in flow[start : start + EVENT_BATCH]:
            if op == LIMIT:
                limit(oid, buyer if side == BUY else seller, side, price, qty)
            elif op == CANCEL:
                cancel(oid)
            else:
                market(oid, buyer if side == BUY else seller, side, qty)
        events += len(take())
    seconds = time.perf_counter() - began
    return seconds, _engine_state(entry), entry, events


def _engine_state(entry: Any) -> BookState:
    bids, asks = entry.l3()
    return _state([(BUY, o[2]) for o in bids] + [(SELL, o[2]) for o in asks])


# ---- cases -----------------------------------------------------------------------------

_last: dict[str, float] = {}  # seconds of the latest run of each book in this process


def _throughput(name: str, runner: Callable[[list[Op]], tuple[Any, ...]]) -> Result:
    flow, want = _flow()
    seconds, got, *_ = runner(flow)
    _check(name, got, want)
    _last[name] = seconds
    return {"value": len(flow) / seconds, "unit": "operations/s", "seconds": round(seconds, 3),
            "resting_at_end": got[0][0] + got[1][0]}  # fmt: skip


def pyorderbook_1m() -> Result:
    return _throughput("pyorderbook", run_pyorderbook)


def liquibook_1m() -> Result:
    return _throughput("liquibook", run_liquibook)


def liquibook_callbacks_1m() -> Result:
    """For context, not the target's reference: liquibook delivering its accept, fill
    and cancel callbacks to Python, as our engine delivers its events."""
    return _throughput("liquibook_callbacks", lambda flow: run_liquibook(flow, callbacks=True))


def engine_1m() -> Result:
    result = _throughput("engine", run_engine)
    refs = [_last[name] for name in ("pyorderbook", "liquibook") if name in _last]
    if refs:  # from this process's latest reference runs; the side-by-side case is exact
        result["x_fastest_reference"] = round(min(refs) / result["seconds"], 3)
    return result


class _NoBook:
    """An ``OrderEntry`` that does nothing: what the driver loop alone costs."""

    def limit(self, *args: Any) -> None:
        return None

    def market(self, *args: Any) -> None:
        return None

    def cancel(self, oid: int) -> bool:
        return True

    def take_events(self) -> list[Any]:
        return []

    def l3(self) -> tuple[list[Any], list[Any]]:
        return [], []


def driver_floor_1m() -> Result:
    """The same driver loop over a book that does nothing: the floor under every
    Python-driven case. ``engine_budget_ns`` is what is left per operation for a book
    to reach 3x liquibook's time from this process's latest liquibook run."""
    flow, _ = _flow()
    seconds, *_ = run_engine(flow, entry=_NoBook())  # the very loop every book runs in
    result: Result = {"value": len(flow) / seconds, "unit": "operations/s",
                      "ns_per_op": round(seconds / len(flow) * 1e9)}  # fmt: skip
    if "liquibook" in _last:
        budget = (_last["liquibook"] / 3 - seconds) / len(flow) * 1e9
        result["engine_budget_ns"] = round(budget)
    return result


def engine_vs_fastest_reference() -> Result:
    flow, want = _flow()
    seconds = {}
    for name, runner in (("pyorderbook", run_pyorderbook), ("liquibook", run_liquibook),
                         ("engine", run_engine)):  # fmt: skip
        took, got, *_ = runner(flow)
        _check(name, got, want)
        seconds[name] = took
    fastest = min(("pyorderbook", "liquibook"), key=seconds.__getitem__)
    return {"value": seconds[fastest] / seconds["engine"], "unit": "x", "reference": fastest,
            **{f"{k}_ops_s": round(len(flow) / v) for k, v in seconds.items()}}  # fmt: skip


def engine_latency() -> Result:
    from cryptodesk.trading.matching import MatchingEngine

    flow, want = _flow()
    engine = MatchingEngine(SYMBOL)
    limit, market, cancel, take = engine.limit, engine.market, engine.cancel, engine.take_events
    buyer, seller = ACCOUNTS[BUY], ACCOUNTS[SELL]
    clock = time.perf_counter_ns
    lat = [0] * len(flow)
    i = 0
    thresholds = gc.get_threshold()
    gc.set_threshold(*_CPYTHON_GC_THRESHOLDS)  # whatever ran before in this process
    collections = sum(g["collections"] for g in gc.get_stats())
    for start in range(0, len(flow), EVENT_BATCH):
        for op, oid, side, price, qty in flow[start : start + EVENT_BATCH]:
            if op == LIMIT:
                t = clock()
                limit(oid, buyer if side == BUY else seller, side, price, qty)
            elif op == CANCEL:
                t = clock()
                cancel(oid)
            else:
                t = clock()
                market(oid, buyer if side == BUY else seller, side, qty)
            lat[i] = clock() - t
            i += 1
        take()
    collections = sum(g["collections"] for g in gc.get_stats()) - collections
    gc.set_threshold(*thresholds)
    _check("engine", _engine_state(engine), want)
    overhead = min(-clock() + clock() for _ in range(1000))
    lat.sort()

    def pct(q: float) -> float:
        return round(lat[min(len(lat) - 1, int(q * len(lat)))] / 1000, 2)

    return {"value": pct(0.99), "unit": "µs p99", "p50_us": pct(0.5), "p99_us": pct(0.99),
            "p99_9_us": pct(0.999), "max_us": round(lat[-1] / 1000, 1),
            "timer_overhead_ns": overhead, "gc": "enabled, CPython's default thresholds",
            "gc_collections": collections}  # fmt: skip


# ---- memory: measured in a fresh process, so nothing else is on the heap ---------------


def _rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def _hold(book: str, ops: list[Op]) -> Any:
    if book == "engine":
        from cryptodesk.trading.matching import MatchingEngine

        engine = MatchingEngine(SYMBOL)
        for start in range(0, len(ops), EVENT_BATCH):
            for _, oid, side, price, qty in ops[start : start + EVENT_BATCH]:
                engine.limit(oid, ACCOUNTS[side], side, price, qty)
            engine.take_events()
        return engine
    if book == "pyorderbook":
        return run_pyorderbook(ops)[2]
    return run_liquibook(ops)[2]


def _memory_child(book: str, how: str) -> None:
    if book == "pyorderbook":
        import pyorderbook  # noqa: F401
    elif book == "liquibook":
        import liquibook  # noqa: F401
    else:
        import cryptodesk.trading.matching  # noqa: F401
    ops = resting_orders(N_RESTING, seed=SEED)
    gc.collect()
    if how == "tracemalloc":
        tracemalloc.start()
        held = _hold(book, ops)
        gc.collect()
        mb = tracemalloc.get_traced_memory()[0] / 2**20
    else:
        before = _rss_mb()
        held = _hold(book, ops)
        gc.collect()
        mb = _rss_mb() - before
    assert held is not None
    print(json.dumps({"mb": mb}))


def _memory(book: str, how: str) -> float:
    out = subprocess.run(
        [sys.executable, "-m", "benchmarks.bench_matching", "--memory", book, how],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    return float(json.loads(out.stdout.strip().splitlines()[-1])["mb"])


@cache
def _reference_memory() -> dict[str, float]:
    return {
        "pyorderbook_tracemalloc_mb": round(_memory("pyorderbook", "tracemalloc"), 1),
        "pyorderbook_rss_mb": round(_memory("pyorderbook", "rss"), 1),
        # tracemalloc sees only the Python wrappers; the C++ book shows in RSS
        "liquibook_rss_mb": round(_memory("liquibook", "rss"), 1),
    }


def engine_memory_100k() -> Result:
    return {"value": round(_memory("engine", "tracemalloc"), 2), "unit": "MB (tracemalloc)",
            "engine_rss_mb": round(_memory("engine", "rss"), 1),
            **_reference_memory()}  # fmt: skip


def cases() -> dict[str, Callable[[], Result]]:
    # The full path (pre-trade risk + OMS in front of the engine) is one more case
    # here: build the front end over a MatchingEngine, then time
    # ``run_engine(_flow()[0], entry=front_end)``; it must offer ``OrderEntry`` and
    # ``l3()`` (the final book check).
    return {
        "pyorderbook_1m": pyorderbook_1m,
        "liquibook_1m": liquibook_1m,
        "liquibook_callbacks_1m": liquibook_callbacks_1m,
        "engine_1m": engine_1m,
        "engine_vs_fastest_reference": engine_vs_fastest_reference,
        "engine_latency": engine_latency,
        "engine_memory_100k": engine_memory_100k,
        "driver_floor_1m": driver_floor_1m,
    }


if __name__ == "__main__":
    if sys.argv[1:2] == ["--memory"]:
        _memory_child(sys.argv[2], sys.argv[3])
    else:
        for name, fn in cases().items():
            print(name, fn(), flush=True)
