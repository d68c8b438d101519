"""``cryptodesk optimize`` (walk-forward) and ``cryptodesk compare`` (strategies side by side).

Both read ``--data`` and take the costs and sizing options as ``cryptodesk
backtest`` does. ``optimize`` writes ``report.json`` and ``trades.csv`` (the
out-of-sample trades) to ``--out`` (default ``./optimize-STRATEGY-TIME/``);
``compare`` writes ``report.json`` (default ``./compare-TIME/``). Each prints a
table. Bad input is one line ``cryptodesk: error: ...`` and exit code 2; a
strategy that raises prints its traceback and exits 1.
"""

from __future__ import annotations

import dataclasses
import re
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, NoReturn

import typer

from cryptodesk.cli_backtest import (
    BpsOpt,
    CashOpt,
    DataOpt,
    IntervalOpt,
    LotOpt,
    MakerOpt,
    ParamOpt,
    RateOpt,
    ShortOpt,
    SizeOpt,
    StopOpt,
    StrategyOpt,
    SymbolOpt,
    TakeOpt,
    VolumeOpt,
    backtest_config,
    fail,
    load_candles,
)
from cryptodesk.domain.errors import DomainError
from cryptodesk.domain.timeutil import to_iso

if TYPE_CHECKING:
    from cryptodesk.analytics.backtest import BacktestConfig
    from cryptodesk.analytics.compare import Comparison, Estimate
    from cryptodesk.analytics.strategy import Strategy
    from cryptodesk.analytics.walkforward import ParamGrid, WalkForwardResult


def register(app: typer.Typer) -> None:
    app.command("optimize")(optimize)
    app.command("compare")(compare)


def _opt(help: str) -> Any:
    return typer.Option(help=help)


GridOpt = Annotated[list[str], _opt("Values to search: NAME=START:STOP:STEP or NAME=A,B,C.")]
InOpt = Annotated[str, _opt("In-sample length: candles (2000) or a duration (90d, 12h, 4w).")]
OosOpt = Annotated[str, _opt("Out-of-sample length, in the same kind as --in-sample.")]
StepOpt = Annotated[str | None, _opt("Window step (default: the out-of-sample length).")]
AnchorOpt = Annotated[bool, _opt("Every in-sample window starts at the first candle.")]
WarmOpt = Annotated[int | None, _opt("Warm-up candles (default: the first in-sample length).")]
ObjOpt = Annotated[str, _opt("sharpe, sortino, calmar, total_return, cagr, profit_factor, ...")]
SpecsOpt = Annotated[list[str], _opt("NAME or NAME:PARAM=VALUE[:PARAM=VALUE] (repeatable).")]
ResOpt = Annotated[int, _opt("Bootstrap resamples.")]
ConfOpt = Annotated[float, _opt("Confidence level of the intervals.")]
SeedOpt = Annotated[int, _opt("Seed of the bootstrap's random generator.")]
BlockOpt = Annotated[float | None, _opt("Mean block length in candles (default n^(1/3)).")]
OutOpt = Annotated[Path | None, _opt("Report directory (default ./COMMAND-...-TIME).")]


def _config_dict(cfg: BacktestConfig) -> dict[str, Any]:
    return {**dataclasses.asdict(cfg), "sizing": str(cfg.sizing)}


def _clean(value: Any) -> Any:
    """NaN and infinities as null, for JSON."""
    if isinstance(value, float):
        return value if value == value and abs(value) != float("inf") else None
    if isinstance(value, dict):
        return {k: _clean(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_clean(v) for v in value]
    return value


def _pct(v: float, sign: str = "+") -> str:
    return f"{v * 100:{sign}.2f}%" if v == v else "n/a"


def _num(v: float) -> str:
    return f"{v:.2f}" if v == v and abs(v) != float("inf") else "n/a"


def _stamp() -> str:
    return time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())


def _write(target: Path, report: dict[str, Any], trades: list[Any] | None = None) -> None:
    from cryptodesk.analytics.backtest_report import write_json, write_trades_csv

    try:
        target.mkdir(parents=True, exist_ok=True)
        write_json(target / "report.json", _clean(report))
        if trades is not None:
            write_trades_csv(target / "trades.csv", trades)
    except OSError as exc:
        fail(f"--out {target}: {exc.strerror or exc}")


