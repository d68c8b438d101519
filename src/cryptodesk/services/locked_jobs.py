"""One run of a scheduled job: under its cross-process lock, recorded in ``job_runs``.

Every scheduled job (prefetch, daily reports, account sync) runs the same way:
take the job's lock (``adapters/locks``), or record the run as ``skipped`` and
leave the work to the holder; renew the lease while the work lasts, so a slow
run does not lose it; record the outcome with the time of the next run.
"""

from __future__ import annotations

import asyncio
import os
import socket
from collections.abc import Awaitable, Callable
from typing import Protocol

import structlog

from cryptodesk.adapters.locks.base import JobLock
from cryptodesk.domain.jobs import JobRun, Outcome
from cryptodesk.domain.timeutil import now_ms

log = structlog.get_logger(__name__)
LOCK_TTL = 30.0
ERROR_CHARS = 1000


class RunRecorder(Protocol):
    async def record(self, run: JobRun) -> None: ...


def owner_name() -> str:
    """``host:pid``: which process recorded a run."""
    return f"{socket.gethostname()}:{os.getpid()}"


def error_text(exc: BaseException) -> str:
    text = str(exc) or type(exc).__name__
    return f"{type(exc).__name__}: {text}"[:ERROR_CHARS]


class LockedJobRunner:
    """Runs job bodies under their lock and records each run."""

    def __init__(
        self,
        runs: RunRecorder,
        lock: JobLock,
        *,
        lock_ttl: float = LOCK_TTL,
        owner: str | None = None,
        clock: Callable[[], int] = now_ms,
        next_run: Callable[[str], int | None] = lambda _name: None,
    ) -> None:
        if not lock_ttl > 0:
            raise ValueError("lock_ttl must be positive seconds")
        self._runs = runs
        self.lock = lock
        self._lock_ttl = lock_ttl
        self.owner = owner or owner_name()
        self._clock = clock
        self.next_run = next_run

    async def run(
        self,
        name: str,
        work: Callable[[], Awaitable[object]],
        *,
        on_error: Callable[[str], None] | None = None,
        on_success: Callable[[], None] | None = None,
    ) -> Outcome:
        """Run ``work`` once as job ``name``; the outcome is also recorded."""
        started = self._clock()
        try:
            token = await self.lock.acquire(name, ttl=self._lock_ttl)
        except Exception as exc:  # the lock's backend is down: nobody can tell who runs
            log.warning("job lock unavailable", job=name, error=repr(exc))
            return await self._record(name, started, "failed", f"cannot take the lock: {exc}")
        if token is None:
            log.debug("job held elsewhere, skipped", job=name)
            return await self._record(name, started, "skipped", None)
        renewing = asyncio.create_task(self._renew(name, token), name=f"lock-renew:{name}")
        outcome: Outcome = "ok"
        error: str | None = None
        try:
            await work()
            if on_success is not None:
                on_success()
        except Exception as exc:
            outcome, error = "failed", error_text(exc)
            log.warning("scheduled job failed", job=name, error=error)
            if on_error is not None:
                on_error(error)
        finally:
            renewing.cancel()
            await asyncio.gather(renewing, return_exceptions=True)
            try:
                await self.lock.release(name, token)
            except Exception as exc:  # the lease expires by itself
                log.warning("job lock not released", job=name, error=repr(exc))
        return await self._record(name, started, outcome, error)

    async def _renew(self, name: str, token: str) -> None:
        while True:
            await asyncio.sleep(self._lock_ttl / 3)
            try:
                held = await self.lock.extend(name, token, ttl=self._lock_ttl)
            except Exception as exc:
                log.warning("job lock not renewed", job=name, error=repr(exc))
                continue
            if not held:
                # Another process may run the job too now; the writes are
                # idempotent, so finishing this run does no harm.
                log.warning("job lock lost while running", job=name)
                return

    async def _record(
        self, name: str, started: int, outcome: Outcome, error: str | None
    ) -> Outcome:
        run = JobRun(name, self.owner, started, self._clock(), outcome, error, self.next_run(name))
        try:
            await self._runs.record(run)
        except Exception as exc:  # the run happened; only its record is lost
            log.warning("job run not recorded", job=name, outcome=outcome, error=repr(exc))
        return outcome
