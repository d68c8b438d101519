"""Inline SVG charts for self-contained HTML reports (backtests, risk).

Pages built with these open offline and can be mailed as one file: no script,
font or stylesheet is fetched from anywhere.
"""

from __future__ import annotations

import html
import math
from collections.abc import Sequence

import numpy as np
import numpy.typing as npt

from cryptodesk.domain.timeutil import to_iso

_CHART_POINTS = 1200  # the charts keep each bucket's low and high, so spikes survive

REPORT_STYLE = """body{font:14px/1.4 system-ui,sans-serif;margin:24px auto;max-width:1000px;
color:#1f2328}
h1{font-size:22px}h2{font-size:17px;margin-top:28px}table{border-collapse:collapse;font-size:13px}
td,th{padding:3px 10px;border-bottom:1px solid #d0d7de;text-align:right}th{background:#f6f8fa}
td:first-child,th:first-child{text-align:left}svg{width:100%;height:auto;margin:8px 0}
.t{font-size:13px;font-weight:600}.g{stroke:#d0d7de;stroke-width:.6}.yl{font-size:11px;text-anchor:end}
.xl{font-size:11px;text-anchor:middle}ul{padding-left:20px}.hm{font-size:11px;text-anchor:middle}"""


def thin(
    x: npt.NDArray[np.float64], y: npt.NDArray[np.float64]
) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]:
    """At most about ``_CHART_POINTS`` points: each bucket's lowest and highest, in order."""
    n = len(x)
    if n <= _CHART_POINTS:
        return x, y
    keep: list[int] = []
    for chunk in np.array_split(np.arange(n), _CHART_POINTS // 2):
        lo, hi = chunk[np.argmin(y[chunk])], chunk[np.argmax(y[chunk])]
        keep.extend(sorted({int(lo), int(hi)}))
    at = np.array(keep)
    return x[at], y[at]


def nice_ticks(lo: float, hi: float, count: int = 5) -> list[float]:
    if not hi > lo:
        return [lo]
    raw = (hi - lo) / count
    mag = 10 ** math.floor(math.log10(raw))
    step = next(m * mag for m in (1, 2, 2.5, 5, 10) if m * mag >= raw)
    first = math.ceil(lo / step) * step
    return [first + k * step for k in range(int((hi - first) / step) + 1)]


def line_chart(
    title: str,
    ts: npt.NDArray[np.float64],
    values: npt.NDArray[np.float64],
    *,
    label: str,
    area: bool = False,
    color: str = "#1f6feb",
) -> str:
    """An inline SVG line (or area down from 0) chart over time."""
    width, height, left, right, top, bottom = 960, 260, 80, 40, 28, 34
    x, y = thin(ts, values)
    y_lo, y_hi = (
        float(min(y.min(), 0.0 if area else y.min())),
        float(max(y.max(), 0.0 if area else y.max())),
    )
    if y_hi == y_lo:
        y_hi, y_lo = y_hi + 1, y_lo - 1
    x_lo, x_hi = float(x[0]), float(max(x[-1], x[0] + 1))

    def px(v: float) -> float:
        return left + (v - x_lo) / (x_hi - x_lo) * (width - left - right)

    def py(v: float) -> float:
        return top + (y_hi - v) / (y_hi - y_lo) * (height - top - bottom)

    points = " ".join(
        f"{px(a):.1f},{py(b):.1f}" for a, b in zip(x.tolist(), y.tolist(), strict=True)
    )
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {width} {height}" '
        f'role="img" aria-label="{html.escape(title)}">',
        f'<text x="{left}" y="18" class="t">{html.escape(title)}</text>',
    ]
    for tick in nice_ticks(y_lo, y_hi):
        yy = py(tick)
        parts.append(
            f'<line x1="{left}" x2="{width - right}" y1="{yy:.1f}" y2="{yy:.1f}" class="g"/>'
        )
        parts.append(
            f'<text x="{left - 6}" y="{yy + 4:.1f}" class="yl">{label.format(tick)}</text>'
        )
    for k in range(6):
        t = x_lo + k * (x_hi - x_lo) / 5
        parts.append(
            f'<text x="{px(t):.1f}" y="{height - 12}" class="xl">{to_iso(int(t))[:10]}</text>'
        )
    if area:
        base, end = py(0.0), px(float(x[-1]))
        parts.append(
            f'<polygon points="{px(x_lo):.1f},{base:.1f} {points} {end:.1f},{base:.1f}" '
            f'fill="{color}" fill-opacity="0.35" stroke="{color}" stroke-width="1"/>'
        )
    else:
        parts.append(
            f'<polyline points="{points}" fill="none" stroke="{color}" stroke-width="1.3"/>'
        )
    parts.append("</svg>")
    return "\n".join(parts)


def _diverging(value: float) -> str:
    """Blue for -1, white for 0, red for +1 (a correlation's colour)."""
    v = max(-1.0, min(1.0, value))
    r, g, b = (207, 34, 46) if v >= 0 else (31, 111, 235)
    mix = abs(v)
    return "#{:02x}{:02x}{:02x}".format(*(round(255 + (c - 255) * mix) for c in (r, g, b)))


def heatmap(title: str, labels: Sequence[str], matrix: npt.NDArray[np.float64]) -> str:
    """An inline SVG heatmap of a square matrix in [-1, 1] (correlations), values printed
    in the cells; a NaN cell is grey and reads n/a."""
    n = len(labels)
    cell = max(18, min(64, 720 // max(n, 1)))
    left, top = 90, 40
    width, height = left + n * cell + 20, top + n * cell + 20
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {width} {height}" '
        f'role="img" aria-label="{html.escape(title)}" style="max-width:{width}px">',
        f'<text x="{left}" y="18" class="t">{html.escape(title)}</text>',
    ]
    for i, name in enumerate(labels):
        label = html.escape(name)
        parts.append(
            f'<text x="{left - 6}" y="{top + i * cell + cell / 2 + 4:.1f}" '
            f'class="yl">{label}</text>'
        )
        parts.append(
            f'<text x="{left + i * cell + cell / 2:.1f}" y="{top - 6}" class="hm">{label}</text>'
        )
        for j in range(n):
            value = float(matrix[i, j])
            finite = math.isfinite(value)
            fill = _diverging(value) if finite else "#d0d7de"
            x, y = left + j * cell, top + i * cell
            parts.append(
                f'<rect x="{x}" y="{y}" width="{cell}" height="{cell}" fill="{fill}" '
                'stroke="#ffffff"/>'
            )
            if cell >= 30:
                text = f"{value:.2f}" if finite else "n/a"
                parts.append(
                    f'<text x="{x + cell / 2:.1f}" y="{y + cell / 2 + 4:.1f}" '
                    f'class="hm">{text}</text>'
                )
    parts.append("</svg>")
    return "\n".join(parts)
