"""``/api/v1/backtests``: run a built-in strategy over a stored series, as a background job.

``POST`` checks the request and answers ``202 Accepted`` at once with the
job's id and a ``Location`` to poll; ``GET /api/v1/backtests/{id}`` gives its
status (``queued``, ``running``, ``done``, ``failed``) and, once done, the
report (the same JSON as ``cryptodesk backtest`` writes to report.json). A
failed job carries its error and, when the strategy raised, the traceback.

An unknown strategy, a bad parameter or setting is a 400 naming the field; an
unknown id a 404. Jobs are kept in the serving process's memory (see
``services.backtests``).
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Path, Response
from pydantic import BaseModel, ConfigDict, Field

from cryptodesk.analytics.backtest import BacktestConfig, Sizing
from cryptodesk.api import examples as ex
from cryptodesk.api.routes.market import problem_responses
from cryptodesk.api.security import requires
from cryptodesk.api.tenancy import Tenant
from cryptodesk.domain.timeutil import parse_time, to_iso
from cryptodesk.services.backtests import BacktestJob, BacktestJobs, BacktestRequest
from cryptodesk.services.market_queries import NotFound

PREFIX = "/api/v1/backtests"


class BacktestIn(BaseModel):
    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [ex.BACKTEST_IN]})

    strategy: str = Field(examples=["ma_cross"], description="A built-in strategy.")
    params: dict[str, int | float | bool | str] = Field(
        default_factory=dict, examples=[{"fast": 50, "slow": 200}],
        description="Strategy parameters; the rest take their defaults.",
    )  # fmt: skip
    exchange: str = Field(examples=["binance"])
    symbol: str = Field(examples=["BTC/USDT"])
    interval: str = Field(examples=["1h"])
    start: str | None = Field(
        None, examples=["2024-01-01T00:00:00Z"], description="First open time, inclusive."
    )
    end: str | None = Field(None, description="Last open time, exclusive (ISO 8601 or epoch ms).")
    fee: float = Field(0.001, description="Taker fee rate: market and stop orders.")
    maker_fee: float | None = Field(None, description="Maker fee rate (take-profit); default fee.")
    slippage_bps: float = Field(0.0, description="Slippage in basis points of the price.")
    slippage_volume: float = Field(0.0, description="Extra slippage: K x qty / candle volume.")
    size: str = Field("fraction:1.0", description="fraction:F of equity or notional:AMOUNT.")
    lot: float = Field(0.0, description="Round quantities down to this increment (0: none).")
    stop_loss: float | None = Field(None, description="Fraction of the entry price.")
    take_profit: float | None = Field(None, description="Fraction of the entry price.")
    allow_short: bool = Field(False, description="Open shorts on sell signals.")
    initial_cash: float = Field(10_000.0, description="In the quote currency.")

    def to_request(self) -> BacktestRequest:
        config = BacktestConfig(
            initial_cash=self.initial_cash, fee=self.fee, maker_fee=self.maker_fee,
            slippage_bps=self.slippage_bps, slippage_volume=self.slippage_volume,
            sizing=Sizing.parse(self.size), lot=self.lot, stop_loss=self.stop_loss,
            take_profit=self.take_profit, allow_short=self.allow_short,
        )  # fmt: skip
        start = None if self.start is None else parse_time(self.start, field="start")
        end = None if self.end is None else parse_time(self.end, field="end")
        return BacktestRequest(
            self.strategy, self.params, self.exchange, self.symbol, self.interval,
            start, end, config,
        )  # fmt: skip


class BacktestOut(BaseModel):
    model_config = ConfigDict(
        frozen=True, json_schema_extra={"examples": [ex.BACKTEST_QUEUED, ex.BACKTEST_DONE]}
    )

    id: str = Field(examples=["5f0c..."])
    status: Literal["queued", "running", "done", "failed"]
    strategy: str = Field(examples=["ma_cross"])
    params: dict[str, Any] = Field(description="As used, defaults included.")
    exchange: str
    symbol: str
    interval: str
    created_at: str = Field(examples=["2024-05-01T12:00:00.000Z"])
    started_at: str | None = None
    finished_at: str | None = None
    error: str | None = Field(None, description="Why the job failed.")
    traceback: str | None = Field(None, description="The strategy's traceback, if it raised.")
    report: dict[str, Any] | None = Field(
        None, description="Once done: metrics, trades, equity curve (as report.json)."
    )

    @classmethod
    def of(cls, job: BacktestJob) -> BacktestOut:
        def iso(ts: int | None) -> str | None:
            return None if ts is None else to_iso(ts)

        r = job.request
        return cls(
            id=job.id, status=job.status, strategy=r.strategy.strip().lower(), params=job.params,
            exchange=r.exchange, symbol=r.symbol, interval=r.interval,
            created_at=to_iso(job.created_at), started_at=iso(job.started_at),
            finished_at=iso(job.finished_at), error=job.error, traceback=job.traceback,
            report=job.report,
        )  # fmt: skip


def backtests_router(jobs: BacktestJobs) -> APIRouter:
    router = APIRouter(prefix=PREFIX, tags=["backtests"])

    @router.post(
        "",
        dependencies=[requires("backtests:run")],
        status_code=202,
        response_model=BacktestOut,
        responses=problem_responses(400, 503),
        summary="Start a backtest over a stored candle series",
    )
    async def start(body: BacktestIn, response: Response, tenant: Tenant) -> BacktestOut:
        job = jobs.submit(body.to_request(), tenant)
        response.headers["Location"] = f"{PREFIX}/{job.id}"
        return BacktestOut.of(job)

    @router.get(
        "/{backtest_id}",
        dependencies=[requires("backtests:read")],
        response_model=BacktestOut,
        responses=problem_responses(404),
        summary="A backtest's status, and its report once done",
    )
    async def status(
        backtest_id: Annotated[str, Path(max_length=64)], tenant: Tenant
    ) -> BacktestOut:
        job = jobs.get(backtest_id, tenant)
        if job is None:
            raise NotFound(f"no backtest {backtest_id!r}", field="backtest_id", code="not-found")
        return BacktestOut.of(job)

    return router
