import json

import pytest
from typer.testing import CliRunner

from cryptodesk import __version__
from cryptodesk.cli import app

runner = CliRunner()


pytestmark = pytest.mark.usefixtures("clean_env")


def test_version():
    result = runner.invoke(app, ["version"])
    assert result.exit_code == 0
    assert result.stdout.strip() == __version__


def test_config_show_masks_secrets(monkeypatch):
    monkeypatch.setenv("CRYPTODESK_DATABASE_URL", "postgresql+asyncpg://app:hunter2@db/x")
    result = runner.invoke(app, ["config", "show"])
    assert result.exit_code == 0
    assert "hunter2" not in result.stdout
    assert "CRYPTODESK_DATABASE_URL" in result.stdout
    assert "postgresql+asyncpg://app:***@db/x" in result.stdout
    assert "BTC/USDT,ETH/USDT,SOL/USDT" in result.stdout
    as_json = json.loads(runner.invoke(app, ["config", "show", "--json"]).stdout)
    assert as_json["symbols"] == ["BTC/USDT", "ETH/USDT", "SOL/USDT"]
    assert as_json["database_url"] == "postgresql+asyncpg://app:***@db/x"


def test_bad_setting_exits_2_with_one_line(monkeypatch):
    monkeypatch.setenv("CRYPTODESK_PORT", "-1")
    result = runner.invoke(app, ["config", "show"])
    assert result.exit_code == 2
    assert result.stderr.strip().startswith("cryptodesk: error: invalid setting CRYPTODESK_PORT")
    assert len(result.stderr.strip().splitlines()) == 1


def test_db_upgrade_and_current(tmp_path):
    result = runner.invoke(app, ["db", "upgrade"])
    assert result.exit_code == 0, result.output
    assert (tmp_path / ".cryptodesk" / "cryptodesk.db").exists()
    current = runner.invoke(app, ["db", "current"])
    assert current.exit_code == 0
    assert current.stdout.strip() != "none"
    assert current.stdout.strip() in result.stdout


def test_db_upgrade_on_unusable_data_dir(monkeypatch, tmp_path):
    (tmp_path / "f").write_text("x")
    monkeypatch.setenv("CRYPTODESK_DATA_DIR", str(tmp_path / "f" / "d"))
    result = runner.invoke(app, ["db", "upgrade"])
    assert result.exit_code == 2
    assert "CRYPTODESK_DATA_DIR" in result.stderr


def test_unknown_role_exits_2(monkeypatch):
    monkeypatch.setenv("CRYPTODESK_PORT", "0")
    result = runner.invoke(app, ["serve", "--roles", "api,bogus"])
    assert result.exit_code == 2
    assert "unknown role(s) bogus" in result.stderr
