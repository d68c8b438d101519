"""The one error every trading rule raises when it refuses an order."""

from __future__ import annotations


class OrderRejected(Exception):
    """An order broke a trading rule.

    ``rule`` is a stable machine name ("tick_size", "min_notional",
    "insufficient_balance", ...) that clients and metrics can switch on;
    ``message`` is one human line naming the offending field; ``field`` names
    it for an API error body (None when the order as a whole is refused, e.g.
    by the kill switch).
    """

    def __init__(self, rule: str, message: str, *, field: str | None = None) -> None:
        super().__init__(f"{rule}: {message}")
        self.rule = rule
        self.message = message
        self.field = field
