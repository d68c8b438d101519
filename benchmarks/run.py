"""Run every benchmark several times; write benchmarks/results/*.json and BENCHMARKS.md.

Each ``benchmarks/bench_*.py`` module exposes ``cases()`` -> {name: callable};
a callable performs one measurement and returns at least ``value`` and ``unit``.
We report the median and the spread (min..max) of ``--repeat`` runs.

    python -m benchmarks.run [--repeat 5] [--only NAME_SUBSTRING]
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"
MODULES = [
    "bench_candle_builder",
    "bench_simulator",
    "bench_bus",
    "bench_store",
    "bench_pipeline",
    "bench_engines",
    "bench_ccxt",
    "bench_indicators",
    "bench_backtest",
    "bench_cost_basis",
    "bench_tax_report",
    "bench_risk",
    "bench_api",
    "bench_ws",
    "bench_matching",
    "bench_full_path",
]
# Indicators measured against TA-Lib (vwap has no TA-Lib twin).
_TALIB_TWINS = (
    "sma", "ema", "wma", "rsi", "macd", "bbands", "atr", "stoch", "obv", "adx", "cci", "mfi",
)  # fmt: skip
# Targets named in the issues: (case name, comparison, value).
TARGETS: dict[str, str] = {
    "candle_builder/1_symbol_1_interval": ">= 1,000,000 trades/s",
    "candle_builder/3_symbols_6_intervals": ">= 300,000 trades/s",
    "pipeline/sim_to_sqlite": ">= 50,000 trades/s",
    **{f"indicators/vectorised/{name}": "<= 3x talib" for name in _TALIB_TWINS},
    "indicators/streaming/full_set": ">= 100,000 candles/s",
    "backtest/ma_cross_vs_backtesting_py": ">= 2x faster, same trades",
    "cost_basis/fifo_1m": ">= 300,000 transactions/s",
    "api/tickers_vs_bare_fastapi": ">= 0.8x bare FastAPI, p99 < 15 ms at 64 connections",
    "ws/10k_clients_rss": "<= 512 MB peak RSS with 10,000 clients",
    "risk/report_100x1000": "< 200 ms (without Monte Carlo)",
    "risk/monte_carlo_100k_x100": "< 2,000 ms",
    "matching/engine_1m": ">= 1,000,000 operations/s",
    "full_path/full_path_1m": ">= 300,000 operations/s",
    "matching/engine_latency": "p99 < 20 µs",
    "matching/engine_vs_fastest_reference": ">= 3x",
}
TARGET_VALUES = {
    "candle_builder/1_symbol_1_interval": 1_000_000.0,
    "candle_builder/3_symbols_6_intervals": 300_000.0,
    "pipeline/sim_to_sqlite": 50_000.0,
    **{f"indicators/vectorised/{name}": 3.0 for name in _TALIB_TWINS},
    "indicators/streaming/full_set": 100_000.0,
    "backtest/ma_cross_vs_backtesting_py": 2.0,
    "cost_basis/fifo_1m": 300_000.0,
    "api/tickers_vs_bare_fastapi": 0.8,
    "ws/10k_clients_rss": 512.0,
    "risk/report_100x1000": 200.0,
    "risk/monte_carlo_100k_x100": 2000.0,
    "matching/engine_1m": 1_000_000.0,
    "full_path/full_path_1m": 300_000.0,
    "matching/engine_latency": 20.0,
    "matching/engine_vs_fastest_reference": 3.0,
}
# Targets met when the median is at most the value (time ratios), not at least.
LOWER_IS_BETTER = {name for name in TARGET_VALUES if name.startswith("indicators/vectorised/")} | {
    "ws/10k_clients_rss",
    "risk/report_100x1000",
    "risk/monte_carlo_100k_x100",
    "matching/engine_latency",
}


def machine() -> dict[str, Any]:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "python": platform.python_version(),
        "os": f"{platform.system()} {platform.release()}",
    }


def run_case(fn: Callable[[], dict[str, Any]], repeat: int) -> dict[str, Any]:
    fn()  # warm-up: imports, allocator, caches
    runs = [fn() for _ in range(repeat)]
    values = [float(r["value"]) for r in runs]
    extra = {k: v for k, v in runs[-1].items() if k not in ("value", "unit")}
    return {
        "unit": runs[0]["unit"],
        "median": statistics.median(values),
        "min": min(values),
        "max": max(values),
        "runs": values,
        "extra": extra,
    }


def fmt(value: float) -> str:
    return f"{value:,.0f}" if value >= 100 else f"{value:,.3g}"


def write_markdown(results: dict[str, dict[str, Any]], info: dict[str, Any]) -> None:
    lines = [
        "# Benchmarks",
        "",
        "Produced by `make bench` (`python -m benchmarks.run`); do not edit by hand.",
        f"Machine: {info['cpu']}, {info['cores']} cores, Python {info['python']}, {info['os']}.",
        "Each row: median of its runs (after one warm-up), spread = min..max.",
        "",
        "| benchmark | command | median | spread | runs | unit | target | met | notes |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for name, r in results.items():
        target = TARGETS.get(name, "")
        met = ""
        if name in TARGET_VALUES:
            goal = TARGET_VALUES[name]
            ok = r["median"] <= goal if name in LOWER_IS_BETTER else r["median"] >= goal
            met = "yes" if ok else "NO"
        notes = ", ".join(
            f"{k}={fmt(v) if isinstance(v, float) else v}" for k, v in r["extra"].items()
        )
        module = name.split("/")[0]
        cmd = f"`python -m benchmarks.run --only {module}`"
        lines.append(
            f"| {name} | {cmd} | {fmt(r['median'])} | {fmt(r['min'])}..{fmt(r['max'])} "
            f"| {len(r['runs'])} | {r['unit']} | {target} | {met} | {notes} |"
        )
    lines.append("")
    lines.append(f"Generated {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}.")
    (ROOT / "BENCHMARKS.md").write_text("\n".join(lines) + "\n")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--only", default="")
    args = parser.parse_args(argv)
    info = machine()
    RESULTS.mkdir(parents=True, exist_ok=True)
    previous: dict[str, dict[str, Any]] = {}
    summary = RESULTS / "summary.json"
    if summary.exists():
        previous = json.loads(summary.read_text()).get("results", {})
    results: dict[str, dict[str, Any]] = dict(previous)
    for module_name in MODULES:
        module = importlib.import_module(f"benchmarks.{module_name}")
        for case, fn in module.cases().items():
            name = f"{module_name.removeprefix('bench_')}/{case}"
            if args.only and args.only.removeprefix("bench_") not in name:
                continue
            print(f"running {name} ...", file=sys.stderr, flush=True)
            results[name] = run_case(fn, args.repeat)
            r = results[name]
            print(f"  {name}: median {fmt(r['median'])} {r['unit']}", file=sys.stderr)
            (RESULTS / f"{name.replace('/', '__')}.json").write_text(
                json.dumps({"machine": info, "name": name, **r}, indent=2) + "\n"
            )
    summary.write_text(json.dumps({"machine": info, "results": results}, indent=2) + "\n")
    write_markdown(results, info)
    return 0


if __name__ == "__main__":
    sys.exit(main())
