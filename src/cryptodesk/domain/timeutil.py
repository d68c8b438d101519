"""Time helpers: integer epoch milliseconds inside, ISO 8601 UTC at the edges."""

from __future__ import annotations

import re
import time
from datetime import UTC, datetime, timedelta

from cryptodesk.domain.errors import DomainError

# Exchanges started in 2009; anything before is a unit mistake (seconds vs ms).
MIN_TS_MS = 1_230_768_000_000  # 2009-01-01
MAX_TS_MS = 32_503_680_000_000  # 3000-01-01
_EPOCH_MS = re.compile(r"^-?[0-9]+$")
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def now_ms() -> int:
    return time.time_ns() // 1_000_000


def to_iso(ts_ms: int) -> str:
    """ISO 8601 UTC with millisecond precision and a ``Z`` suffix."""
    dt = datetime.fromtimestamp(ts_ms / 1000, tz=UTC)
    return dt.strftime("%Y-%m-%dT%H:%M:%S.") + f"{ts_ms % 1000:03d}Z"


def parse_time(text: str, *, field: str = "timestamp") -> int:
    """Accept epoch milliseconds or ISO 8601 (naive means UTC); return epoch ms."""
    raw = text.strip()
    if _EPOCH_MS.match(raw):
        value = int(raw)
    else:
        try:
            dt = datetime.fromisoformat(raw.replace("Z", "+00:00").replace("z", "+00:00"))
        except ValueError:
            raise DomainError(
                f"{field} {text!r} is neither epoch milliseconds nor ISO 8601", field=field
            ) from None
        if dt.tzinfo is None:
            dt = dt.replace(tzinfo=UTC)
        # Exact: through float seconds, 1 in ~200 millisecond times came back 1 ms off.
        value = (dt - _EPOCH) // timedelta(milliseconds=1)
    if not MIN_TS_MS <= value < MAX_TS_MS:
        raise DomainError(f"{field} {text!r} is out of range (2009..3000)", field=field)
    return value
