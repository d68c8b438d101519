"""Backtests as background jobs: submitted by the API, run off the event loop, polled.

``submit`` checks the request at once (strategy, parameters, series) so a bad
one is refused before a job exists; the job then reads the stored candles,
replays them in a worker thread (``asyncio.to_thread``: the replay is CPU
work that would otherwise stall every other request) and keeps the report.

Jobs live in this process's memory, keyed by id, with their status
``queued`` -> ``running`` -> ``done`` | ``failed``. At most ``workers`` run at
once; the others wait as ``queued``. At most ``keep`` are kept: a new job
evicts the oldest finished one, and when every kept job is still unfinished
the submission is refused (503) rather than queueing without bound. A restart
forgets them; a client that lost its job submits it again.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

import structlog

from cryptodesk.adapters.db.base import MarketStore
from cryptodesk.analytics.backtest import BacktestConfig, BacktestError, run_backtest
from cryptodesk.analytics.backtest_report import report_dict
from cryptodesk.analytics.strategies import build_strategy
from cryptodesk.analytics.strategy import Strategy
from cryptodesk.domain.errors import DomainError
from cryptodesk.domain.market import Candle
from cryptodesk.domain.timeutil import now_ms, to_iso
from cryptodesk.services.candle_import import Series, stored_candles
from cryptodesk.services.market_queries import Unavailable

log = structlog.get_logger(__name__)
JobState = Literal["queued", "running", "done", "failed"]


@dataclass(frozen=True, slots=True)
class BacktestRequest:
    """What to replay; ``start`` inclusive and ``end`` exclusive open times (epoch ms)."""

    strategy: str
    params: Mapping[str, object]
    exchange: str
    symbol: str
    interval: str
    start: int | None = None
    end: int | None = None
    config: BacktestConfig = field(default_factory=BacktestConfig)


@dataclass(slots=True)
class BacktestJob:
    id: str
    request: BacktestRequest
    params: dict[str, Any]  # the strategy's parameters as used, defaults included
    created_at: int
    status: JobState = "queued"
    started_at: int | None = None
    finished_at: int | None = None
    report: dict[str, Any] | None = None
    error: str | None = None
    traceback: str | None = None
    tenant: str = "default"  # who asked: only that tenant reads it back

    @property
    def finished(self) -> bool:
        return self.status in ("done", "failed")


def _replay(
    candles: list[Candle], strategy: Strategy, config: BacktestConfig, series: Series
) -> dict[str, Any]:
    """The worker thread's part: the replay and the report built from it."""
    result = run_backtest(candles, strategy, config, interval_ms=series.interval.ms)
    data = {"source": "db", "exchange": series.exchange, "symbol": series.symbol,
            "interval": series.interval.name}  # fmt: skip
    return report_dict(result, data=data)


class BacktestJobs:
    """The jobs of this process over one market store."""

    def __init__(
        self,
        store: MarketStore,
        *,
        keep: int = 100,
        workers: int = 1,
        clock: Callable[[], int] = now_ms,
        new_id: Callable[[], str] = lambda: uuid.uuid4().hex,
    ) -> None:
        self._store = store
        self._keep = keep
        self._slots = asyncio.Semaphore(workers)
        self._clock = clock
        self._new_id = new_id
        self._jobs: dict[str, BacktestJob] = {}
        self._tasks: dict[str, asyncio.Task[None]] = {}

    def get(self, job_id: str, tenant: str = "default") -> BacktestJob | None:
        """The job, when ``tenant`` submitted it (another tenant's looks absent)."""
        job = self._jobs.get(job_id)
        return job if job is not None and job.tenant == tenant else None

    def submit(self, request: BacktestRequest, tenant: str = "default") -> BacktestJob:
        """Check the request and start its job; DomainError (400) names a bad field."""
        strategy = build_strategy(request.strategy, request.params)
        series = Series.parse(request.exchange, request.symbol, request.interval)
        if request.start is not None and request.end is not None and request.start >= request.end:
            raise DomainError("start must be before end", field="start")
        self._make_room()
        job = BacktestJob(
            self._new_id(), request, strategy.values, created_at=self._clock(), tenant=tenant
        )
        self._jobs[job.id] = job
        task = asyncio.create_task(self._run(job, strategy, series), name=f"backtest {job.id}")
        self._tasks[job.id] = task
        task.add_done_callback(lambda _: self._tasks.pop(job.id, None))
        return job

    async def wait(self, job_id: str) -> BacktestJob | None:
        """The job once finished (None if unknown); cancelling the wait leaves the job be."""
        task = self._tasks.get(job_id)
        if task is not None:
            await asyncio.wait({task})
        return self._jobs.get(job_id)

    def _make_room(self) -> None:
        while len(self._jobs) >= self._keep:
            oldest = next((j for j in self._jobs.values() if j.finished), None)
            if oldest is None:
                raise Unavailable(
                    f"{len(self._jobs)} backtests are still queued or running; retry later",
                    field=None,
                    code="service-unavailable",
                )
            del self._jobs[oldest.id]

    async def _run(self, job: BacktestJob, strategy: Strategy, series: Series) -> None:
        try:
            async with self._slots:
                job.status, job.started_at = "running", self._clock()
                candles = await self._candles(series, job.request)
                job.report = await asyncio.to_thread(
                    _replay, candles, strategy, job.request.config, series
                )
                job.status = "done"
        except BacktestError as exc:
            job.status, job.error, job.traceback = "failed", str(exc), exc.traceback
        except DomainError as exc:
            job.status, job.error = "failed", str(exc)
        except asyncio.CancelledError:
            job.status, job.error = "failed", "cancelled: the server stopped"
            raise
        except Exception as exc:
            log.exception("backtest failed", job=job.id)
            job.status, job.error = "failed", f"{type(exc).__name__}: {exc}"
        finally:
            job.finished_at = self._clock()

    async def _candles(self, series: Series, request: BacktestRequest) -> list[Candle]:
        pages = stored_candles(self._store, series, start=request.start, end=request.end)
        candles = [c async for page in pages for c in page]
        if not candles:
            raise DomainError(self._nothing_stored(series, request))
        return candles

    @staticmethod
    def _nothing_stored(series: Series, request: BacktestRequest) -> str:
        window = ""
        if request.start is not None or request.end is not None:
            lo = "" if request.start is None else to_iso(request.start)
            hi = "" if request.end is None else to_iso(request.end)
            window = f" in [{lo}, {hi})"
        return f"no {series.exchange} {series.symbol} {series.interval} candles stored{window}"

    async def close(self) -> None:
        """Cancel every unfinished job (a replay already in its thread runs to its end)."""
        for task in list(self._tasks.values()):
            task.cancel()
        for task in list(self._tasks.values()):
            with contextlib.suppress(asyncio.CancelledError):
                await task
        for job in self._jobs.values():
            if not job.finished:  # cancelled before it started
                job.status, job.error = "failed", "cancelled: the server stopped"
                job.finished_at = self._clock()
