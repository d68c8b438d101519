"""``cryptodesk portfolio``, ``cryptodesk report pnl`` and ``tax report --tenant`` as a
user runs them, on a SQLite file named by CRYPTODESK_DATABASE_URL."""

from __future__ import annotations

import asyncio
import csv
import json
from decimal import Decimal
from pathlib import Path

import pytest
from typer.testing import CliRunner

from cryptodesk.adapters.db.engine import create_engine
from cryptodesk.cli import app
from cryptodesk.config import load_settings
from cryptodesk.observability.logging import configure_logging
from cryptodesk.portfolio_wiring import ledger_service
from tests.unit.test_cli_ledger import HEADER, ROWS

runner = CliRunner()
pytestmark = pytest.mark.usefixtures("clean_env")


@pytest.fixture(autouse=True)
def quiet_logging() -> None:
    configure_logging("json", "WARNING")


@pytest.fixture
def ledger(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    data = tmp_path / "data"
    monkeypatch.setenv("CRYPTODESK_DATA_DIR", str(data))
    monkeypatch.setenv("CRYPTODESK_DATABASE_URL", f"sqlite+aiosqlite:///{data / 'p.db'}")
    path = tmp_path / "ledger.csv"
    path.write_text(HEADER + "".join(ROWS))
    result = runner.invoke(app, ["ledger", "import", str(path), "--tenant", "acme"])
    assert result.exit_code == 0, result.output
    return path


def test_tax_report_over_the_stored_ledger_equals_the_file_report(ledger: Path) -> None:
    stored = runner.invoke(app, ["tax", "report", "--tenant", "acme", "--method", "hifo"])
    from_file = runner.invoke(app, ["tax", "report", "--ledger", str(ledger), "--method", "hifo"])
    assert stored.exit_code == from_file.exit_code == 0, stored.output
    assert json.loads(stored.stdout) == json.loads(from_file.stdout)
    assert Decimal(json.loads(stored.stdout)["summary"]["income"]) == 30
    both = runner.invoke(
        app, ["tax", "report", "--tenant", "acme", "--ledger", str(ledger), "--method", "fifo"]
    )
    assert both.exit_code == 2
    assert "either --ledger FILE or --tenant NAME" in both.stderr


def test_portfolio_show_reports_missing_prices_instead_of_zero(ledger: Path) -> None:
    result = runner.invoke(app, ["portfolio", "show", "--tenant", "acme", "--json"])
    assert result.exit_code == 0, result.output
    body = json.loads(result.stdout)
    assert {(p["account"], p["asset"]) for p in body["missing_prices"]} == {
        ("cold", "BTC"), ("cold", "ETH"), ("kraken", "BTC"),
    }  # fmt: skip
    assert body["total"]["complete"] is False
    table = runner.invoke(app, ["portfolio", "show", "--tenant", "acme"])
    assert "price missing" in table.stdout
    assert table.stdout.splitlines()[-1] == (
        "total market value unknown: 3 positions have no price (priced positions: 0 USD)"
    )


def test_reconcile_exits_1_on_a_difference_and_0_when_all_match(ledger: Path) -> None:
    async def enter(balances: dict[str, Decimal]) -> None:
        settings = load_settings()
        engine = create_engine(settings.database_url)
        service = ledger_service(settings, engine)
        await service.set_balances("acme", "cold", balances, as_of=1, source="manual")
        await service.close()
        await engine.dispose()

    asyncio.run(enter({"BTC": Decimal("0.5"), "ETH": Decimal("0.01")}))
    ok = runner.invoke(app, ["portfolio", "reconcile", "--tenant", "acme", "--account", "cold"])
    assert ok.exit_code == 0, ok.output
    asyncio.run(enter({"BTC": Decimal("0.4"), "ETH": Decimal("0.01")}))
    bad = runner.invoke(app, ["portfolio", "reconcile", "--tenant", "acme", "--account", "cold"])
    assert bad.exit_code == 1
    assert bad.stdout.split("\n")[0].split()[:3] == ["mismatch", "cold", "BTC"]
    wrong = runner.invoke(app, ["portfolio", "reconcile", "--tolerance", "x"])
    assert wrong.exit_code == 2
    assert "--tolerance 'x' is not a number" in wrong.stderr


def test_report_pnl_writes_files_per_tenant_and_rejects_bad_dates(
    ledger: Path, tmp_path: Path
) -> None:
    out = tmp_path / "reports"
    result = runner.invoke(
        app, ["report", "pnl", "--date", "2024-04-15", "--format", "csv,html", "--dir", str(out)]
    )
    assert result.exit_code == 0, result.output
    assert (out / "acme" / "pnl-2024-04-15.csv").exists()
    assert (out / "acme" / "pnl-2024-04-15.html").exists()
    rows = list(csv.reader((out / "acme" / "pnl-2024-04-15.csv").open()))
    assert rows[0][:2] == ["account", "asset"]
    assert "acme: wrote" in result.stdout
    bad = runner.invoke(app, ["report", "pnl", "--date", "15.04.2024"])
    assert bad.exit_code == 2
    assert "--date '15.04.2024' is not a date YYYY-MM-DD" in bad.stderr
    fmt = runner.invoke(app, ["report", "pnl", "--date", "2024-04-15", "--format", "doc"])
    assert fmt.exit_code == 2


def test_sync_of_a_manual_account_is_a_usage_error(ledger: Path) -> None:
    result = runner.invoke(app, ["portfolio", "sync", "--tenant", "acme", "--account", "cold"])
    assert result.exit_code == 2
    assert "not an exchange account" in result.stderr
