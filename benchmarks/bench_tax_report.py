"""A tax report for 100,000 ledger entries, end to end from a CSV file.

The ledger is ``benchmarks.ledger_gen``'s (generated once, written in the
generic CSV format before the clock starts). Each case times what
``cryptodesk tax report --ledger FILE --method M --format F`` does: read and
validate the file (``read_ledger``), run the cost basis, build the report and
render it. Value = seconds (lower is better); extra: disposal lines, bytes.

    python -m benchmarks.bench_tax_report
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Callable
from functools import cache
from pathlib import Path
from typing import Any

from benchmarks.ledger_gen import generate
from cryptodesk.adapters.files.ledger_csv import read_ledger, write_ledger_csv
from cryptodesk.services.tax_reports import TaxReportOptions, render_tax_report

N_ENTRIES = 100_000
Result = dict[str, Any]


@cache
def _file() -> Path:
    path = Path(tempfile.mkdtemp(prefix="cryptodesk-bench-")) / "ledger.csv"
    write_ledger_csv(generate(N_ENTRIES, seed=2), path)
    return path


def _run(method: str, fmt: str) -> Result:
    path = _file()
    started = time.perf_counter()
    entries = read_ledger(path)
    read = time.perf_counter() - started
    body = render_tax_report(entries, TaxReportOptions(method=method, format=fmt))
    seconds = time.perf_counter() - started
    return {
        "value": seconds,
        "unit": "s",
        "read_seconds": round(read, 3),
        "bytes": len(body.encode() if isinstance(body, str) else body),
    }


def cases() -> dict[str, Callable[[], Result]]:
    return {
        "fifo_json_100k": lambda: _run("fifo", "json"),
        "fifo_csv_100k": lambda: _run("fifo", "csv"),
        "uk_json_100k": lambda: _run("uk", "json"),
    }


if __name__ == "__main__":
    for name, fn in cases().items():
        print(name, fn())
