"""Candle intervals and the bucket arithmetic that aligns candles to them.

Buckets align to the Unix epoch, as on the major exchanges, except weekly
candles, which open on Monday 00:00 UTC (Binance, Kraken, Coinbase all do so);
the epoch fell on a Thursday, hence the four-day offset.
"""

from __future__ import annotations

from dataclasses import dataclass

from cryptodesk.domain.errors import DomainError

MINUTE_MS = 60_000
HOUR_MS = 60 * MINUTE_MS
DAY_MS = 24 * HOUR_MS
WEEK_MS = 7 * DAY_MS
_WEEK_OFFSET_MS = 4 * DAY_MS  # 1970-01-05 was the first Monday

_UNITS = {"m": MINUTE_MS, "h": HOUR_MS, "d": DAY_MS, "w": WEEK_MS}
SUPPORTED = (
    "1m", "3m", "5m", "15m", "30m", "1h", "2h", "4h", "6h", "8h", "12h", "1d", "3d", "1w",
)  # fmt: skip


@dataclass(frozen=True, slots=True)
class Interval:
    """A candle interval such as ``1m`` or ``4h``; ``ms`` is its length."""

    name: str
    ms: int

    @classmethod
    def parse(cls, text: str) -> Interval:
        name = text.strip()
        if name not in SUPPORTED:
            raise DomainError(
                f"unknown interval {text!r}; supported: {', '.join(SUPPORTED)}", field="interval"
            )
        return cls(name, int(name[:-1]) * _UNITS[name[-1]])

    @property
    def offset_ms(self) -> int:
        return _WEEK_OFFSET_MS if self.ms == WEEK_MS else 0

    def bucket(self, ts_ms: int) -> int:
        """Open time of the candle that contains ``ts_ms``."""
        off = self.offset_ms
        return ts_ms - (ts_ms - off) % self.ms

    def next_bucket(self, open_ms: int) -> int:
        return open_ms + self.ms

    def __str__(self) -> str:
        return self.name


def parse_intervals(text: str) -> tuple[Interval, ...]:
    """Parse a comma-separated list, rejecting duplicates; sorted by length."""
    items = [Interval.parse(part) for part in text.split(",") if part.strip()]
    if not items:
        raise DomainError("at least one interval is required", field="interval")
    if len({i.name for i in items}) != len(items):
        raise DomainError("duplicate interval", field="interval")
    return tuple(sorted(items, key=lambda i: i.ms))
