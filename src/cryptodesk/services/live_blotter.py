"""A tenant's live orders (venues ``live:EXCHANGE``) as its order log records them.

The order log (``trading/order_log.py``) carries two record types for them,
which ``trading/venue.py`` skips and ``LiveBlotter.apply`` replays:

- ``live_submit``, written before the exchange is called: ``venue``,
  ``account`` (the ledger account traded), ``order_id`` (``L`` + sequence, also
  the client order id the exchange is sent) and ``request`` (``symbol``,
  ``side``, ``order_type``, ``quantity``, ``price``, ``time_in_force``,
  ``post_only``, ``reduce_only``, and ``client_order_id``: the caller's own id).
  Alone it leaves the order ``new``: sent or not, the outcome is unknown until
  a reconcile finds it on the exchange by its client order id.
- ``live_update``, what a call to the exchange changed: ``orders`` (whole order
  dicts), ``removed`` (orders the exchange refused: not kept),
  ``exchange_ids``, ``fills`` (new fill dicts), ``state_seq`` (the venue
  state's counter) and ``booked`` (``[symbol, trade id]`` of fills now in the
  ledger). Only what changed is written.

Each (venue, account) has one ``LiveState`` (``services/live_venue.py``): the
``LiveVenue`` working on it changes it in memory during a command, and the
records say how, so replaying them rebuilds every state exactly.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from cryptodesk.domain.orders import Fill, OrderRequest, OrderStatus
from cryptodesk.trading.order_log import Record
from cryptodesk.trading.order_state import Order, fill_dict, order_dict
from cryptodesk.trading.positions import Position, Positions

if TYPE_CHECKING:  # live_venue loads ccxt (seconds): LiveOrders.ready imports it off the loop
    from cryptodesk.services.live_venue import LiveState

VenueKey = tuple[str, str]  # (venue, ledger account)
FillKey = tuple[str, str]  # (symbol, exchange trade id), as ``LiveState`` keys fills


@dataclass(frozen=True, slots=True)
class Before:
    """A venue state as it was before a call to the exchange, to log what changed."""

    orders: dict[str, Order]
    exchange_ids: dict[str, str]
    fills: frozenset[FillKey]
    seq: int


def before(state: LiveState) -> Before:
    return Before(dict(state.orders), dict(state.exchange_ids), frozenset(state.fills), state.seq)


def changes(state: LiveState, then: Before, *, submitted: str | None = None) -> dict[str, Any]:
    """The ``live_update`` fields for what changed since ``then`` (empty: nothing);
    ``submitted``: the order a ``live_submit`` added (removed if the exchange refused it)."""
    out: dict[str, Any] = {}
    orders = [order_dict(o) for oid, o in state.orders.items() if then.orders.get(oid) != o]
    removed = [oid for oid in [*then.orders, submitted] if oid and oid not in state.orders]
    ids = {oid: eid for oid, eid in state.exchange_ids.items() if then.exchange_ids.get(oid) != eid}
    fills = [fill_dict(f) for key, f in state.fills.items() if key not in then.fills]
    for name, value in (("orders", orders), ("removed", removed), ("exchange_ids", ids),
                        ("fills", fills)):  # fmt: skip
        if value:
            out[name] = value
    if out or state.seq != then.seq:
        out["state_seq"] = state.seq
    return out


def submit_record(ts: int, order_id: str, request: OrderRequest) -> Record:
    """The ``live_submit`` record of ``request`` (its venue and account say where)."""
    r = request
    return {
        "ts": ts, "type": "live_submit", "venue": r.venue, "account": r.account,
        "order_id": order_id,
        "request": {
            "symbol": r.symbol, "side": r.side, "order_type": r.type, "quantity": str(r.quantity),
            "price": None if r.price is None else str(r.price), "time_in_force": r.time_in_force,
            "post_only": r.post_only, "reduce_only": r.reduce_only,
            "client_order_id": r.client_order_id,
        },
    }  # fmt: skip


def request_of(record: Record) -> OrderRequest:
    """The order a ``live_submit`` record placed (``client_order_id``: the caller's)."""
    r = record["request"]
    price = None if r["price"] is None else Decimal(r["price"])
    return OrderRequest(record["account"], r["symbol"], r["side"], r["order_type"],
                        Decimal(r["quantity"]), price=price, time_in_force=r["time_in_force"],
                        post_only=r["post_only"], reduce_only=r["reduce_only"],
                        client_order_id=r["client_order_id"], venue=record["venue"])  # fmt: skip


def tenant_tag(tenant: str) -> str:
    """Six hex digits naming ``tenant`` in its live order ids, which are the client order
    ids the exchanges see: two tenants trading on one exchange account never send the
    same id."""
    return hashlib.sha256(tenant.encode()).hexdigest()[:6]


class LiveBlotter:
    """One tenant's live orders and fills on every (venue, account), rebuilt by
    ``apply``; order ids are ``L`` + the tenant's tag + sequence across the tenant."""

    def __init__(self, tag: str = "") -> None:
        self.tag = tag
        self.states: dict[VenueKey, LiveState] = {}
        self.unbooked: dict[VenueKey, dict[FillKey, None]] = {}  # fills not in the ledger yet
        self.seq = 0  # live orders numbered so far
        self.reconciled = False  # with the exchanges, since this blotter was built
        self._where: dict[str, VenueKey] = {}  # order id -> its venue and account
        self._client_ids: dict[str, str | None] = {}  # order id -> the caller's own id
        self._known: dict[tuple[str, str], str] = {}  # (account, caller's id) -> order id

    def next_order_id(self) -> str:
        return f"L{self.tag}{self.seq + 1:010d}"

    def state(self, key: VenueKey) -> LiveState:
        from cryptodesk.services.live_venue import LiveState

        found = self.states.get(key)
        if found is None:
            found = self.states[key] = LiveState()
        return found

    # ---- records --------------------------------------------------------------------

    def apply(self, record: Record) -> None:
        """Replay one order-log record (others than ``live_*`` are not ours)."""
        kind = record["type"]
        if kind == "live_submit":
            self.note_submit(record)
            state = self.state((record["venue"], record["account"]))
            state.seq += 1  # as ``LiveVenue.submit`` counts
            order_id = record["order_id"]
            request = replace(request_of(record), client_order_id=order_id)
            order = Order.from_request(request, order_id=order_id, status="new", ts=record["ts"])
            state.orders.setdefault(order_id, replace(order, venue=record["venue"]))
        elif kind == "live_update":
            self.merge((record["venue"], record["account"]), record)

    def note_submit(self, record: Record) -> None:
        """What a ``live_submit`` numbers and names (the venue state is left alone)."""
        order_id, client_id = record["order_id"], record["request"]["client_order_id"]
        self.seq = max(self.seq, int(order_id[-10:]))
        self._where[order_id] = (record["venue"], record["account"])
        self._client_ids[order_id] = client_id
        if client_id is not None:
            self._known[(record["account"], client_id)] = order_id

    def merge(self, key: VenueKey, update: Mapping[str, Any]) -> None:
        """Apply a ``live_update``'s fields to the venue state, then ``note`` them."""
        from cryptodesk.services.live_venue import LiveState

        state = self.state(key)
        part = LiveState.load({"seq": update.get("state_seq", state.seq),
                               "orders": update.get("orders", []),
                               "exchange_ids": update.get("exchange_ids", {}),
                               "fills": update.get("fills", [])})  # fmt: skip
        state.orders.update(part.orders)
        for order_id in update.get("removed", ()):
            state.orders.pop(order_id, None)
        state.exchange_ids.update(part.exchange_ids)
        for fill_key, fill in part.fills.items():
            state.fills.setdefault(fill_key, fill)
        state.seq = part.seq
        self.note(key, update)

    def note(self, key: VenueKey, update: Mapping[str, Any]) -> None:
        """Keep track of the update's fills until they are booked in the ledger."""
        waiting = self.unbooked.setdefault(key, {})
        for fill in update.get("fills", ()):
            waiting[(fill["symbol"], fill["trade_id"])] = None
        for symbol, trade_id in update.get("booked", ()):
            waiting.pop((symbol, trade_id), None)

    # ---- queries --------------------------------------------------------------------

    def key_of(self, order_id: str) -> VenueKey | None:
        return self._where.get(order_id)

    def order(self, order_id: str) -> Order | None:
        key = self._where.get(order_id)
        found = None if key is None else self.states[key].orders.get(order_id)
        return None if found is None else self.view(found)

    def known(self, account: str, client_order_id: str) -> Order | None:
        """The live order ``account`` placed before under its own ``client_order_id``."""
        order_id = self._known.get((account, client_order_id))
        return None if order_id is None else self.order(order_id)

    def view(self, order: Order) -> Order:
        """The order as callers see it: with their own client order id (the one sent to
        the exchange is the order id)."""
        return replace(order, client_order_id=self._client_ids.get(order.order_id))

    def orders(
        self,
        account: str | None = None,
        symbol: str | None = None,
        status: OrderStatus | None = None,
        *,
        key: VenueKey | None = None,
    ) -> list[Order]:
        """Live orders by id (refused ones are not kept)."""
        found = [
            self.view(o) for k, state in self.states.items() if key in (None, k)
            for o in state.orders.values()
            if account in (None, o.account) and symbol in (None, o.symbol)
            and status in (None, o.status)
        ]  # fmt: skip
        return sorted(found, key=lambda o: o.order_id)

    def open_orders(self, account: str | None = None, symbol: str | None = None, *,
                    key: VenueKey | None = None) -> list[Order]:  # fmt: skip
        return [o for o in self.orders(account, symbol, key=key) if o.is_open]

    def fills(self, account: str | None = None, symbol: str | None = None) -> list[Fill]:
        """Live fills by order id, then in the order they were learnt (fills of one
        order are never reordered, which the API's paging relies on)."""
        found = [
            (int(f.order_id[-10:]), n, f) for state in self.states.values()
            for n, f in enumerate(state.fills.values())
            if account in (None, f.account) and symbol in (None, f.symbol)
        ]  # fmt: skip
        return [f for _, _, f in sorted(found, key=lambda t: (t[0], t[1]))]

    def position_of(self, account: str, symbol: str) -> Decimal:
        """The signed base quantity the account's live fills in ``symbol`` add up to."""
        book = Positions()
        for fill in self.fills(account, symbol):
            book.apply(fill)
        return book.get(account, symbol).quantity

    def with_positions(
        self,
        rows: list[tuple[Position, Decimal | None]],
        fills_of: Callable[[str], list[Fill]],
        account: str | None,
    ) -> list[tuple[Position, Decimal | None]]:
        """``rows`` (the other venues' positions and marks) with one position per
        (account, symbol) that has live fills: those fills and, for an account name
        that also trades on other venues, its fills there (``fills_of``), in time
        order. A live position is marked at its last fill's price."""
        by_key: dict[tuple[str, str], list[Fill]] = {}
        for fill in self.fills(account):
            by_key.setdefault((fill.account, fill.symbol), []).append(fill)
        out = [row for row in rows if (row[0].account, row[0].symbol) not in by_key]
        for (name, symbol), live in by_key.items():
            others = [f for f in fills_of(name) if f.symbol == symbol]
            book = Positions()
            for fill in sorted([*others, *live], key=lambda f: f.ts):
                book.apply(fill)
            last = sorted(live, key=lambda f: f.ts)[-1]  # the latest, then the last learnt
            out.append((book.get(name, symbol), last.price))
        return out

    def open_venues(self) -> list[VenueKey]:
        """The (venue, account) pairs with an order open on their exchange."""
        return [key for key, state in self.states.items()
                if any(o.is_open for o in state.orders.values())]  # fmt: skip

    def needs_settling(self) -> bool:
        """True while an order may be open on an exchange or a fill is not booked."""
        return any(o.is_open for s in self.states.values() for o in s.orders.values()) or any(
            self.unbooked.values()
        )
