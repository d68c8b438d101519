"""GET /api/v1/admin/jobs over ASGI: the wire form of job statuses, and a 503."""

from __future__ import annotations

import httpx
from fastapi import FastAPI

from cryptodesk.api.problems import PROBLEM_MEDIA_TYPE, install_problem_handlers
from cryptodesk.api.routes.admin import admin_router
from cryptodesk.domain.jobs import JobStatus
from cryptodesk.services.market_queries import Unavailable
from tests.unit._auth import fresh_logins

T0 = 1_704_067_200_000


def app_with(statuses: list[JobStatus] | Exception) -> FastAPI:
    async def list_jobs() -> list[JobStatus]:
        if isinstance(statuses, Exception):
            raise statuses
        return statuses

    app = FastAPI()
    app.include_router(admin_router(list_jobs))
    install_problem_handlers(app)
    return app


async def get(app: FastAPI) -> httpx.Response:
    logins = fresh_logins()
    app.state.auth = logins.auth
    transport = httpx.ASGITransport(app=app)
    auth = logins.bearer("default", "admin")
    async with httpx.AsyncClient(transport=transport, base_url="http://test", auth=auth) as client:
        return await client.get("/api/v1/admin/jobs")


async def test_jobs_are_listed_with_iso_times() -> None:
    response = await get(
        app_with(
            [
                JobStatus("candles:binance", T0, T0 + 1500, "failed", "HTTP 502", T0 + 3_300_000,
                          T0 - 3_300_000, "host:7"),
                JobStatus("markets:binance"),
            ]
        )
    )  # fmt: skip
    assert response.status_code == 200
    assert response.json() == {
        "jobs": [
            {
                "job": "candles:binance",
                "outcome": "failed",
                "last_started_at": "2024-01-01T00:00:00.000Z",
                "last_finished_at": "2024-01-01T00:00:01.500Z",
                "next_run_at": "2024-01-01T00:55:00.000Z",
                "last_ok_at": "2023-12-31T23:05:00.000Z",
                "error": "HTTP 502",
                "owner": "host:7",
            },
            {
                "job": "markets:binance",
                "outcome": None,
                "last_started_at": None,
                "last_finished_at": None,
                "next_run_at": None,
                "last_ok_at": None,
                "error": None,
                "owner": None,
            },
        ]
    }


async def test_an_unreadable_database_is_a_503_problem() -> None:
    down = Unavailable("the database is unavailable; retry shortly", field=None,
                       code="service-unavailable")  # fmt: skip
    response = await get(app_with(down))
    assert response.status_code == 503
    assert response.headers["content-type"].startswith(PROBLEM_MEDIA_TYPE)
    assert response.json()["detail"] == "the database is unavailable; retry shortly"


def test_the_route_is_documented() -> None:
    schema = app_with([]).openapi()
    assert "/api/v1/admin/jobs" in schema["paths"]
    assert "JobsResponse" in schema["components"]["schemas"]
