"""The risk report as one self-contained HTML page: metrics tables, the correlation
heatmap and drawdown charts (inline SVG, nothing fetched, opens offline)."""

from __future__ import annotations

import html
import math
from typing import Any

import numpy as np

from cryptodesk.analytics.risk_report import RiskReport
from cryptodesk.analytics.svg_charts import REPORT_STYLE, heatmap, line_chart

_PERCENT = {
    "annual_return", "annual_volatility", "max_drawdown", "var_historical", "var_parametric",
    "var_cornish_fisher", "cvar_historical", "var_monte_carlo", "cvar_monte_carlo",
    "var_monte_carlo_bootstrap", "cvar_monte_carlo_bootstrap",
}  # fmt: skip
_ASSET_CHARTS = 12  # more assets than this: only the portfolio's drawdown is drawn


def _cell(key: str, value: Any) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "n/a"
    if key in _PERCENT:
        return f"{value * 100:,.2f}%"
    return f"{value:,.3f}"


def _metrics_table(data: dict[str, Any]) -> str:
    blocks = {**data["assets"], "portfolio": data["portfolio"]}
    names = list(blocks)
    keys = [k for k, v in data["portfolio"].items() if not isinstance(v, dict | list)]
    for block in data["assets"].values():
        keys += [k for k in block if k not in keys]
    head = "".join(f"<th>{html.escape(n)}</th>" for n in names)
    rows = []
    for key in keys:
        cells = "".join(f"<td>{_cell(key, blocks[n].get(key))}</td>" for n in names)
        rows.append(f"<tr><td>{html.escape(key.replace('_', ' '))}</td>{cells}</tr>")
    return f"<table><tr><th>metric</th>{head}</tr>{''.join(rows)}</table>"


def _notes(data: dict[str, Any]) -> str:
    items = [
        f"<li>{html.escape(who)}: {html.escape(key.replace('_', ' '))}: {html.escape(why)}</li>"
        for who, reasons in data["notes"].items()
        for key, why in reasons.items()
    ]
    return f"<h2>Not computed</h2><ul>{''.join(items)}</ul>" if items else ""


def risk_report_html(report: RiskReport) -> str:
    """The page for ``report``."""
    data = report.data
    params = data["parameters"]
    span = data["observations"]["portfolio"]
    weights = ", ".join(f"{a} {w:.2%}" for a, w in data["portfolio"]["weights"].items())
    charts = []
    for name, (ts, dd) in report.drawdowns.items():
        if name != "portfolio" and len(report.assets) > _ASSET_CHARTS:
            continue
        if len(dd) == 0:
            continue
        charts.append(line_chart(f"Drawdown: {name} (%)", ts.astype(np.float64), dd * 100,
                                 label="{:.0f}%", area=True, color="#cf222e"))  # fmt: skip
    warning = data["correlation_warning"]
    stress = "".join(
        f"<tr><td>{html.escape(s['name'])}</td><td>{s['portfolio_return'] * 100:,.2f}%</td></tr>"
        for s in data["portfolio"]["stress"]
    )
    component = data["portfolio"]["component_var"] or {}
    comp_rows = "".join(
        f"<tr><td>{html.escape(a)}</td><td>{_cell('var_parametric', v)}</td>"
        f"<td>{_cell('var_parametric', (data['portfolio']['marginal_var'] or {}).get(a))}</td></tr>"
        for a, v in component.items()
    )
    title = "Risk report"
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{title}</title>
<style>{REPORT_STYLE}</style></head><body>
<h1>{title}</h1>
<p>Portfolio over {html.escape(span["first"])} .. {html.escape(span["last"])}
({span["returns"]} daily returns), weights {html.escape(weights)}; VaR at
{params["confidence"]:.1%} over {params["horizon_days"]} day(s), reported as positive losses;
annualised with 365 days, risk-free rate {params["risk_free"]:g}.</p>
<h2>Metrics</h2>{_metrics_table(data)}
<h2>Correlation</h2>
{heatmap("Correlation of daily returns", report.assets, report.correlation)}
{f"<p><strong>{html.escape(warning)}</strong></p>" if warning else ""}
<h2>Component VaR (parametric)</h2>
<table><tr><th>asset</th><th>component</th><th>marginal</th></tr>{comp_rows}</table>
<h2>Stress scenarios</h2>
<table><tr><th>scenario</th><th>portfolio return</th></tr>{stress}</table>
<h2>Drawdowns</h2>
{"".join(charts)}
{_notes(data)}
</body></html>
"""
