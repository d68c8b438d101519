"""``cryptodesk backfill`` and ``cryptodesk jobs`` as a user runs them (factory monkeypatched)."""

from __future__ import annotations

import asyncio
import json
import sqlite3
from pathlib import Path

import pytest
from typer.testing import CliRunner

from cryptodesk.adapters.db import migrate
from cryptodesk.adapters.db.engine import create_engine
from cryptodesk.adapters.db.jobs_store import JobRunStore
from cryptodesk.cli import app
from cryptodesk.domain.jobs import JobRun
from cryptodesk.domain.timeutil import now_ms
from cryptodesk.services import sources
from tests.unit._fetchers import HOUR, T0, FakeFetcher

runner = CliRunner()
pytestmark = pytest.mark.usefixtures("clean_env")


@pytest.fixture
def fetcher(monkeypatch: pytest.MonkeyPatch) -> FakeFetcher:
    fake = FakeFetcher(exchange="binance", now=now_ms())
    monkeypatch.setattr(sources, "make_fetcher", lambda exchange, settings: fake)
    return fake


def stored(tmp_path: Path, symbol: str = "BTC/USDT") -> list[int]:
    db = tmp_path / ".cryptodesk" / "cryptodesk.db"
    with sqlite3.connect(db) as conn:
        rows = conn.execute(
            "SELECT open_time FROM candles WHERE exchange = 'binance' AND symbol = ? "
            "AND interval = '1h' ORDER BY open_time",
            (symbol,),
        ).fetchall()
    return [t for (t,) in rows]


def backfill(*args: str) -> list[str]:
    return ["backfill", "--exchange", "binance", "--symbol", "BTC/USDT", "--interval", "1h", *args]


def test_backfill_fetches_then_a_rerun_is_up_to_date(fetcher: FakeFetcher, tmp_path: Path) -> None:
    result = runner.invoke(app, backfill("--since", "2024-01-01", "--until", "2024-01-03"))
    assert result.exit_code == 0, result.output
    assert result.stdout.strip() == (
        "backfilled 48 BTC/USDT 1h candles of binance "
        "(2024-01-01T00:00:00.000Z .. 2024-01-03T00:00:00.000Z) in 1 requests"
    )
    assert stored(tmp_path) == list(range(T0, T0 + 48 * HOUR, HOUR))
    assert fetcher.closed

    again = runner.invoke(app, backfill("--since", "2024-01-01", "--until", "2024-01-03"))
    assert again.exit_code == 0, again.output
    assert "backfilled 0 BTC/USDT 1h candles of binance (up to date) in 0 requests" in again.stdout
    assert "continued after 2024-01-02T23:00:00.000Z" in again.stdout
    assert len(fetcher.ohlcv_calls()) == 1
    assert stored(tmp_path) == list(range(T0, T0 + 48 * HOUR, HOUR))


def test_a_failed_backfill_exits_1_and_the_rerun_continues(
    fetcher: FakeFetcher, tmp_path: Path
) -> None:
    fetcher.fail_on_calls = {2}
    args = backfill("--since", "2024-01-01", "--until", "2024-03-01")  # 1440 candles, 2 pages
    failed = runner.invoke(app, args)
    assert failed.exit_code == 1
    assert failed.stderr.strip() == (
        "cryptodesk: error: backfill stopped after storing 1000 candles: HTTP 502 on call 2; "
        "run the same command again to continue"
    )
    assert len(stored(tmp_path)) == 1000
    resumed = runner.invoke(app, args)
    assert resumed.exit_code == 0, resumed.output
    assert "backfilled 440 " in resumed.stdout
    assert "continued after 2024-02-11T15:00:00.000Z" in resumed.stdout
    assert stored(tmp_path) == list(range(T0, T0 + 1440 * HOUR, HOUR))


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--symbol", "DOGE/USDT"], "binance does not list DOGE/USDT"),
        (["--symbol", "BTCUSDT"], "symbol 'BTCUSDT' is not of the form BASE/QUOTE"),
        (["--interval", "7m"], "unknown interval '7m'"),
        (["--interval", "4h"], "binance has no 4h candles; it serves 1m, 5m, 1h, 1d"),
        (["--since", "yesterday"], "--since 'yesterday' is neither epoch milliseconds nor ISO"),
        (["--until", "2023-12-31"], "--until 2023-12-31 is not after --since 2024-01-01"),
        (["--until", "2024-13-01"], "--until '2024-13-01' is neither"),
    ],
)
def test_bad_input_exits_2_with_one_line_and_fetches_nothing(
    fetcher: FakeFetcher, args: list[str], message: str
) -> None:
    options = {
        "--exchange": "binance",
        "--symbol": "BTC/USDT",
        "--interval": "1h",
        "--since": "2024-01-01",
    }
    for name, value in zip(args[::2], args[1::2], strict=True):
        options[name] = value
    result = runner.invoke(app, ["backfill", *[x for kv in options.items() for x in kv]])
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1
    assert lines[0].startswith("cryptodesk: error: ")
    assert message in lines[0]
    assert fetcher.ohlcv_calls() == []


