"""``cryptodesk risk report`` as a user runs it: the published Bitstamp table in JSON and
HTML, and the mistakes users make (each one line on stderr and exit code 2)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from cryptodesk.adapters.files.price_table import read_price_table
from cryptodesk.analytics import risk
from cryptodesk.analytics.risk import METRIC_KEYS
from cryptodesk.analytics.var import var_historical
from cryptodesk.cli_risk import register
from tests.shared_data import SHARED_DATA
from tests.unit._cli import cli_app

BITSTAMP = SHARED_DATA / "bitstamp_btc_eth_ltc_usd_1d.csv"
runner = CliRunner()
pytestmark = pytest.mark.usefixtures("clean_env")


APP = cli_app(register)


def run(*args: str) -> tuple[int, str, str]:
    result = runner.invoke(APP, ["risk", "report", *args])
    return result.exit_code, result.stdout, result.stderr


@pytest.fixture(scope="module")
def report() -> dict:
    code, out, err = run("--prices", str(BITSTAMP), "--weights", "BTC=0.5,ETH=0.3,LTC=0.2",
                         "--paths", "20000")  # fmt: skip
    assert code == 0, err
    return json.loads(out)


def test_json_report_has_every_key_as_numbers(report: dict) -> None:
    assert set(report["assets"]) == {"BTC", "ETH", "LTC"}
    for block in report["assets"].values():
        assert set(METRIC_KEYS) <= set(block)
        assert all(isinstance(block[k], float) for k in METRIC_KEYS)
    portfolio = report["portfolio"]
    assert set(METRIC_KEYS) | {"var_monte_carlo", "component_var"} <= set(portfolio)
    assert isinstance(portfolio["var_monte_carlo"], float)
    assert set(portfolio["component_var"]) == {"BTC", "ETH", "LTC"}
    # Euler components add up to the parametric VaR of the portfolio.
    assert math.fsum(portfolio["component_var"].values()) == pytest.approx(
        portfolio["var_parametric"], rel=1e-9
    )
    assert report["correlation"]["BTC"]["BTC"] == pytest.approx(1.0)
    assert report["correlation"]["BTC"]["ETH"] == report["correlation"]["ETH"]["BTC"]
    assert report["gaps"] == [{"after": report["gaps"][0]["after"], "missing_days": 12}]


def test_each_asset_uses_its_own_rows_and_the_portfolio_the_common_range(report: dict) -> None:
    table = read_price_table(BITSTAMP)
    eth = table.prices[~np.isnan(table.prices[:, 1]), 1]
    eth_returns = eth[1:] / eth[:-1] - 1
    assert report["observations"]["ETH"]["returns"] == len(eth_returns) == 787
    assert report["observations"]["BTC"]["returns"] == 1864
    assert report["observations"]["portfolio"]["returns"] == 787
    assert report["assets"]["ETH"]["var_historical"] == pytest.approx(
        var_historical(eth_returns, confidence=0.95), rel=1e-12
    )
    assert report["assets"]["ETH"]["sharpe"] == pytest.approx(risk.sharpe(eth_returns), rel=1e-12)
    common = table.prices[~np.isnan(table.prices).any(axis=1)]
    r = common[1:] / common[:-1] - 1
    portfolio = r @ np.array([0.5, 0.3, 0.2])
    assert report["portfolio"]["max_drawdown"] == pytest.approx(risk.max_drawdown(portfolio))
    assert report["portfolio"]["weights"] == {"BTC": 0.5, "ETH": 0.3, "LTC": 0.2}


def test_html_report_has_heatmap_and_drawdown(tmp_path: Path) -> None:
    out = tmp_path / "risk.html"
    code, _, err = run("--prices", str(BITSTAMP), "--format", "html", "--paths", "0",
                       "--output", str(out))  # fmt: skip
    assert code == 0, err
    page = out.read_text()
    assert page.startswith("<!DOCTYPE html>")
    assert 'aria-label="Correlation of daily returns"' in page
    assert 'aria-label="Drawdown: portfolio (%)"' in page
    assert 'aria-label="Drawdown: ETH (%)"' in page
    assert "Monte Carlo not requested" in page
    assert "<script" not in page


def test_equal_weights_by_default_and_normalize(tmp_path: Path) -> None:
    code, out, _ = run("--prices", str(BITSTAMP), "--paths", "0")
    assert code == 0
    assert json.loads(out)["portfolio"]["weights"] == pytest.approx(
        {"BTC": 1 / 3, "ETH": 1 / 3, "LTC": 1 / 3}
    )
    code, out, _ = run("--prices", str(BITSTAMP), "--paths", "0", "--weights", "BTC=2,ETH=2",
                       "--normalize")  # fmt: skip
    assert code == 0
    assert json.loads(out)["portfolio"]["weights"] == {"BTC": 0.5, "ETH": 0.5, "LTC": 0.0}


def test_too_few_observations_are_null_with_a_reason(tmp_path: Path) -> None:
    prices = tmp_path / "p.csv"
    prices.write_text("date,BTC,ETH\n2024-01-01,100,10\n2024-01-02,110,11\n2024-01-03,99,12\n")
    code, out, err = run("--prices", str(prices), "--paths", "0")
    assert code == 0, err
    report = json.loads(out)
    assert report["assets"]["BTC"]["kurtosis"] is None
    assert report["notes"]["BTC"]["kurtosis"]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--weights", "BTC=0.5,ETH=0.3"], "--weights: weights sum to 0.8, not 1"),
        (["--weights", "BTC=0.5,XRP=0.5"], "--weights: unknown asset XRP"),
        (["--weights", "BTC"], "--weights: 'BTC' is not ASSET=NUMBER"),
        (["--weights", "BTC=x"], "--weights: BTC='x' is not a number"),
        (["--confidence", "1.5"], "--confidence 1.5 is not between 0 and 1"),
        (["--horizon", "0"], "--horizon 0 is not a number of days >= 1"),
        (["--format", "pdf"], "--format 'pdf' is not one of json, html"),
        (["--shock", "XRP=-0.5"], "--shock: unknown asset XRP"),
        (["--shock", "ETH=-2"], "--shock: a price cannot fall by more than 100%"),
    ],
)
def test_bad_options_exit_2_with_one_line(args: list[str], message: str) -> None:
    code, out, err = run("--prices", str(BITSTAMP), "--paths", "0", *args)
    assert code == 2
    assert out == ""
    assert err.startswith(f"cryptodesk: error: {message}")
    assert err.count("\n") == 1


def test_bad_file_names_the_line(tmp_path: Path) -> None:
    prices = tmp_path / "p.csv"
    prices.write_text("date,BTC\n2024-01-01,100\n2024-01-02,-1\n")
    code, _, err = run("--prices", str(prices))
    assert code == 2
    assert err == f"cryptodesk: error: {prices}:3: BTC: price -1 is not positive\n"
