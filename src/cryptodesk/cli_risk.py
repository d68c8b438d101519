"""``cryptodesk risk report``: risk metrics, VaR/CVaR and correlation of a table of closes.

``--prices`` is a CSV with a date column and one close column per asset (``BTC`` or
``BTC:close``; see ``adapters.files.price_table``). The report is JSON (numbers, a
metric the data cannot support is ``null`` with its reason under ``notes``) or one
self-contained HTML page with the correlation heatmap and drawdown charts. It goes to
stdout unless ``--output`` is given. Conventions: docs/risk.md. Like every
``cryptodesk`` command, a bad option or file prints one line
``cryptodesk: error: ...`` and exits with code 2.
"""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Annotated, NoReturn

import typer

risk_app = typer.Typer(help="Risk analytics (VaR/CVaR, drawdown, correlation).",
                       no_args_is_help=True)  # fmt: skip
FORMATS = ("json", "html")
_PAIR = re.compile(r"^\s*([A-Za-z0-9._-]+)\s*=\s*([^,]+?)\s*$")


def register(app: typer.Typer) -> None:
    app.add_typer(risk_app, name="risk")


def fail(message: str) -> NoReturn:
    # Imported here: cli.py imports this module to register it.
    from cryptodesk.cli import fail as cli_fail

    cli_fail(message)


def parse_pairs(option: str, text: str) -> dict[str, float]:
    """``BTC=0.5,ETH=0.3`` as ``{"BTC": 0.5, "ETH": 0.3}``; a bad pair names the option."""
    out: dict[str, float] = {}
    for part in text.split(","):
        match = _PAIR.match(part)
        if not match:
            fail(f"{option}: {part.strip()!r} is not ASSET=NUMBER")
        asset, raw = match.group(1).upper(), match.group(2)
        try:
            value = float(raw)
        except ValueError:
            fail(f"{option}: {asset}={raw!r} is not a number")
        if not math.isfinite(value):
            fail(f"{option}: {asset}={raw} is not a finite number")
        if asset in out:
            fail(f"{option}: {asset} is given twice")
        out[asset] = value
    return out


@risk_app.command("report")
def report(
    prices: Annotated[Path, typer.Option("--prices", help="CSV: a date column, then closes.")],
    weights: Annotated[
        str | None,
        typer.Option(help="Portfolio weights, e.g. BTC=0.5,ETH=0.3,LTC=0.2 (default: equal)."),
    ] = None,
    normalize: Annotated[bool, typer.Option(help="Scale the weights to sum to 1.")] = False,
    confidence: Annotated[float, typer.Option(help="VaR confidence, e.g. 0.95.")] = 0.95,
    horizon: Annotated[int, typer.Option(help="VaR horizon in days.")] = 1,
    risk_free: Annotated[float, typer.Option(help="Annual risk-free rate, e.g. 0.04.")] = 0.0,
    paths: Annotated[int, typer.Option(help="Monte Carlo paths (0 = none).")] = 100_000,
    seed: Annotated[int, typer.Option(help="Monte Carlo seed.")] = 0,
    shock: Annotated[
        str | None, typer.Option(help="A custom stress scenario, e.g. ETH=-0.5,LTC=-0.6.")
    ] = None,
    fmt: Annotated[str, typer.Option("--format", help="json or html.")] = "json",
    output: Annotated[Path | None, typer.Option(help="Write here instead of stdout.")] = None,
) -> None:
    """Risk report of the assets in a price table and of a portfolio of them."""
    from cryptodesk.adapters.files.parsing import DataFileError
    from cryptodesk.adapters.files.price_table import read_price_table
    from cryptodesk.analytics.risk import RiskInputError
    from cryptodesk.analytics.risk_report import RiskReportOptions, build_risk_report

    fmt = fmt.strip().lower()
    if fmt not in FORMATS:
        fail(f"--format {fmt!r} is not one of {', '.join(FORMATS)}")
    if not 0 < confidence < 1:
        fail(f"--confidence {confidence:g} is not between 0 and 1 (e.g. 0.95)")
    if horizon < 1:
        fail(f"--horizon {horizon} is not a number of days >= 1")
    if paths < 0:
        fail(f"--paths {paths} cannot be negative")
    if not math.isfinite(risk_free) or risk_free <= -1:
        fail(f"--risk-free {risk_free:g} is not an annual rate above -1")
    given = None if weights is None else parse_pairs("--weights", weights)
    shocks = {} if shock is None else parse_pairs("--shock", shock)
    if any(s < -1 for s in shocks.values()):
        fail("--shock: a price cannot fall by more than 100% (shock >= -1)")
    try:
        table = read_price_table(prices)
    except DataFileError as exc:
        fail(str(exc))
    unknown = sorted(set(shocks) - set(table.assets))
    if unknown:
        fail(f"--shock: unknown asset {', '.join(unknown)} (known: {', '.join(table.assets)})")
    options = RiskReportOptions(
        confidence=confidence, horizon=horizon, risk_free=risk_free,
        monte_carlo_paths=paths, seed=seed, asset_shocks=shocks,
    )  # fmt: skip
    try:
        if given is not None:
            from cryptodesk.analytics.risk_report import check_weights

            given = check_weights(given, table.assets, normalize=normalize)
        result = build_risk_report(table.times, table.assets, table.prices, weights=given,
                                   options=options)  # fmt: skip
    except RiskInputError as exc:
        fail(f"--weights: {exc}" if "weight" in str(exc) else str(exc))
    gaps = table.gaps()
    if gaps:
        from cryptodesk.domain.timeutil import to_iso

        result.data["gaps"] = [{"after": to_iso(t)[:10], "missing_days": n} for t, n in gaps]
    if fmt == "json":
        import msgspec

        text = msgspec.json.format(msgspec.json.encode(result.data), indent=2).decode() + "\n"
    else:
        from cryptodesk.analytics.risk_report_html import risk_report_html

        text = risk_report_html(result)
    if output is None:
        typer.echo(text, nl=False)
    else:
        from cryptodesk.cli_tax import write_replacing

        write_replacing(output, text)
