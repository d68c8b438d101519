"""Reading a ccxt source's streams in tests: what every exchange's test shares."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from typing import Any


class Collector:
    """Reads a source stream in the background; tests wait for what they expect."""

    def __init__(self, stream: AsyncIterator[Any]) -> None:
        self.items: list[Any] = []
        self._changed = asyncio.Event()
        self.task = asyncio.create_task(self._run(stream))
        self.task.add_done_callback(lambda _: self._changed.set())

    async def _run(self, stream: AsyncIterator[Any]) -> None:
        async for got in stream:
            self.items.extend(got if isinstance(got, list) else [got])
            self._changed.set()

    async def wait_for(self, done: Callable[[list[Any]], bool], timeout: float = 10.0) -> None:
        async with asyncio.timeout(timeout):
            while not done(self.items):
                if self.task.done():
                    self.task.result()  # the stream's own error, if any
                    raise AssertionError("the stream ended")
                self._changed.clear()
                await self._changed.wait()

    async def stop(self) -> None:
        self.task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self.task


async def until(check: Callable[[], bool]) -> None:
    """Wait (bounded) for a condition the fake reports, e.g. a REST request seen."""
    async with asyncio.timeout(10):
        while not check():  # noqa: ASYNC110  # the fake has no event for every request
            await asyncio.sleep(0.005)
