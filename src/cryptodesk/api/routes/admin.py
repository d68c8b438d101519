"""``/api/v1/admin``: operator views; today the scheduled jobs.

The route only translates ``JobStatus`` records to the wire form; reading
them (and a database outage as 503) is ``services.jobs.list_jobs``.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Literal

from fastapi import APIRouter
from pydantic import BaseModel, ConfigDict, Field

from cryptodesk.api import examples as ex
from cryptodesk.api.routes.market import problem_responses
from cryptodesk.api.security import requires
from cryptodesk.domain.jobs import JobStatus
from cryptodesk.domain.timeutil import to_iso


def _iso(ts: int | None) -> str | None:
    return None if ts is None else to_iso(ts)


class JobOut(BaseModel):
    model_config = ConfigDict(frozen=True, json_schema_extra={"examples": [ex.JOB]})

    job: str = Field(examples=["candles:binance"], description="KIND:EXCHANGE.")
    outcome: Literal["ok", "failed", "skipped"] | None = Field(
        examples=["ok"],
        description="Of the newest run; skipped: another process held the job's lock. "
        "Null: never ran.",
    )
    last_started_at: str | None = Field(examples=["2024-05-01T12:00:00.000Z"])
    last_finished_at: str | None = Field(examples=["2024-05-01T12:00:02.345Z"])
    next_run_at: str | None = Field(
        examples=["2024-05-01T12:55:00.000Z"], description="As the last recording scheduler saw it."
    )
    last_ok_at: str | None = Field(
        examples=["2024-05-01T12:00:02.345Z"], description="End of the newest successful run."
    )
    error: str | None = Field(examples=[None], description="Why the newest run failed.")
    owner: str | None = Field(examples=["host-1:4242"], description="host:pid that recorded it.")

    @classmethod
    def of(cls, s: JobStatus) -> JobOut:
        return cls(
            job=s.job_id,
            outcome=s.outcome,
            last_started_at=_iso(s.last_started_at),
            last_finished_at=_iso(s.last_finished_at),
            next_run_at=_iso(s.next_run_at),
            last_ok_at=_iso(s.last_ok_at),
            error=s.error,
            owner=s.owner,
        )


class JobsResponse(BaseModel):
    model_config = ConfigDict(frozen=True, json_schema_extra={"examples": [{"jobs": [ex.JOB]}]})

    jobs: list[JobOut]


def admin_router(list_jobs: Callable[[], Awaitable[list[JobStatus]]]) -> APIRouter:
    """``list_jobs``: e.g. ``lambda: jobs.list_jobs(JobRunStore(engine), settings.exchanges)``."""
    router = APIRouter(prefix="/api/v1/admin", tags=["admin"])

    @router.get(
        "/jobs",
        dependencies=[requires("jobs:read")],
        response_model=JobsResponse,
        responses=problem_responses(503),
        summary="Scheduled jobs: last run, outcome, next run",
    )
    async def jobs() -> JobsResponse:
        return JobsResponse(jobs=[JobOut.of(s) for s in await list_jobs()])

    return router
