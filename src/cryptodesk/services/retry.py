"""Retry an async step with capped exponential backoff and full jitter until it
succeeds or we stop.

The pipeline retries a failed sink write instead of dropping or acking the
batch: delivery stays at-least-once and the sinks are idempotent. Full jitter
(each wait drawn uniformly from zero to the exponential ceiling) keeps many
processes that lost the same server from reconnecting in lockstep when it
returns.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import TypeVar

import structlog

from cryptodesk.domain.backoff import backoff_delays

__all__ = ["backoff_delays", "retry_forever"]
T = TypeVar("T")
log = structlog.get_logger(__name__)


async def retry_forever(
    step: Callable[[], Awaitable[T]],
    *,
    what: str,
    on_failure: Callable[[str], None] | None = None,
    on_success: Callable[[], None] | None = None,
    initial: float = 0.05,
    cap: float = 5.0,
) -> T:
    delays = backoff_delays(initial, cap)
    failed = False
    while True:
        try:
            result = await step()
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            failed = True
            delay = next(delays)
            log.warning(
                "step failed, retrying", step=what, error=str(exc), retry_in=round(delay, 3)
            )
            if on_failure is not None:
                on_failure(f"{what}: {exc}")
            await asyncio.sleep(delay)
            continue
        if failed and on_success is not None:
            on_success()
        return result
