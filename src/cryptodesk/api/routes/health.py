"""Operational endpoints outside ``/api/v1``: liveness, readiness, metrics.

``/healthz`` answers whenever the process serves HTTP (restart me if not);
``/readyz`` probes the backends (stop routing traffic to me while 503).
"""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import JSONResponse
from starlette.responses import Response

from cryptodesk.api.schemas import ComponentOut, Liveness, Readiness
from cryptodesk.api.security import requires
from cryptodesk.observability.health import HealthRegistry, all_up, degraded
from cryptodesk.observability.metrics import CONTENT_TYPE_LATEST, Metrics


def health_router(
    health: HealthRegistry, metrics: Metrics, *, check_timeout: float = 2.0
) -> APIRouter:
    router = APIRouter(tags=["operations"])

    @router.get(
        "/healthz",
        response_model=Liveness,
        summary="Liveness",
        dependencies=[requires("public")],
    )
    async def healthz() -> Liveness:
        return Liveness()

    @router.get(
        "/readyz",
        dependencies=[requires("public")],
        response_model=Readiness,
        summary="Readiness: every component's health",
        responses={503: {"model": Readiness, "description": "A component is down."}},
    )
    async def readyz() -> JSONResponse:
        results = await health.check_all(timeout=check_timeout)
        ready = all_up(results)
        body = Readiness(
            status=("degraded" if degraded(results) else "ready") if ready else "not_ready",
            components=[ComponentOut.of(h) for h in results.values()],
        )
        return JSONResponse(body.model_dump(), status_code=200 if ready else 503)

    @router.get(
        "/metrics",
        dependencies=[requires("public")],
        summary="Prometheus metrics",
        response_class=Response,
        responses={200: {"content": {CONTENT_TYPE_LATEST: {}}}},
    )
    async def prometheus_metrics() -> Response:
        return Response(metrics.render(), media_type=CONTENT_TYPE_LATEST)

    return router
