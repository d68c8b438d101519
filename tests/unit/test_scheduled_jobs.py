"""Daily and interval jobs: run under the lock, recorded, next run at the UTC time."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import pytest

from cryptodesk.adapters.locks.memory import MemoryJobLock
from cryptodesk.domain.jobs import JobRun
from cryptodesk.services.locked_jobs import LockedJobRunner
from cryptodesk.services.scheduled_jobs import ScheduledJob, ScheduledJobs, daily_at


class Recorder:
    def __init__(self) -> None:
        self.runs: list[JobRun] = []

    async def record(self, run: JobRun) -> None:
        self.runs.append(run)


def test_a_job_has_exactly_one_schedule() -> None:
    async def work() -> None:
        return None

    with pytest.raises(ValueError, match="exactly one"):
        ScheduledJob("x", work)
    with pytest.raises(ValueError, match="exactly one"):
        ScheduledJob("x", work, at="00:05", every=60)
    with pytest.raises(ValueError, match="HH:MM"):
        daily_at("24:00")
    assert daily_at("00:05") == (0, 5)


async def test_runs_record_outcomes_and_a_held_lock_skips() -> None:
    calls: list[str] = []

    async def ok() -> None:
        calls.append("ok")

    async def boom() -> None:
        raise RuntimeError("sheet unreachable")

    recorder = Recorder()
    lock = MemoryJobLock()
    jobs = ScheduledJobs(
        [
            ScheduledJob("pnl-report:daily", ok, at="00:05"),
            ScheduledJob("sync:all", boom, every=60),
        ],
        LockedJobRunner(recorder, lock, owner="me", clock=lambda: 1_000),
    )
    assert await jobs.run_job("pnl-report:daily") == "ok"
    assert await jobs.run_job("sync:all") == "failed"
    token = await lock.acquire("pnl-report:daily", ttl=30)
    assert token is not None
    assert await jobs.run_job("pnl-report:daily") == "skipped"
    assert calls == ["ok"]
    assert [(r.job_id, r.outcome, r.error) for r in recorder.runs] == [
        ("pnl-report:daily", "ok", None),
        ("sync:all", "failed", "RuntimeError: sheet unreachable"),
        ("pnl-report:daily", "skipped", None),
    ]
    with pytest.raises(ValueError, match="unknown job"):
        await jobs.run_job("nope")


async def test_daily_job_is_scheduled_at_the_next_utc_time_and_interval_jobs_run_at_once() -> None:
    ran = asyncio.Event()

    async def work() -> None:
        ran.set()

    async def nothing() -> None:
        return None

    recorder = Recorder()
    jobs = ScheduledJobs(
        [
            ScheduledJob("pnl-report:daily", nothing, at="00:05"),
            ScheduledJob("s", work, every=3600),
        ],
        LockedJobRunner(recorder, MemoryJobLock(), owner="me"),
    )
    stop = asyncio.Event()
    task = asyncio.create_task(jobs.run(stop))
    await asyncio.wait_for(ran.wait(), 10)
    now = datetime.now(UTC)
    expected = (now + timedelta(days=1) if (now.hour, now.minute) >= (0, 5) else now).replace(
        hour=0, minute=5, second=0, microsecond=0
    )
    assert jobs._next_run("pnl-report:daily") == int(expected.timestamp() * 1000)
    stop.set()
    await asyncio.wait_for(task, 10)
    assert jobs._next_run("pnl-report:daily") is None
    assert [r.job_id for r in recorder.runs] == ["s"]
