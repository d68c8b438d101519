"""HealthRegistry and the /healthz, /readyz endpoints."""

from __future__ import annotations

import asyncio

from cryptodesk.observability.health import HealthRegistry, all_up
from cryptodesk.observability.metrics import Metrics
from tests.unit._fakes import Harness


async def ok() -> None:
    return None


async def refused() -> None:
    raise ConnectionError("connection refused")


async def hangs() -> None:
    await asyncio.Event().wait()


def up_gauge(metrics: Metrics, name: str) -> float | None:
    return metrics.registry.get_sample_value("cryptodesk_component_up", {"component": name})


async def test_check_all_reports_each_component():
    metrics = Metrics()
    health = HealthRegistry(metrics)
    health.register("database", ok)
    health.register("cache", refused)
    health.register("bus", hangs)
    results = await health.check_all(timeout=0.05)
    assert list(results) == ["bus", "cache", "database"]
    assert results["database"].ok
    assert results["database"].detail is None
    assert results["database"].latency_ms is not None
    assert results["cache"].status == "down"
    assert results["cache"].detail == "ConnectionError: connection refused"
    assert results["bus"].detail == "check timed out after 0.05s"
    assert not all_up(results)
    assert [up_gauge(metrics, n) for n in ("database", "cache", "bus")] == [1.0, 0.0, 0.0]


async def test_checks_run_concurrently():
    # "a" can only finish once "b" has started: run one after the other, "a" times out.
    b_started = asyncio.Event()

    async def a() -> None:
        await b_started.wait()

    async def b() -> None:
        b_started.set()

    health = HealthRegistry(Metrics())
    health.register("a", a)
    health.register("b", b)
    results = await health.check_all(timeout=5)
    assert all_up(results)


async def test_self_reported_status_and_its_combination_with_a_check():
    metrics = Metrics()
    health = HealthRegistry(metrics)
    health.set_status("compute", True, "running")
    assert up_gauge(metrics, "compute") == 1.0
    results = await health.check_all()
    assert results["compute"].ok
    assert results["compute"].latency_ms is None

    health.register("database", ok)
    health.set_status("database", False, "writes failing: disk full")
    health.set_status("compute", False, "store trades failing")
    results = await health.check_all()
    assert results["database"].detail == "writes failing: disk full"
    assert not results["database"].ok
    assert not results["compute"].ok
    assert up_gauge(metrics, "database") == 0.0

    health.set_status("database", True, "")
    assert (await health.check_all())["database"].ok


async def test_healthz_is_up_even_when_a_component_is_down():
    h = Harness()
    h.health.register("database", refused)
    async with h.client() as client:
        r = await client.get("/healthz")
    assert (r.status_code, r.json()) == (200, {"status": "ok"})


async def test_readyz_is_200_when_all_components_are_up():
    h = Harness()
    h.health.register("database", ok)
    h.health.set_status("compute", True, "running")
    async with h.client() as client:
        r = await client.get("/readyz")
    assert r.status_code == 200
    body = r.json()
    assert body["status"] == "ready"
    assert [(c["name"], c["status"], c["error"]) for c in body["components"]] == [
        ("compute", "up", None),
        ("database", "up", None),
    ]
    assert body["components"][0]["latency_ms"] is None
    assert isinstance(body["components"][1]["latency_ms"], float)


async def test_readyz_is_503_when_a_check_fails_or_times_out():
    h = Harness()  # readiness_timeout=0.05
    h.health.register("database", ok)
    h.health.register("cache", refused)
    h.health.register("bus", hangs)
    async with h.client() as client:
        r = await client.get("/readyz")
    assert r.status_code == 503
    body = r.json()
    assert body["status"] == "not_ready"
    by_name = {c["name"]: c for c in body["components"]}
    assert by_name["database"]["status"] == "up"
    assert by_name["cache"] == {
        "name": "cache",
        "status": "down",
        "latency_ms": by_name["cache"]["latency_ms"],
        "error": "ConnectionError: connection refused",
        "required": True,
    }
    assert by_name["bus"]["status"] == "down"
    assert "timed out" in by_name["bus"]["error"]


async def test_readyz_is_503_when_a_component_reports_itself_down():
    h = Harness()
    h.health.set_status("compute", False, "store trades failing: database is locked")
    async with h.client() as client:
        r = await client.get("/readyz")
    assert r.status_code == 503
    assert r.json()["components"][0]["error"] == "store trades failing: database is locked"


async def test_optional_component_down_means_degraded_not_unready():
    from cryptodesk.observability.health import HealthRegistry, all_up, degraded
    from cryptodesk.observability.metrics import Metrics

    async def up() -> None:
        return None

    async def down() -> None:
        raise ConnectionError("redis refused")

    health = HealthRegistry(Metrics())
    health.register("database", up)
    health.register("cache", down, required=False)
    results = await health.check_all()
    assert all_up(results)
    assert degraded(results)
    assert results["cache"].required is False
    assert "redis refused" in (results["cache"].detail or "")
    health.register("bus", down)
    results = await health.check_all()
    assert not all_up(results)
