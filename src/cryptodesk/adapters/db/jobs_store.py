"""Runs of scheduled jobs: one row per run, for ``cryptodesk jobs`` and the admin API.

Every scheduler process records its runs here (skipped ones too), so the
table is the one place that knows what ran where, how it ended and when the
next run is due, whichever process ran it. Each job keeps only its newest
``keep`` rows: a tickers job runs every few seconds and its history would
otherwise grow without bound.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence

from sqlalchemy import (
    delete,
    func,
    insert,
    select,
)
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncEngine

from cryptodesk.adapters.db.engine import storage_error
from cryptodesk.adapters.db.models import OWNER_LEN, job_runs
from cryptodesk.domain.jobs import JobRun, JobStatus

ERROR_CHARS = 1000
DEFAULT_KEEP = 500


class JobRunStore:
    """Writes and reads ``job_runs`` on the market store's engine."""

    def __init__(self, engine: AsyncEngine, *, keep: int = DEFAULT_KEEP) -> None:
        if keep < 1:
            raise ValueError("keep must be >= 1")
        self._engine = engine
        self._keep = keep

    async def record(self, run: JobRun) -> None:
        """Add ``run`` and drop the job's rows beyond the newest ``keep``."""
        error = None if run.error is None else run.error[:ERROR_CHARS]
        owner = run.owner[:OWNER_LEN]
        cutoff = (
            select(job_runs.c.id)
            .where(job_runs.c.job_id == run.job_id)
            .order_by(job_runs.c.id.desc())
            .offset(self._keep)
            .limit(1)
            .scalar_subquery()
        )
        try:
            async with self._engine.begin() as conn:
                await conn.execute(
                    insert(job_runs).values(
                        job_id=run.job_id,
                        owner=owner,
                        started_at=run.started_at,
                        finished_at=run.finished_at,
                        outcome=run.outcome,
                        error=error,
                        next_run_at=run.next_run_at,
                    )
                )
                await conn.execute(
                    delete(job_runs).where(job_runs.c.job_id == run.job_id, job_runs.c.id <= cutoff)
                )
        except (SQLAlchemyError, sqlite3.Error, OSError) as exc:
            raise storage_error(exc, self._engine.url) from exc

    async def runs(self, job_id: str, *, limit: int = 100) -> list[JobRun]:
        """The job's newest runs, newest first."""
        stmt = (
            select(*_RUN_COLUMNS)
            .where(job_runs.c.job_id == job_id)
            .order_by(job_runs.c.id.desc())
            .limit(limit)
        )
        try:
            async with self._engine.connect() as conn:
                rows = (await conn.execute(stmt)).all()
        except (SQLAlchemyError, sqlite3.Error, OSError) as exc:
            raise storage_error(exc, self._engine.url) from exc
        return [JobRun(*row) for row in rows]

    async def statuses(self, job_ids: Sequence[str] = ()) -> list[JobStatus]:
        """Every job in ``job_ids`` or with a recorded run, sorted by id."""
        newest = select(func.max(job_runs.c.id)).group_by(job_runs.c.job_id)
        latest_stmt = select(*_RUN_COLUMNS).where(job_runs.c.id.in_(newest))
        ok_stmt = (
            select(job_runs.c.job_id, func.max(job_runs.c.finished_at))
            .where(job_runs.c.outcome == "ok")
            .group_by(job_runs.c.job_id)
        )
        try:
            async with self._engine.connect() as conn:
                latest = [JobRun(*row) for row in (await conn.execute(latest_stmt)).all()]
                last_ok = {row[0]: int(row[1]) for row in (await conn.execute(ok_stmt)).all()}
        except (SQLAlchemyError, sqlite3.Error, OSError) as exc:
            raise storage_error(exc, self._engine.url) from exc
        found = {
            run.job_id: JobStatus(
                job_id=run.job_id,
                last_started_at=run.started_at,
                last_finished_at=run.finished_at,
                outcome=run.outcome,
                error=run.error,
                next_run_at=run.next_run_at,
                last_ok_at=last_ok.get(run.job_id),
                owner=run.owner,
            )
            for run in latest
        }
        for job_id in job_ids:
            found.setdefault(job_id, JobStatus(job_id))
        return [found[job_id] for job_id in sorted(found)]


_RUN_COLUMNS = (
    job_runs.c.job_id,
    job_runs.c.owner,
    job_runs.c.started_at,
    job_runs.c.finished_at,
    job_runs.c.outcome,
    job_runs.c.error,
    job_runs.c.next_run_at,
)
