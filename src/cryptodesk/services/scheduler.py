"""The scheduler role: periodic maintenance that must run in one place.

Today: monthly database partitions are created ahead of time (PostgreSQL; a
no-op on SQLite), once at start and then every ``interval`` seconds.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping

import structlog

from cryptodesk.observability.health import HealthRegistry

log = structlog.get_logger(__name__)
COMPONENT = "scheduler"


class MaintenanceScheduler:
    def __init__(
        self,
        jobs: Mapping[str, Callable[[], Awaitable[object]]],
        health: HealthRegistry,
        *,
        interval: float = 3600.0,
    ) -> None:
        self._jobs = jobs
        self._health = health
        self._interval = interval
        self.runs = 0

    async def run_once(self) -> None:
        failures = []
        for name, job in self._jobs.items():
            try:
                result = await job()
                log.info("maintenance job done", job=name, result=result)
            except Exception as exc:  # one failing job must not stop the others
                log.error("maintenance job failed", job=name, error=str(exc))
                failures.append(f"{name}: {exc}")
        self.runs += 1
        self._health.set_status(COMPONENT, not failures, "; ".join(failures) or "ok")

    async def run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            await self.run_once()
            try:
                await asyncio.wait_for(stop.wait(), self._interval)
            except TimeoutError:
                continue