def _strategy_error(exc: Exception) -> NoReturn:
    from cryptodesk.analytics.backtest import BacktestError

    if isinstance(exc, BacktestError):
        typer.echo(exc.traceback.rstrip(), err=True)
        typer.echo(f"cryptodesk: error: {exc}", err=True)
        raise typer.Exit(1) from None
    fail(str(exc))


def _data(origin: dict[str, Any], ts: Any, interval_ms: int) -> dict[str, Any]:
    return {**origin, "candles": len(ts), "first_open": to_iso(int(ts[0])),
            "last_open": to_iso(int(ts[-1])), "interval_ms": interval_ms}  # fmt: skip


def _market(origin: dict[str, Any]) -> str:
    return " ".join(str(origin[k]) for k in ("exchange", "symbol", "interval") if origin.get(k))


def optimize(
    strategy: StrategyOpt,
    data: DataOpt,
    grid: GridOpt,
    in_sample: InOpt,
    out_of_sample: OosOpt,
    step: StepOpt = None,
    anchored: AnchorOpt = False,
    warmup: WarmOpt = None,
    objective: ObjOpt = "sharpe",
    param: ParamOpt = None,
    fee: RateOpt = 0.001,
    maker_fee: MakerOpt = None,
    slippage_bps: BpsOpt = 0.0,
    slippage_volume: VolumeOpt = 0.0,
    size: SizeOpt = "fraction:1.0",
    lot: LotOpt = 0.0,
    stop_loss: StopOpt = None,
    take_profit: TakeOpt = None,
    allow_short: ShortOpt = False,
    cash: CashOpt = 10_000.0,
    symbol: SymbolOpt = None,
    interval: IntervalOpt = None,
    out: OutOpt = None,
) -> None:
    """Walk-forward optimisation: grid search in sample, judged out of sample only."""
    from cryptodesk.analytics import walkforward as wf
    from cryptodesk.analytics.backtest import BacktestError, CandleArrays
    from cryptodesk.analytics.strategies import STRATEGIES, parse_param_items

    try:
        cls = STRATEGIES.get(strategy.strip().lower())
        if cls is None:
            raise DomainError(f"unknown strategy {strategy!r}; built-in: {', '.join(STRATEGIES)}")
        search = wf.ParamGrid.parse(cls, grid, parse_param_items(param or []))
        config = backtest_config(
            initial_cash=cash, fee=fee, maker_fee=maker_fee, slippage_bps=slippage_bps,
            slippage_volume=slippage_volume, size=size, lot=lot, stop_loss=stop_loss,
            take_profit=take_profit, allow_short=allow_short,
        )  # fmt: skip
        if objective not in wf.OBJECTIVES:
            raise DomainError(f"--objective {objective!r} is not one of {', '.join(wf.OBJECTIVES)}")
        is_len, timed = wf.parse_length(in_sample, "--in-sample")
        oos_len, oos_timed = wf.parse_length(out_of_sample, "--out-of-sample")
        step_len, step_timed = wf.parse_length(step, "--step") if step else (oos_len, oos_timed)
        if not timed == oos_timed == step_timed:
            raise DomainError(
                "give --in-sample, --out-of-sample and --step all as candle counts "
                "or all as durations"
            )
    except DomainError as exc:
        fail(str(exc))
    candles, iv, origin = load_candles(data, symbol, interval)
    arrays = CandleArrays.of(candles)
    try:
        if timed:
            windows = wf.time_windows(arrays.ts, in_sample_ms=is_len, out_of_sample_ms=oos_len,
                                      step_ms=step_len, anchored=anchored)  # fmt: skip
        else:
            windows = wf.count_windows(len(arrays.ts), in_sample=is_len, out_of_sample=oos_len,
                                       step=step_len, anchored=anchored)  # fmt: skip
        with _bar(f"walk-forward {cls.name}", "backtests") as progress:
            result = wf.walk_forward(
                arrays, search, windows, config, interval_ms=iv.ms, objective=objective,
                warmup=warmup, on_progress=progress,
            )  # fmt: skip
    except (BacktestError, DomainError) as exc:
        _strategy_error(exc)
    target = out or Path(f"optimize-{cls.name}-{_stamp()}")
    spec = {"in_sample": in_sample, "out_of_sample": out_of_sample,
            "step": step or out_of_sample, "anchored": anchored}  # fmt: skip
    report = optimize_report(result, search, _data(origin, arrays.ts, iv.ms), spec, arrays.ts)
    _write(target, report, result.trades)
    typer.echo(optimize_table(result, origin, arrays.ts, anchored=anchored))
    typer.echo(f"wrote report.json and trades.csv to {target}")


