"""Jobs at fixed times or intervals (daily PnL report, account sync) for the scheduler role.

Each job runs through a ``LockedJobRunner``, so with several scheduler
processes exactly one does the work and the others record ``skipped``.
Times are UTC: a daily job at ``00:05`` runs at 00:05 UTC whatever the host's
zone, and a run missed by less than an hour (the process was suspended) still
happens once.
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

import structlog
from apscheduler.schedulers.asyncio import AsyncIOScheduler  # type: ignore[import-untyped]
from apscheduler.triggers.cron import CronTrigger  # type: ignore[import-untyped]
from apscheduler.triggers.interval import IntervalTrigger  # type: ignore[import-untyped]

from cryptodesk.domain.jobs import Outcome
from cryptodesk.services.locked_jobs import LockedJobRunner

log = structlog.get_logger(__name__)
DAILY_GRACE_SECONDS = 3600


@dataclass(frozen=True, slots=True)
class ScheduledJob:
    """``at``: a daily UTC time ``HH:MM``; else ``every`` seconds (first run at start)."""

    job_id: str
    work: Callable[[], Awaitable[object]]
    at: str = ""
    every: float = 0.0

    def __post_init__(self) -> None:
        if bool(self.at) == (self.every > 0):
            raise ValueError(f"job {self.job_id}: give exactly one of at / every")


def daily_at(text: str) -> tuple[int, int]:
    hour, _, minute = text.partition(":")
    h, m = int(hour), int(minute)
    if not (0 <= h < 24 and 0 <= m < 60):
        raise ValueError(f"{text!r} is not a time HH:MM")
    return h, m


class ScheduledJobs:
    def __init__(self, jobs: Sequence[ScheduledJob], runner: LockedJobRunner) -> None:
        self._jobs = {job.job_id: job for job in jobs}
        self._runner = runner
        runner.next_run = self._next_run
        self._scheduler: AsyncIOScheduler | None = None
        self._running: set[asyncio.Task[object]] = set()

    @property
    def job_ids(self) -> list[str]:
        return list(self._jobs)

    async def run_job(self, job_id: str) -> Outcome:
        job = self._jobs.get(job_id)
        if job is None:
            raise ValueError(f"unknown job {job_id!r}")
        return await self._runner.run(job_id, job.work)

    def _next_run(self, job_id: str) -> int | None:
        if self._scheduler is None:
            return None
        job = self._scheduler.get_job(job_id)
        when: datetime | None = None if job is None else job.next_run_time
        return None if when is None else int(when.timestamp() * 1000)

    def start(self) -> None:
        if self._scheduler is not None:
            raise RuntimeError("already started")
        logging.getLogger("apscheduler").setLevel(logging.WARNING)
        scheduler = AsyncIOScheduler(timezone=UTC)
        for job in self._jobs.values():
            if job.at:
                hour, minute = daily_at(job.at)
                trigger = CronTrigger(hour=hour, minute=minute, timezone=UTC)
                extra: dict[str, object] = {"misfire_grace_time": DAILY_GRACE_SECONDS}
            else:
                trigger = IntervalTrigger(seconds=job.every, timezone=UTC)
                extra = {
                    "misfire_grace_time": max(1, math.ceil(job.every)),
                    "next_run_time": datetime.now(UTC),
                }
            scheduler.add_job(
                self._scheduled, trigger=trigger, args=[job.job_id], id=job.job_id,
                name=job.job_id, coalesce=True, max_instances=1, **extra,
            )  # fmt: skip
        scheduler.start()
        self._scheduler = scheduler
        log.info("jobs scheduled", jobs=list(self._jobs), owner=self._runner.owner)

    async def _scheduled(self, job_id: str) -> None:
        task = asyncio.current_task()
        if task is not None:
            self._running.add(task)
        try:
            await self.run_job(job_id)
        finally:
            if task is not None:
                self._running.discard(task)

    async def stop(self, timeout: float = 10.0) -> None:
        scheduler, self._scheduler = self._scheduler, None
        if scheduler is None:
            return
        scheduler.pause()
        if self._running:
            await asyncio.wait(set(self._running), timeout=timeout)
        scheduler.shutdown(wait=False)
        await asyncio.sleep(0)

    async def run(self, stop: asyncio.Event) -> None:
        self.start()
        try:
            await stop.wait()
        finally:
            await self.stop()
