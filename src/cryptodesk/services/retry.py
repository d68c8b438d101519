"""Retry an async step with capped exponential backoff until it succeeds or we stop.

The pipeline retries a failed sink write instead of dropping or acking the
batch: delivery stays at-least-once and the sinks are idempotent.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import TypeVar

import structlog

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
    delay = initial
    failed = False
    while True:
        try:
            result = await step()
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            failed = True
            log.warning("step failed, retrying", step=what, error=str(exc), retry_in=delay)
            if on_failure is not None:
                on_failure(f"{what}: {exc}")
            await asyncio.sleep(delay)
            delay = min(cap, delay * 2)
            continue
        if failed and on_success is not None:
            on_success()
        return result
