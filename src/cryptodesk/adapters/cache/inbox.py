"""One subscriber's pending pub/sub messages, shared by the memory and Redis caches.

Bounded: when a slow reader lets it fill, the oldest message is dropped and
counted in ``dropped``, so a slow subscriber never blocks publishers or grows
without bound.
"""

from __future__ import annotations

import asyncio
from collections import deque


class Inbox:
    def __init__(self, maxlen: int) -> None:
        self.dropped = 0  # messages lost because the reader fell behind
        self._queue: deque[bytes] = deque(maxlen=maxlen)
        self._ready = asyncio.Event()  # set while the queue is non-empty or ended
        self._ended = False

    @property
    def ended(self) -> bool:
        return self._ended

    def put(self, message: bytes) -> None:
        if len(self._queue) == self._queue.maxlen:
            self.dropped += 1  # deque(maxlen) discards the oldest on append
        self._queue.append(message)
        self._ready.set()

    def end(self, *, discard: bool) -> None:
        """No more messages will come; ``discard`` drops those not yet read."""
        self._ended = True
        if discard:
            self._queue.clear()
        self._ready.set()

    async def get(self, timeout: float | None = None) -> bytes | None:
        """The next message; None after ``timeout`` seconds or once ended and empty."""
        queue = self._queue
        try:
            async with asyncio.timeout(timeout):
                # _ready is set exactly while the queue has items or we ended;
                # loop anyway in case another reader of this inbox won the race.
                while not queue and not self._ended:
                    await self._ready.wait()
        except TimeoutError:
            return None
        if not queue:  # ended
            return None
        message = queue.popleft()
        if not queue and not self._ended:
            self._ready.clear()
        return message