@pytest.mark.parametrize("exchange", ["nosuchexchange", "sim"])
def test_unknown_exchange_exits_2(exchange: str) -> None:
    result = runner.invoke(
        app,
        ["backfill", "--exchange", exchange, "--symbol", "BTC/USDT", "--interval", "1h",
         "--since", "2024-01-01"],
    )  # fmt: skip
    assert result.exit_code == 2
    assert result.stderr.strip() == (
        f"cryptodesk: error: unknown exchange {exchange!r}: "
        "not an exchange id ccxt knows (e.g. binance)"
    )


def record_runs(tmp_path: Path) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / '.cryptodesk' / 'cryptodesk.db'}"
    migrate.upgrade(url)

    async def write() -> None:
        engine = create_engine(url)
        try:
            runs = JobRunStore(engine)
            await runs.record(
                JobRun("candles:binance", "h:1", T0, T0 + 2500, "ok", None, T0 + 55 * 60_000)
            )
            await runs.record(
                JobRun("tickers:binance", "h:1", T0 + 5000, T0 + 5100, "failed",
                       "NetworkError: timed out\nmore", T0 + 10_000)
            )  # fmt: skip
        finally:
            await engine.dispose()

    asyncio.run(write())


def test_jobs_lists_configured_jobs_with_last_and_next_run(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("CRYPTODESK_EXCHANGES", "binance")
    empty = runner.invoke(app, ["jobs"])
    assert empty.exit_code == 0, empty.output
    assert [line.split()[:2] for line in empty.stdout.splitlines()[1:]] == [
        ["candles:binance", "-"],
        ["markets:binance", "-"],
        ["pnl-report:daily", "-"],
        ["tickers:binance", "-"],
    ]
    assert empty.stdout.count("never ran") == 4

    record_runs(tmp_path)
    result = runner.invoke(app, ["jobs"])
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[0].split() == [
        "JOB",
        "LAST",
        "RUN",
        "OUTCOME",
        "NEXT",
        "RUN",
        "LAST",
        "OK",
        "ERROR",
    ]
    assert lines[1].split() == [
        "candles:binance", "2024-01-01T00:00:00.000Z", "ok", "2024-01-01T00:55:00.000Z",
        "2024-01-01T00:00:02.500Z",
    ]  # fmt: skip
    assert lines[4].split() == [
        "tickers:binance", "2024-01-01T00:00:05.000Z", "failed", "2024-01-01T00:00:10.000Z",
        "-", "NetworkError:", "timed", "out",
    ]  # fmt: skip

    as_json = json.loads(runner.invoke(app, ["jobs", "--json"]).stdout)
    assert as_json[0] == {
        "job": "candles:binance",
        "last_started_at": "2024-01-01T00:00:00.000Z",
        "last_finished_at": "2024-01-01T00:00:02.500Z",
        "outcome": "ok",
        "error": None,
        "next_run_at": "2024-01-01T00:55:00.000Z",
        "last_ok_at": "2024-01-01T00:00:02.500Z",
        "owner": "h:1",
    }
    assert as_json[1]["outcome"] is None


def test_jobs_with_only_the_simulator(monkeypatch: pytest.MonkeyPatch) -> None:
    result = runner.invoke(app, ["jobs"])
    assert result.exit_code == 0
    assert [line.split()[:2] for line in result.stdout.splitlines()[1:]] == [
        ["pnl-report:daily", "-"]
    ]
    monkeypatch.setenv("CRYPTODESK_PORTFOLIO_SYNC_SECONDS", "3600")
    both = runner.invoke(app, ["jobs"])
    assert [line.split()[0] for line in both.stdout.splitlines()[1:]] == [
        "pnl-report:daily",
        "portfolio-sync:accounts",
    ]
    monkeypatch.setenv("CRYPTODESK_PNL_REPORT_TIME", "")
    monkeypatch.setenv("CRYPTODESK_PORTFOLIO_SYNC_SECONDS", "0")
    none = runner.invoke(app, ["jobs"])
    assert none.stdout.strip() == (
        "no scheduled jobs (only sim or replay exchanges are configured, "
        "no daily PnL report, no account sync)"
    )