@contextmanager
def _bar(label: str, unit: str) -> Iterator[Callable[[int, int], None]]:
    """A progress bar on stderr when it is a terminal; yields the progress callback."""
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    console = Console(stderr=True)
    with Progress(
        TextColumn(label), BarColumn(), MofNCompleteColumn(), TextColumn(unit),
        TimeElapsedColumn(), console=console, disable=not console.is_terminal,
    ) as bar:  # fmt: skip
        task = bar.add_task(label, total=None)
        yield lambda done, total: bar.update(task, completed=done, total=total)


def optimize_report(
    r: WalkForwardResult, grid: ParamGrid, data: dict[str, Any], spec: dict[str, Any], ts_all: Any
) -> dict[str, Any]:
    """The walk-forward report as JSON-ready values (NaN is nulled when written)."""
    from cryptodesk.analytics.backtest_report import trade_dict

    def bounds(a: int, b: int) -> dict[str, Any]:
        return {"first_open": to_iso(int(ts_all[a])), "last_open": to_iso(int(ts_all[b - 1])),
                "candles": b - a}  # fmt: skip

    return {
        "strategy": {"name": r.strategy, "grid": {k: list(v) for k, v in grid.axes},
                     "fixed": grid.fixed},
        "objective": r.objective,
        "data": data,
        "windows_spec": {**spec, "warmup": r.warmup, "windows": len(r.windows)},
        "config": _config_dict(r.config),
        "combinations": r.combinations,
        "skipped_combinations": r.skipped,
        "out_of_sample": {
            "metrics": r.metrics.as_dict(),
            "trades": [trade_dict(t) for t in r.trades],
            "equity_curve": {"time": [to_iso(t) for t in r.ts.tolist()],
                             "equity": r.equity.tolist()},
        },
        "windows": [
            {
                "index": w.window.index,
                "in_sample": bounds(w.window.is_start, w.window.is_end),
                "out_of_sample": bounds(w.window.oos_start, w.window.oos_end),
                "params": w.params,
                "in_sample_metrics": w.in_sample.as_dict(),
                "out_of_sample_metrics": w.out_of_sample.metrics.as_dict(),
            }
            for w in r.windows
        ],
    }  # fmt: skip


def optimize_table(
    r: WalkForwardResult, origin: dict[str, Any], ts_all: Any, *, anchored: bool
) -> str:
    from cryptodesk.analytics.backtest import BacktestResult
    from cryptodesk.cli_backtest import summary

    kind = "anchored" if anchored else "rolling"
    lines = [
        f"{r.strategy} walk-forward on {_market(origin)}: {len(ts_all)} candles, "
        f"{len(r.windows)} windows ({kind}, warm-up {r.warmup} candles), "
        f"{r.combinations} parameter sets each ({r.skipped} refused), objective {r.objective}",
        f"{'#':>3}  {'out of sample from':<24}  {'to':<24}  {'params':<24}  "
        f"{'IS ' + r.objective:>14}  {'OOS return':>10}  {'OOS sharpe':>10}  {'trades':>6}",
    ]
    for w in r.windows:
        oos = w.out_of_sample
        params = " ".join(f"{k}={v}" for k, v in w.params.items())
        lines.append(
            f"{w.window.index:>3}  {to_iso(int(oos.ts[0])):<24}  {to_iso(int(oos.ts[-1])):<24}  "
            f"{params:<24}  {_num(getattr(w.in_sample, r.objective)):>14}  "
            f"{_pct(oos.metrics.total_return):>10}  {_num(oos.metrics.sharpe):>10}  "
            f"{oos.metrics.trades:>6}"
        )
    stitched = BacktestResult(r.strategy, {}, r.config, r.interval_ms, r.ts, r.equity,
                              r.trades, r.metrics)  # fmt: skip
    lines.append(
        f"out of sample, stitched (the headline): {len(r.ts)} candles, "
        f"{to_iso(int(r.ts[0]))} .. {to_iso(int(r.ts[-1]))}"
    )
    lines.extend(summary(stitched, origin).splitlines()[1:])
    return "\n".join(lines)


