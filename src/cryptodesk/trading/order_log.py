"""The order log: every command the order manager accepted, in order, as JSON-able dicts.

A command is appended before it is applied, so the log is the source of truth:
replaying it (``OrderManager.replay``) rebuilds every book, order, fill, position
and balance exactly. Only commands that passed validation and pre-trade risk are
recorded; a rejection changes nothing and is only reported.

Every record has ``seq`` (1, 2, 3, ... per log), ``ts`` (epoch milliseconds, from
the manager's clock) and ``type``:

- ``submit``: ``order_id``, ``account``, ``symbol``, ``side``, ``order_type``,
  ``quantity``, ``price``, ``stop_price``, ``time_in_force``, ``post_only``,
  ``reduce_only``, ``client_order_id``, ``protection_price`` (market and stop-market
  orders: the worst price they may fill at), ``reserve_asset``, ``reserve_amount``,
  ``fees`` (``[taker, maker]``: the rates its fills pay; a record without them: an
  internal order 0.1 % both, a paper order the instrument's); an internal order's
  ``self_trade`` (the prevention it was decided under; without it:
  ``cancel_incoming``); a paper order's ``venue``, ``takes`` and ``early_close``;
- ``cancel``: ``order_id``;
- ``amend``: ``order_id``, ``price``, ``quantity`` (the new total), ``reserve_amount``,
  ``self_trade``;
- ``deposit``: ``account``, ``asset``, ``amount``;
- ``kill`` / ``revive``: ``account`` (None: everyone).

Decimals are strings, so a record survives JSON unchanged.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, Protocol

Record = dict[str, Any]


class OrderLog(Protocol):
    """Where accepted commands are kept, append-only."""

    def append(self, record: Record) -> None: ...

    def records(self) -> Iterable[Record]: ...


class MemoryOrderLog:
    """An ``OrderLog`` in a list (tests, and a single process that needs no restart)."""

    def __init__(self, records: Iterable[Record] = ()) -> None:
        self._records: list[Record] = list(records)

    def append(self, record: Record) -> None:
        self._records.append(dict(record))

    def records(self) -> list[Record]:
        return [dict(record) for record in self._records]

    def __len__(self) -> int:
        return len(self._records)
