"""The scheduler role: periodic maintenance that must run in one place.

Monthly database partitions are created ahead of time (PostgreSQL; a no-op on
SQLite), once at start and then every ``interval`` seconds; reference prices
are refreshed the same way by an instance of their own. A run in
which a job failed (the database was down, say) is repeated sooner, after a
backoff with full jitter, so the scheduler does not stay reported down for a
whole interval once the cause is gone.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping

import structlog

from cryptodesk.observability.health import HealthRegistry
from cryptodesk.services.retry import backoff_delays

log = structlog.get_logger(__name__)
COMPONENT = "scheduler"


class MaintenanceScheduler:
    def __init__(
        self,
        jobs: Mapping[str, Callable[[], Awaitable[object]]],
        health: HealthRegistry,
        *,
        interval: float = 3600.0,
        retry_initial: float = 5.0,
        retry_cap: float = 300.0,
        component: str = COMPONENT,
        required: bool = True,
    ) -> None:
        """``component``: the name /readyz reports the jobs' state under."""
        self._jobs = jobs
        self._component = component
        self._required = required
        self._health = health
        self._interval = interval
        self._retry = (retry_initial, retry_cap)
        self.runs = 0

    async def run_once(self) -> bool:
        """Run every job once; True when all of them succeeded."""
        failures = []
        for name, job in self._jobs.items():
            try:
                result = await job()
                log.info("maintenance job done", job=name, result=result)
            except Exception as exc:  # one failing job must not stop the others
                log.error("maintenance job failed", job=name, error=str(exc))
                failures.append(f"{name}: {exc}")
        self.runs += 1
        self._health.set_status(
            self._component, not failures, "; ".join(failures) or "ok", required=self._required
        )
        return not failures

    async def run(self, stop: asyncio.Event) -> None:
        delays = backoff_delays(*self._retry)
        while not stop.is_set():
            if await self.run_once():
                delays = backoff_delays(*self._retry)
                wait = self._interval
            else:
                wait = min(self._interval, next(delays))
            try:
                await asyncio.wait_for(stop.wait(), wait)
            except TimeoutError:
                continue