def parse_strategy_spec(text: str) -> Strategy:
    """``rsi_reversion:period=14:oversold=25`` (``,`` also separates parameters)."""
    from cryptodesk.analytics.strategies import build_strategy

    name, *items = re.split(r"[:,]", text.strip())
    params: dict[str, str] = {}
    for item in items:
        key, sep, value = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise DomainError(f"--strategy {text!r}: {item!r} is not PARAM=VALUE")
        if key in params:
            raise DomainError(f"--strategy {text!r}: {key} is given twice")
        params[key] = value.strip()
    return build_strategy(name, params)


def compare(
    data: DataOpt,
    strategy: SpecsOpt,
    resamples: ResOpt = 2000,
    confidence: ConfOpt = 0.95,
    seed: SeedOpt = 1,
    block: BlockOpt = None,
    fee: RateOpt = 0.001,
    maker_fee: MakerOpt = None,
    slippage_bps: BpsOpt = 0.0,
    slippage_volume: VolumeOpt = 0.0,
    size: SizeOpt = "fraction:1.0",
    lot: LotOpt = 0.0,
    stop_loss: StopOpt = None,
    take_profit: TakeOpt = None,
    allow_short: ShortOpt = False,
    cash: CashOpt = 10_000.0,
    symbol: SymbolOpt = None,
    interval: IntervalOpt = None,
    out: OutOpt = None,
) -> None:
    """Run strategies on identical candles; is the difference in returns significant?"""
    from cryptodesk.analytics.backtest import BacktestError, CandleArrays
    from cryptodesk.analytics.compare import compare_report, compare_strategies

    try:
        if len(strategy) < 2:
            raise DomainError("give two --strategy options at least")
        chosen = [(text.strip(), parse_strategy_spec(text)) for text in strategy]
        config = backtest_config(
            initial_cash=cash, fee=fee, maker_fee=maker_fee, slippage_bps=slippage_bps,
            slippage_volume=slippage_volume, size=size, lot=lot, stop_loss=stop_loss,
            take_profit=take_profit, allow_short=allow_short,
        )  # fmt: skip
        if not 0 < confidence < 1:
            raise DomainError(f"--confidence {confidence!r} is not in (0, 1)")
        if resamples < 10:
            raise DomainError(f"--resamples {resamples} is below 10")
    except DomainError as exc:
        fail(str(exc))
    candles, iv, origin = load_candles(data, symbol, interval)
    arrays = CandleArrays.of(candles)
    try:
        result = compare_strategies(
            arrays, chosen, config, interval_ms=iv.ms, resamples=resamples,
            confidence=confidence, seed=seed, mean_block=block,
        )  # fmt: skip
    except (BacktestError, DomainError) as exc:
        _strategy_error(exc)
    target = out or Path(f"compare-{_stamp()}")
    report = compare_report(result, data=_data(origin, arrays.ts, iv.ms))
    _write(target, {**report, "config": _config_dict(config)})
    typer.echo(compare_table(result, origin, arrays.ts))
    typer.echo(f"wrote report.json to {target}")


def compare_table(c: Comparison, origin: dict[str, Any], ts: Any) -> str:
    width = max(len("strategy"), *(len(x) for x in c.labels))
    lines = [
        f"compare on {_market(origin)}: {len(ts)} candles, {to_iso(int(ts[0]))} .. "
        f"{to_iso(int(ts[-1]))}, the same costs for each",
        f"{'strategy':<{width}}  {'total return':>12}  {'CAGR':>9}  {'Sharpe':>6}  "
        f"{'max drawdown':>12}  {'trades':>6}",
    ]
    for label, r in zip(c.labels, c.results, strict=True):
        m = r.metrics
        lines.append(
            f"{label:<{width}}  {_pct(m.total_return):>12}  {_pct(m.cagr):>9}  "
            f"{_num(m.sharpe):>6}  {_pct(m.max_drawdown, '-'):>12}  {m.trades:>6}"
        )
    lines.append(
        f"A - B with {c.confidence * 100:g}% intervals (stationary bootstrap, {c.resamples} "
        f"resamples, mean block {c.mean_block:g} candles, seed {c.seed}):"
    )

    def verdict(e: Estimate, pct: Callable[[float], str]) -> str:
        says = "significant" if e.significant else "not significant"
        return f"{pct(e.value)} [{pct(e.low)}, {pct(e.high)}] {says}"

    for p in c.pairs:
        lines.append(
            f"{p.a} - {p.b}: total return {verdict(p.total, _pct)}; mean per candle "
            f"{verdict(p.mean, lambda v: f'{v * 100:+.4f}%')}"
        )
    return "\n".join(lines)
