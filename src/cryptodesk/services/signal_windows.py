"""Rolling close windows of a series: in the cache, rebuilt from the store when lost.

Each window length ``N`` the series' indicators need is one capped list,
``closes:{exchange}:{SYMBOL}:{INTERVAL}:ma{N}`` (``cache_keys.close_window``),
of ``[open_time, close]`` points oldest first, kept with push + trim (RPUSH +
LTRIM on Redis). The exchange is part of the key because two venues list the
same symbol at different prices.

A window read back is trusted only if it is exactly what the store would
give: strictly ascending, ending at the candle the runner evaluated last, and
either full or starting at the series' oldest stored candle. Anything else (a
flushed cache, a push lost while Redis was down, a retried push that repeated
a point) is rebuilt from the store, which holds every finalized candle.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from itertools import pairwise

import msgspec

from cryptodesk.adapters.cache.base import Cache
from cryptodesk.adapters.db.base import MarketStore
from cryptodesk.services import cache_keys

Point = tuple[int, float]  # open_time, close
Series = tuple[str, str, str]

_encode = msgspec.json.Encoder().encode
_decode = msgspec.json.Decoder(tuple[int, float]).decode


def encode_point(point: Point) -> bytes:
    return _encode(point)


def decode_point(raw: bytes) -> Point:
    return _decode(raw)


def key(series: Series, length: int) -> str:
    return cache_keys.close_window(*series, length)


async def read(
    cache: Cache, store: MarketStore, series: Series, lengths: Sequence[int], last: int
) -> dict[int, list[Point]] | None:
    """Every window from the cache, or None when any cannot be trusted (see the
    module doc); ``last`` is the open time the windows must end at."""
    out: dict[int, list[Point]] = {}
    for length in lengths:
        try:
            points = [decode_point(raw) for raw in await cache.list_range(key(series, length))]
        except (msgspec.DecodeError, msgspec.ValidationError):
            return None
        if not points or points[-1][0] != last or len(points) > length:
            return None
        if any(a[0] >= b[0] for a, b in pairwise(points)):
            return None
        if len(points) < length:
            older = await store.get_candles(*series, end=points[0][0], limit=1, newest_first=True)
            if older:
                return None
        out[length] = points
    return out


async def from_store(store: MarketStore, series: Series, length: int, last: int) -> list[Point]:
    """The newest ``length`` stored closes with ``open_time <= last``, oldest first."""
    if length <= 0:
        return []
    candles = await store.get_candles(*series, end=last + 1, limit=length, newest_first=True)
    return [(c.open_time, c.close) for c in reversed(candles)]


async def push(cache: Cache, series: Series, lengths: Sequence[int], point: Point) -> None:
    raw = encode_point(point)
    for length in lengths:
        await cache.push_capped(key(series, length), [raw], maxlen=length)


async def rewrite(
    cache: Cache, series: Series, lengths: Sequence[int], points: Sequence[Point]
) -> None:
    """Replace every window with the tail of ``points`` (oldest first)."""
    points = list(points)
    for length in lengths:
        k = key(series, length)
        await cache.delete(k)
        tail = [encode_point(p) for p in points[-length:]]
        if tail:
            await cache.push_capped(k, tail, maxlen=length)


def closes(windows: Mapping[int, Sequence[Point]]) -> dict[int, list[float]]:
    return {length: [c for _, c in points] for length, points in windows.items()}
