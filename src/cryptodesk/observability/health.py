"""Component health for ``/readyz`` and the ``cryptodesk_component_up`` gauge.

Two kinds of component: those with a check that can be probed (database,
cache, bus: ``register``) and long-running loops that know their own state
better than any probe (the compute loop marks itself degraded while its
writes are failing: ``set_status``). A name may have both; it is up only
when both say so.

A check may return a number: the component's own latency in milliseconds,
reported instead of the probe's round trip. An exchange feed returns the age
of its newest event, which is what "how late is this feed" means.
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from cryptodesk.domain.timeutil import now_ms
from cryptodesk.observability.metrics import Metrics

Check = Callable[[], Awaitable[object]]
_MAX_DETAIL = 300  # an error message, not a traceback, goes on the wire


@dataclass(frozen=True, slots=True)
class ComponentHealth:
    """One component's state; ``detail`` is the error or the reported reason."""

    name: str
    ok: bool
    detail: str | None = None
    latency_ms: float | None = None
    checked_at_ms: int = 0
    required: bool = True

    @property
    def status(self) -> str:
        return "up" if self.ok else "down"


@dataclass(frozen=True, slots=True)
class _Reported:
    ok: bool
    detail: str
    at_ms: int


class HealthRegistry:
    def __init__(self, metrics: Metrics) -> None:
        self._metrics = metrics
        self._checks: dict[str, Check] = {}
        self._reported: dict[str, _Reported] = {}
        self._optional: set[str] = set()

    def register(self, name: str, check: Check, *, required: bool = True) -> None:
        """Probe ``check`` on every ``check_all``; it raises (or hangs) when unhealthy.

        An optional component (the cache: reads fall back to the database) being
        down makes the process degraded, not unready.
        """
        self._checks[name] = check
        if required:
            self._optional.discard(name)
        else:
            self._optional.add(name)

    def set_status(self, name: str, ok: bool, detail: str = "", *, required: bool = True) -> None:
        """Record a component's own view of itself, e.g. ``(False, "db writes failing")``;
        an optional one down makes the process degraded, not unready."""
        if not required:
            self._optional.add(name)
        self._reported[name] = _Reported(ok, detail, now_ms())
        self._metrics.component_up.labels(name).set(1 if ok else 0)

    def forget(self, name: str) -> None:
        """Drop a self-reported status (e.g. "starting" once the process is up)."""
        self._reported.pop(name, None)

    async def check_all(self, timeout: float = 2.0) -> dict[str, ComponentHealth]:
        """Probe every registered check concurrently, each bounded by ``timeout`` seconds.

        A check that hangs is reported down rather than holding the readiness
        probe hostage: orchestrators time out probes themselves and would read
        a slow answer as a dead process.
        """
        names = sorted(self._checks)
        probed = await asyncio.gather(*(self._probe(n, self._checks[n], timeout) for n in names))
        results = dict(zip(names, probed, strict=True))
        for name, rep in self._reported.items():
            probe = results.get(name)
            if probe is None:
                results[name] = ComponentHealth(name, rep.ok, rep.detail or None, None, rep.at_ms)
            elif not rep.ok:
                results[name] = ComponentHealth(
                    name,
                    False,
                    rep.detail or "reported down",
                    probe.latency_ms,
                    probe.checked_at_ms,
                )
        for name, health in results.items():
            self._metrics.component_up.labels(name).set(1 if health.ok else 0)
            if name in self._optional:
                results[name] = dataclasses.replace(health, required=False)
        return dict(sorted(results.items()))

    async def _probe(self, name: str, check: Check, timeout: float) -> ComponentHealth:
        began = time.perf_counter()
        try:
            reported = await asyncio.wait_for(check(), timeout)
        except TimeoutError:
            return self._result(name, began, f"check timed out after {timeout:g}s")
        except Exception as exc:
            return self._result(name, began, f"{type(exc).__name__}: {exc}"[:_MAX_DETAIL])
        own = float(reported) if isinstance(reported, int | float) else None
        return self._result(name, began, None, own)

    @staticmethod
    def _result(
        name: str, began: float, error: str | None, own_latency: float | None = None
    ) -> ComponentHealth:
        latency = own_latency if own_latency is not None else (time.perf_counter() - began) * 1000
        return ComponentHealth(name, error is None, error, round(latency, 3), now_ms())


def all_up(results: dict[str, ComponentHealth]) -> bool:
    """Every required component is up (optional ones may be down: degraded)."""
    return all(h.ok for h in results.values() if h.required)


def degraded(results: dict[str, ComponentHealth]) -> bool:
    return any(not h.ok for h in results.values() if not h.required)
