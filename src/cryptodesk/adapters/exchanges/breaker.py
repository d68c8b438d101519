"""A circuit breaker for one upstream: stop calling an exchange that keeps failing.

Closed: calls pass and consecutive failures are counted. After
``failure_threshold`` of them in a row it opens: every call is refused at once
(no socket, no timeout to wait out) until ``cool_down`` seconds have passed.
Then it is half-open: exactly one probe call goes through; its success closes
the breaker, its failure opens it again for another cool-down. Refusing fast
keeps a dead exchange from tying up every feed task and from being hammered
by retries while it recovers.

Pure and synchronous: time comes from an injected ``clock`` (seconds, any
monotonic origin), so transitions are tested without sleeping.
"""

from __future__ import annotations

import enum
from collections.abc import Callable

__all__ = ["BreakerState", "CircuitBreaker", "CircuitOpenError"]


class BreakerState(enum.IntEnum):
    """Values are what the ``breaker_state`` gauge exports."""

    CLOSED = 0
    HALF_OPEN = 1
    OPEN = 2


class CircuitOpenError(Exception):
    """A call refused without being made because the upstream's breaker is open."""

    def __init__(self, name: str, *, retry_in: float, failures: int) -> None:
        self.name = name
        self.retry_in = retry_in
        self.failures = failures
        super().__init__(
            f"{name}: circuit breaker open after {failures} consecutive failures; "
            f"calls are refused, next probe in {max(retry_in, 0.0):.1f}s"
        )


Transition = Callable[[BreakerState, BreakerState], None]


class CircuitBreaker:
    def __init__(
        self,
        name: str,
        *,
        failure_threshold: int = 5,
        cool_down: float = 30.0,
        clock: Callable[[], float],
        on_transition: Transition | None = None,
    ) -> None:
        if failure_threshold < 1:
            raise ValueError("failure_threshold must be at least 1")
        if cool_down < 0:
            raise ValueError("cool_down must not be negative")
        self.name = name
        self.failure_threshold = failure_threshold
        self.cool_down = cool_down
        self._clock = clock
        self._on_transition = on_transition
        self._state = BreakerState.CLOSED
        self._failures = 0
        self._opened_at = 0.0
        self._probe_in_flight = False

    @property
    def state(self) -> BreakerState:
        """The state as a caller arriving now would find it (an elapsed cool-down
        reads as half-open even before a probe claims it)."""
        if self._state is BreakerState.OPEN and self._cool_down_left() <= 0:
            return BreakerState.HALF_OPEN
        return self._state

    @property
    def failures(self) -> int:
        return self._failures

    def is_refusing(self) -> bool:
        """True while an arriving call would be refused (open and cooling down)."""
        return self._state is BreakerState.OPEN and self._cool_down_left() > 0

    def check(self) -> None:
        """Raise CircuitOpenError while refusing, without claiming the probe."""
        if self.is_refusing():
            raise self._refusal(self._cool_down_left())

    def before_call(self) -> None:
        """Admit a call or raise CircuitOpenError.

        When the cool-down is over, the first caller becomes the half-open probe;
        others are refused until the probe's outcome is recorded.
        """
        if self._state is BreakerState.OPEN:
            left = self._cool_down_left()
            if left > 0:
                raise self._refusal(left)
            self._move(BreakerState.HALF_OPEN)
        if self._state is BreakerState.HALF_OPEN:
            if self._probe_in_flight:
                raise self._refusal(0.0)
            self._probe_in_flight = True

    def record_success(self) -> None:
        if self._state is BreakerState.OPEN:
            return  # a call admitted before the breaker opened: the cool-down stands
        self._failures = 0
        self._probe_in_flight = False
        if self._state is BreakerState.HALF_OPEN:
            self._move(BreakerState.CLOSED)

    def record_failure(self) -> None:
        if self._state is BreakerState.OPEN:
            return
        self._failures += 1
        self._probe_in_flight = False
        if self._state is BreakerState.HALF_OPEN or (
            self._state is BreakerState.CLOSED and self._failures >= self.failure_threshold
        ):
            self._opened_at = self._clock()
            self._move(BreakerState.OPEN)

    def release(self) -> None:
        """The admitted call ended without a verdict (cancelled): let another probe in."""
        self._probe_in_flight = False

    def _cool_down_left(self) -> float:
        return self._opened_at + self.cool_down - self._clock()

    def _refusal(self, retry_in: float) -> CircuitOpenError:
        return CircuitOpenError(self.name, retry_in=retry_in, failures=self._failures)

    def _move(self, new: BreakerState) -> None:
        old, self._state = self._state, new
        if self._on_transition is not None and old is not new:
            self._on_transition(old, new)
