"""Scheduled jobs by name, and their status for ``cryptodesk jobs`` and the admin API.

A job id is ``KIND:EXCHANGE`` (``candles:binance``). The configured jobs are
listed even before their first run, so an operator sees what should be
running, not only what has run.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

import structlog

from cryptodesk.adapters.db.engine import StorageError
from cryptodesk.domain.jobs import JobStatus
from cryptodesk.services.market_queries import Unavailable

log = structlog.get_logger(__name__)
JOB_KINDS = ("candles", "tickers", "markets")
# Exchanges with no REST history to prefetch.
NOT_PREFETCHED = frozenset({"sim", "replay"})


def job_id(kind: str, exchange: str) -> str:
    return f"{kind}:{exchange}"


def split_job_id(name: str) -> tuple[str, str]:
    kind, sep, exchange = name.partition(":")
    if not sep or kind not in JOB_KINDS or not exchange:
        raise ValueError(f"unknown job {name!r}")
    return kind, exchange


def prefetched_exchanges(exchanges: Sequence[str]) -> list[str]:
    """The configured exchanges that get prefetch jobs (every one but sim and replay)."""
    return [e for e in exchanges if e.split(":", 1)[0] not in NOT_PREFETCHED]


def configured_job_ids(exchanges: Sequence[str]) -> list[str]:
    return [job_id(kind, e) for e in prefetched_exchanges(exchanges) for kind in JOB_KINDS]


class JobStatusReader(Protocol):
    async def statuses(self, job_ids: Sequence[str] = ()) -> list[JobStatus]: ...


async def list_jobs(
    runs: JobStatusReader, exchanges: Sequence[str] = (), other_jobs: Sequence[str] = ()
) -> list[JobStatus]:
    """Every configured job plus any other with recorded runs, sorted by id.

    Raises ``Unavailable`` (HTTP 503) when the database cannot be read.
    """
    try:
        return await runs.statuses([*configured_job_ids(exchanges), *other_jobs])
    except StorageError as exc:
        log.warning("job runs unreadable", error=str(exc))
        raise Unavailable(
            "the database is unavailable; retry shortly", field=None, code="service-unavailable"
        ) from None
