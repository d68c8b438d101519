"""WebSocket channel names: what a client may subscribe to, as a ``ChannelSpec``.

- Market channels ``ticker|book|trades:EX:SYM`` and ``candles:EX:SYM:INTERVAL`` name a
  served market; ``signals`` is every tenant's.
- Tenant channels are the caller's tenant's: ``portfolio``, ``orders``, ``alerts`` and
  ``book:internal:SYM``. Their key carries the tenant, so one tenant's updates never
  reach another's subscribers.
- ``book:internal:SYM`` is the tenant's own order book of ``SYM`` on the internal venue
  (``services/order_service.py``). Its data carries the matching engine's ``sequence``
  (the engine's last event), which only grows, so a book older than one already sent
  (published late by another process) is recognised and dropped.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any, Final, Protocol

import msgspec

from cryptodesk.services.market_queries import QueryError

MARKET_KINDS: Final = ("ticker", "book", "trades", "candles")
TENANT_CHANNELS: Final = ("portfolio", "orders", "alerts")
INTERNAL_BOOK: Final = "internal_book"  # the kind of book:internal:SYM
INTERNAL_BOOK_PREFIX: Final = "book:internal:"
LATEST_STATE: Final = frozenset({"ticker", "book", "portfolio", INTERNAL_BOOK})

# (tenant, symbol, depth) -> the tenant's internal book as ``OrderService.book_now``
# gives it: {"symbol", "sequence", "bids", "asks", "last_price"}.
InternalBooks = Callable[[str, str, int], Awaitable[Mapping[str, Any]]]


class ChannelError(Exception):
    """A channel name the hub cannot serve; ``code`` is a stable machine id."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


@dataclass(frozen=True, slots=True)
class ChannelSpec:
    """A channel as clients name it; tenant channels also carry the tenant."""

    name: str
    kind: str
    exchange: str = ""
    symbol: str = ""
    interval: str = ""
    tenant: str = ""

    @property
    def key(self) -> str:
        return f"{self.name}@{self.tenant}" if self.tenant else self.name


class ServedNames(Protocol):
    """What is served, to validate names against (``MarketQueries``)."""

    def exchange(self, text: str) -> str: ...
    def symbol(self, text: str) -> str: ...
    def interval(self, text: str) -> str: ...


def parse_channel(text: str, tenant: str | None, served: ServedNames) -> ChannelSpec:
    """The channel ``text`` names, validated and in canonical form, or ChannelError;
    ``tenant`` is the caller's (None: not authenticated)."""
    kind, _, rest = text.partition(":")
    if kind in TENANT_CHANNELS or kind == "signals":
        if rest:
            raise ChannelError("unknown-channel", f"{kind!r} takes no parameters")
        if kind == "signals":
            return ChannelSpec("signals", "signals")
        return ChannelSpec(kind, kind, tenant=_tenant(kind, tenant))
    parts = rest.split(":")
    if kind not in MARKET_KINDS or len(parts) != (3 if kind == "candles" else 2):
        raise ChannelError(
            "unknown-channel",
            f"unknown channel {text[:100]!r}: use ticker|book|trades:EXCHANGE:SYMBOL, "
            "candles:EXCHANGE:SYMBOL:INTERVAL, book:internal:SYMBOL, signals, portfolio, "
            "orders or alerts",
        )
    internal = kind == "book" and parts[0].strip().lower() == "internal"
    try:
        ex = "internal" if internal else served.exchange(parts[0])
        sym = served.symbol(parts[1])
        iv = served.interval(parts[2]) if kind == "candles" else ""
    except QueryError as exc:
        raise ChannelError(exc.code, str(exc)) from None
    if internal:
        name = internal_book_channel(sym)
        return ChannelSpec(name, INTERNAL_BOOK, ex, sym, tenant=_tenant(name, tenant))
    return ChannelSpec(":".join([kind, ex, sym, iv] if iv else [kind, ex, sym]), kind, ex, sym, iv)


def _tenant(name: str, tenant: str | None) -> str:
    if tenant is None:
        raise ChannelError("unauthorized", f"{name!r} is a tenant channel: send a token")
    return tenant


def internal_book_channel(symbol: str) -> str:
    """The channel of the internal venue's book of ``symbol`` (``BASE/QUOTE``)."""
    return INTERNAL_BOOK_PREFIX + symbol


def is_internal_book(channel: str) -> bool:
    return channel.startswith(INTERNAL_BOOK_PREFIX)


class _Sequenced(msgspec.Struct):
    sequence: int


_sequence_of = msgspec.json.Decoder(_Sequenced).decode


def book_sequence(data: bytes) -> int | None:
    """The ``sequence`` of an internal book's JSON; None when it has none."""
    try:
        return _sequence_of(data).sequence
    except msgspec.DecodeError:
        return None
