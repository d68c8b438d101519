"""A backtest's report in three forms: JSON, a CSV of trades, and one HTML page.

The JSON holds everything (strategy, data, settings, fill rules, metrics,
trades, equity curve); times are ISO 8601 UTC and an undefined ratio (NaN) is
``null``. The HTML page is self-contained: its equity and drawdown charts are
inline SVG drawn here, with no script, font or stylesheet fetched from
anywhere, so it opens offline and can be mailed as one file.
"""

from __future__ import annotations

import csv
import html
import io
import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from cryptodesk.analytics.backtest import BacktestResult, BacktestTrade
from cryptodesk.analytics.backtest_metrics import drawdown
from cryptodesk.analytics.svg_charts import REPORT_STYLE, line_chart
from cryptodesk.domain.timeutil import to_iso

TRADE_COLUMNS = (
    "side", "qty", "entry_time", "entry_price", "exit_time", "exit_price",
    "fees", "pnl", "return", "exit_reason", "bars",
)  # fmt: skip
_HTML_TRADES = 1000


def _finite(value: float) -> float | None:
    return value if math.isfinite(value) else None


def rules(result: BacktestResult) -> list[str]:
    """The fill rules the numbers rest on, in words."""
    cfg = result.config
    maker = cfg.fee if cfg.maker_fee is None else cfg.maker_fee
    lines = [
        "decisions on a closed candle fill at the next candle's open (no look-ahead)",
        f"market orders pay the taker fee {cfg.fee:g}; take-profit limit orders the maker fee "
        f"{maker:g}",
        f"slippage: {cfg.slippage_bps:g} bps plus {cfg.slippage_volume:g} x order qty / candle "
        "volume, against the order, on market and stop orders",
        f"sizing {cfg.sizing}"
        + (f", quantities rounded down to lots of {cfg.lot:g}" if cfg.lot else ""),
        "long and short" if cfg.allow_short else "long only: a short signal closes the long",
        "stop-loss and take-profit are checked inside each candle's high/low; when both are "
        "reached in one candle the stop-loss is assumed first",
        "a position open at the end is closed at the last close",
        "annualised with 365 days; Sharpe and Sortino with a zero risk-free rate",
    ]
    return lines


def trade_dict(t: BacktestTrade) -> dict[str, Any]:
    return {
        "side": t.side,
        "qty": t.qty,
        "entry_time": to_iso(t.entry_ts),
        "entry_price": t.entry_price,
        "exit_time": to_iso(t.exit_ts),
        "exit_price": t.exit_price,
        "fees": t.fees,
        "pnl": t.pnl,
        "return": t.ret,
        "exit_reason": t.exit_reason,
        "bars": t.bars,
    }


def report_dict(result: BacktestResult, *, data: Mapping[str, Any]) -> dict[str, Any]:
    """The whole report as JSON-ready values; ``data`` describes the candles' origin."""
    cfg = result.config
    ts = result.ts.tolist()
    return {
        "strategy": {"name": result.strategy, "params": dict(result.params)},
        "data": {
            **data,
            "candles": len(ts),
            "first_open": to_iso(ts[0]),
            "last_open": to_iso(ts[-1]),
            "interval_ms": result.interval_ms,
        },
        "config": {
            "initial_cash": cfg.initial_cash,
            "fee": cfg.fee,
            "maker_fee": cfg.fee if cfg.maker_fee is None else cfg.maker_fee,
            "slippage_bps": cfg.slippage_bps,
            "slippage_volume": cfg.slippage_volume,
            "size": str(cfg.sizing),
            "lot": cfg.lot,
            "stop_loss": cfg.stop_loss,
            "take_profit": cfg.take_profit,
            "allow_short": cfg.allow_short,
        },
        "rules": rules(result),
        "metrics": {k: _finite(v) if isinstance(v, float) else v
                    for k, v in result.metrics.as_dict().items()},
        "trades": [trade_dict(t) for t in result.trades],
        "equity_curve": {"time": [to_iso(t) for t in ts], "equity": result.equity.tolist()},
    }  # fmt: skip


