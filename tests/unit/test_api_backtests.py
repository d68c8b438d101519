"""POST/GET /api/v1/backtests over ASGI: a job from 202 to its report, failures, 404, 400."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from functools import cache
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from cryptodesk.adapters.files.candle_files import read_candles
from cryptodesk.analytics.backtest import BacktestConfig, run_backtest
from cryptodesk.analytics.backtest_report import report_dict
from cryptodesk.analytics.strategies import STRATEGIES, build_strategy
from cryptodesk.analytics.strategy import Context, Decision, Strategy
from cryptodesk.api.problems import PROBLEM_MEDIA_TYPE, install_problem_handlers
from cryptodesk.api.routes.backtests import backtests_router
from cryptodesk.domain.interval import Interval
from cryptodesk.domain.market import Candle
from cryptodesk.services.backtests import BacktestJobs, BacktestRequest
from cryptodesk.services.market_queries import Unavailable
from tests.shared_data import SHARED_DATA
from tests.unit._auth import fresh_logins
from tests.unit._fakes import ListStore

T_NOW = 1_714_521_600_000  # 2024-05-01T00:00:00Z
BODY = {"strategy": "ma_cross", "params": {"fast": 10, "slow": 30}, "exchange": "coinbase",
        "symbol": "BTC/USD", "interval": "1h"}  # fmt: skip


@cache
def hourly() -> list[Candle]:
    path = SHARED_DATA / "cryptodatadownload_coinbase_btcusd_1h.csv"
    candles = read_candles(
        path, exchange="coinbase", symbol="BTC/USD", interval=Interval.parse("1h")
    )
    return candles.candles[:1500]


class Ids:
    def __init__(self) -> None:
        self.n = 0

    def __call__(self) -> str:
        self.n += 1
        return f"bt-{self.n}"


@pytest.fixture
def jobs() -> BacktestJobs:
    return BacktestJobs(ListStore(hourly()), keep=3, clock=lambda: T_NOW, new_id=Ids())


@pytest.fixture
async def client(jobs: BacktestJobs) -> AsyncIterator[httpx.AsyncClient]:
    app = FastAPI()
    app.include_router(backtests_router(jobs))
    install_problem_handlers(app)
    logins = fresh_logins()
    app.state.auth = logins.auth
    transport = httpx.ASGITransport(app=app)
    auth = logins.bearer("default", "trader")
    async with httpx.AsyncClient(transport=transport, base_url="http://t", auth=auth) as c:
        yield c
    await jobs.close()


async def poll(client: httpx.AsyncClient, location: str) -> dict[str, Any]:
    """GET the job as a client would until it is finished (the replay runs in a thread)."""
    for _ in range(5000):
        got = await client.get(location)
        assert got.status_code == 200
        if got.json()["status"] in ("done", "failed"):
            return dict(got.json())
        await asyncio.sleep(0.005)
    raise AssertionError(f"{location} did not finish")


async def test_a_backtest_is_accepted_then_done_with_its_report(
    client: httpx.AsyncClient,
) -> None:
    posted = await client.post("/api/v1/backtests", json={**BODY, "fee": 0.002, "start":
                               "2017-07-05T00:00:00Z"})  # fmt: skip
    assert posted.status_code == 202
    assert posted.headers["location"] == "/api/v1/backtests/bt-1"
    assert posted.json() == {
        "id": "bt-1", "status": "queued", "strategy": "ma_cross",
        "params": {"fast": 10, "slow": 30},
        "exchange": "coinbase", "symbol": "BTC/USD", "interval": "1h",
        "created_at": "2024-05-01T00:00:00.000Z", "started_at": None, "finished_at": None,
        "error": None, "traceback": None, "report": None,
    }  # fmt: skip
    body = await poll(client, posted.headers["location"])
    assert (body["status"], body["finished_at"], body["error"]) == (
        "done", "2024-05-01T00:00:00.000Z", None,
    )  # fmt: skip
    candles = [c for c in hourly() if c.open_time >= 1_499_212_800_000]
    direct = run_backtest(candles, build_strategy("ma_cross", {"fast": 10, "slow": 30}),
                          BacktestConfig(fee=0.002))  # fmt: skip
    expected = report_dict(direct, data={"source": "db", "exchange": "coinbase",
                                         "symbol": "BTC/USD", "interval": "1h"})  # fmt: skip
    assert body["report"] == expected
    assert body["report"]["metrics"]["trades"] > 10


async def test_unknown_ids_are_404_problems(client: httpx.AsyncClient) -> None:
    got = await client.get("/api/v1/backtests/nope")
    assert got.status_code == 404
    assert got.headers["content-type"].startswith(PROBLEM_MEDIA_TYPE)
    problem = got.json()
    assert (problem["type"], problem["detail"]) == (
        "https://cryptodesk.dev/problems/not-found", "no backtest 'nope'",
    )  # fmt: skip


@pytest.mark.parametrize(
    ("change", "name", "detail"),
    [
        ({"strategy": "nope"}, "strategy", "unknown strategy 'nope'; built-in: ma_cross, "
         "rsi_reversion, macd_trend, bollinger_breakout"),
        ({"params": {"fast": 50, "slow": 20}}, "params", "ma_cross: fast (50) must be below "
         "slow (20)"),
        ({"params": {"speed": 1}}, "params", "ma_cross has no parameter 'speed'; its parameters: "
         "fast, slow"),
        ({"fee": 0.3}, "fee", "fee 0.3 is not in [0, 0.1)"),
        ({"size": "fraction:2"}, "size", "size fraction 2.0 is not in (0, 1]"),
        ({"symbol": "BTCUSD"}, "symbol", None),
        ({"interval": "7h"}, "interval", None),
        ({"start": "soon"}, "start", "start 'soon' is neither epoch milliseconds nor ISO 8601"),
        ({"start": "2024-02-01", "end": "2024-01-01"}, "start", "start must be before end"),
        ({"fee": "cheap"}, "fee", None),
        ({"colour": "red"}, "colour", None),
    ],
)  # fmt: skip
async def test_bad_requests_are_400_problems_naming_the_field(
    client: httpx.AsyncClient, change: dict[str, Any], name: str, detail: str | None
) -> None:
    posted = await client.post("/api/v1/backtests", json={**BODY, **change})
    # What the body model itself refuses (wrong type, unknown field) is a 422.
    assert posted.status_code == (422 if name in ("colour", "fee") and detail is None else 400)
    problem = posted.json()
    assert problem["errors"][0]["name"] == name
    if detail is not None:
        assert problem["detail"] == detail
    assert (await client.get("/api/v1/backtests/bt-1")).status_code == 404  # no job was made


class Boom(Strategy):
    name = "boom"

    def on_candle(self, ctx: Context) -> Decision | None:
        if ctx.index == 5:
            raise RuntimeError("out of cheese")
        return None


async def test_a_strategy_that_raises_fails_the_job_with_its_traceback(
    client: httpx.AsyncClient, jobs: BacktestJobs, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(STRATEGIES, "boom", Boom)
    posted = await client.post("/api/v1/backtests", json={**BODY, "strategy": "boom", "params": {}})
    assert posted.status_code == 202
    await jobs.wait("bt-1")
    body = (await client.get("/api/v1/backtests/bt-1")).json()
    assert (body["status"], body["report"]) == ("failed", None)
    assert body["error"] == (
        "strategy boom raised on the candle of 2017-07-01T16:00:00.000Z (6 of 1500): "
        "RuntimeError: out of cheese"
    )
    assert body["traceback"].startswith("Traceback (most recent call last):")
    assert 'raise RuntimeError("out of cheese")' in body["traceback"]


async def test_a_series_with_no_candles_fails_the_job(
    client: httpx.AsyncClient, jobs: BacktestJobs
) -> None:
    await client.post(
        "/api/v1/backtests", json={**BODY, "start": "2024-01-01", "end": "2024-02-01"}
    )
    await jobs.wait("bt-1")
    body = (await client.get("/api/v1/backtests/bt-1")).json()
    assert (body["status"], body["traceback"]) == ("failed", None)
    assert body["error"] == (
        "no coinbase BTC/USD 1h candles stored in "
        "[2024-01-01T00:00:00.000Z, 2024-02-01T00:00:00.000Z)"
    )


def request() -> BacktestRequest:
    return BacktestRequest("ma_cross", {"fast": 10, "slow": 30}, "coinbase", "BTC/USD", "1h")


async def test_finished_jobs_make_room_and_unfinished_ones_are_never_dropped() -> None:
    jobs = BacktestJobs(ListStore(hourly()[:300]), keep=2, new_id=Ids())
    first, second = jobs.submit(request()), jobs.submit(request())
    with pytest.raises(
        Unavailable, match=r"^2 backtests are still queued or running; retry later$"
    ):
        jobs.submit(request())
    await jobs.wait(first.id)
    await jobs.wait(second.id)
    third = jobs.submit(request())
    assert (jobs.get(first.id), jobs.get(second.id), jobs.get(third.id)) == (None, second, third)
    await jobs.close()
    assert (third.status, third.error) == ("failed", "cancelled: the server stopped")
    assert second.status == "done"
