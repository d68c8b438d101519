"""Market data from a matching engine: L2 deltas between two snapshots.

The engine's events are the L3 deltas (every order booked, traded, cancelled,
amended, with its id, price and quantity; see ``trading/matching.py``). For an
aggregated feed, ``l2_deltas(before, after)`` gives the level changes that turn one
L2 snapshot (``MatchingEngine.l2(depth)``) into the next: ``(side, price, qty)``
with ``qty`` the level's new total, 0 when the level is gone (or, for a
depth-limited snapshot, left the top ``depth``). Bids come first, then asks, each
best price first, so applying them in order (``apply_l2_deltas``) rebuilds
``after`` exactly.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from cryptodesk.trading.matching import BUY, SELL

Levels = Sequence[tuple[int, int]]  # (price, qty), best first
Snapshot = tuple[Levels, Levels]  # (bids, asks)
Delta = tuple[int, int, int]  # (side, price, qty now; 0: gone)


def l2_deltas(before: Snapshot, after: Snapshot) -> list[Delta]:
    """The level changes from ``before`` to ``after`` (see the module docstring)."""
    out: list[Delta] = []
    for side, old, new in ((BUY, before[0], after[0]), (SELL, before[1], after[1])):
        was, now = dict(old), dict(new)
        changed = {p for p in was.keys() | now.keys() if was.get(p) != now.get(p)}
        for price in sorted(changed, reverse=side == BUY):
            out.append((side, price, now.get(price, 0)))
    return out


def apply_l2_deltas(snapshot: Snapshot, deltas: Iterable[Delta]) -> Snapshot:
    """``snapshot`` with ``deltas`` applied: the levels best first, empty ones dropped."""
    sides = {BUY: dict(snapshot[0]), SELL: dict(snapshot[1])}
    for side, price, qty in deltas:
        if qty:
            sides[side][price] = qty
        else:
            sides[side].pop(price, None)
    bids = sorted(sides[BUY].items(), reverse=True)
    asks = sorted(sides[SELL].items())
    return bids, asks
