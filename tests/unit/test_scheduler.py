import asyncio

from cryptodesk.observability.health import HealthRegistry
from cryptodesk.observability.metrics import Metrics
from cryptodesk.services.scheduler import MaintenanceScheduler


async def test_jobs_run_at_start_and_on_interval_and_failures_show_in_health():
    calls: list[str] = []

    async def good() -> str:
        calls.append("good")
        return "ok"

    async def bad() -> None:
        calls.append("bad")
        raise RuntimeError("disk full")

    health = HealthRegistry(Metrics())
    scheduler = MaintenanceScheduler({"good": good, "bad": bad}, health, interval=0.05)
    stop = asyncio.Event()
    task = asyncio.create_task(scheduler.run(stop))
    while scheduler.runs < 2:  # noqa: ASYNC110 - polling a counter
        await asyncio.sleep(0.01)
    stop.set()
    await asyncio.wait_for(task, 1)
    assert calls[:4] == ["good", "bad", "good", "bad"]
    status = (await health.check_all())["scheduler"]
    assert not status.ok
    assert "bad: disk full" in status.detail


async def test_a_failed_run_is_retried_sooner_and_recovery_clears_health():
    attempts = 0

    async def flaky() -> str:
        nonlocal attempts
        attempts += 1
        if attempts < 3:
            raise ConnectionRefusedError("database down")
        return "ok"

    health = HealthRegistry(Metrics())
    # An interval no test waits for: only the failure backoff can bring the retries.
    scheduler = MaintenanceScheduler(
        {"partitions": flaky}, health, interval=3600, retry_initial=0.01, retry_cap=0.02
    )
    stop = asyncio.Event()
    task = asyncio.create_task(scheduler.run(stop))
    async with asyncio.timeout(10):  # fails here if failures wait for the interval
        while scheduler.runs < 3:  # noqa: ASYNC110 - polling a counter
            await asyncio.sleep(0.01)
    status = (await health.check_all())["scheduler"]
    stop.set()
    await asyncio.wait_for(task, 1)
    assert attempts == 3
    assert status.ok