def write_json(path: Path, report: Mapping[str, Any]) -> None:
    path.write_text(json.dumps(report, indent=1, allow_nan=False) + "\n", encoding="utf-8")


def trades_csv(trades: Sequence[BacktestTrade]) -> str:
    """Header and one row per trade; floats with ``repr`` (read back bit for bit)."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(TRADE_COLUMNS)
    for t in trades:
        row = trade_dict(t)
        writer.writerow([repr(v) if isinstance(v, float) else v for v in row.values()])
    return out.getvalue()


def write_trades_csv(path: Path, trades: Sequence[BacktestTrade]) -> None:
    path.write_text(trades_csv(trades), encoding="utf-8")


# ---- HTML ------------------------------------------------------------------------------


def _fmt(key: str, value: Any) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "n/a"
    if key in ("total_return", "cagr", "max_drawdown", "win_rate", "exposure"):
        return f"{value * 100:,.2f}%"
    if isinstance(value, float):
        return f"{value:,.2f}" if abs(value) >= 100 else f"{value:,.4g}"
    return html.escape(str(value))


def report_html(result: BacktestResult, report: Mapping[str, Any]) -> str:
    """One self-contained page: summary, metrics, equity and drawdown charts, trades."""
    ts = result.ts.astype(np.float64)
    dd = -drawdown(result.equity, result.config.initial_cash) * 100
    strategy = report["strategy"]
    params = ", ".join(f"{k}={v}" for k, v in strategy["params"].items())
    data = report["data"]
    source = " ".join(str(data[k]) for k in ("exchange", "symbol", "interval") if data.get(k))
    metrics = "".join(
        f"<tr><td>{html.escape(k.replace('_', ' '))}</td><td>{_fmt(k, v)}</td></tr>"
        for k, v in report["metrics"].items()
    )
    settings = "".join(
        f"<tr><td>{html.escape(k.replace('_', ' '))}</td><td>{_fmt(k, v)}</td></tr>"
        for k, v in report["config"].items()
    )
    rows = []
    for t in report["trades"][:_HTML_TRADES]:
        cells = [
            t["side"], f"{t['qty']:.8g}", t["entry_time"], f"{t['entry_price']:.8g}",
            t["exit_time"], f"{t['exit_price']:.8g}", f"{t['fees']:,.2f}", f"{t['pnl']:,.2f}",
            f"{t['return'] * 100:.2f}%", t["exit_reason"], str(t["bars"]),
        ]  # fmt: skip
        rows.append("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in cells) + "</tr>")
    more = len(report["trades"]) - _HTML_TRADES
    note = f"<p>{more} more trades are in trades.csv.</p>" if more > 0 else ""
    header = "".join(f"<th>{c.replace('_', ' ')}</th>" for c in TRADE_COLUMNS)
    title = f"Backtest: {strategy['name']} ({params})"
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>
<style>{REPORT_STYLE}</style></head><body>
<h1>{html.escape(title)}</h1>
<p>{html.escape(source or str(data.get("source", "")))}: {data["candles"]} candles,
{html.escape(data["first_open"])} .. {html.escape(data["last_open"])}</p>
{line_chart("Equity", ts, result.equity, label="{:,.0f}")}
{line_chart("Drawdown (%)", ts, dd, label="{:.0f}%", area=True, color="#cf222e")}
<h2>Metrics</h2><table>{metrics}</table>
<h2>Settings</h2><table>{settings}</table>
<h2>Rules</h2><ul>{"".join(f"<li>{html.escape(r)}</li>" for r in report["rules"])}</ul>
<h2>Trades ({len(report["trades"])})</h2>
<table><tr>{header}</tr>{"".join(rows)}</table>{note}
</body></html>
"""


def write_reports(
    out_dir: Path, result: BacktestResult, *, data: Mapping[str, Any]
) -> dict[str, Any]:
    """Write report.json, trades.csv and report.html into ``out_dir``; return the report."""
    out_dir.mkdir(parents=True, exist_ok=True)
    report = report_dict(result, data=data)
    write_json(out_dir / "report.json", report)
    write_trades_csv(out_dir / "trades.csv", result.trades)
    (out_dir / "report.html").write_text(report_html(result, report), encoding="utf-8")
    return report
