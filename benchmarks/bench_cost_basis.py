"""Cost basis over 1,000,000 generated ledger entries: FIFO, HIFO and UK pooling.

The ledger comes from ``benchmarks.ledger_gen`` (buys, sells, crypto-to-crypto
trades, transfers with network fees, income, deposits, withdrawals, spends,
fees and a few reversals over four assets and four accounts; about five years
of history). It is generated once, before any clock starts. Each case times
``cost_basis.compute`` end to end: reversals applied, sorting, ``to_events``,
the matching and the result (disposal lines, open lots, holdings).

Cases ``fifo_1m``, ``hifo_1m`` and ``uk_1m``: value = ledger entries per
second (wall clock); extra: seconds, CPU seconds of the process (lower than
wall seconds when the machine is shared), disposal lines, missing
acquisitions and open lots.

    python -m benchmarks.bench_cost_basis
"""

from __future__ import annotations

import time
from collections.abc import Callable
from functools import cache
from typing import Any

from benchmarks.ledger_gen import generate
from cryptodesk.portfolio.cost_basis import compute
from cryptodesk.portfolio.ledger import LedgerEntry

N_ENTRIES = 1_000_000
SEED = 1

Result = dict[str, Any]


@cache
def _ledger() -> list[LedgerEntry]:
    return generate(N_ENTRIES, seed=SEED)


def _run(method: str) -> Result:
    entries = _ledger()
    wall, cpu = time.perf_counter(), time.process_time()
    result = compute(entries, method=method)
    seconds = time.perf_counter() - wall
    cpu_seconds = time.process_time() - cpu
    return {
        "value": len(entries) / seconds,
        "unit": "transactions/s",
        "seconds": round(seconds, 3),
        "cpu_seconds": round(cpu_seconds, 3),
        "lines": len(result.disposals),
        "missing": len(result.missing_acquisitions),
        "open_lots": len(result.lots),
    }


def cases() -> dict[str, Callable[[], Result]]:
    return {
        "fifo_1m": lambda: _run("fifo"),
        "hifo_1m": lambda: _run("hifo"),
        "uk_1m": lambda: _run("uk"),
    }


if __name__ == "__main__":
    for name, fn in cases().items():
        print(name, fn())
