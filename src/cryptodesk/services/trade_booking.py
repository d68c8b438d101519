"""Live fills into the tenant's ledger, as the very entries account sync makes.

A live fill is an exchange trade of a ledger account, which account sync
(``services/portfolio_sync.py``) imports too. To be one entry whichever way it
arrives first, the entry is the sync's own: the account's trades are read with
the sync's client (``CcxtAccountClient``: its id ``{exchange}:trade:{external}``
and its amounts from the exchange's text), and the ones that are these fills
are imported. The ledger skips an entry it holds already (same id, same
content), so importing again is harmless. A fill whose trade the exchange does
not list yet is left for the next try.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Protocol

import structlog

from cryptodesk.adapters.secrets import SecretsError
from cryptodesk.domain.errors import DomainError
from cryptodesk.domain.orders import Fill
from cryptodesk.portfolio.ledger import LedgerEntry
from cryptodesk.services.live_blotter import LiveBlotter, VenueKey
from cryptodesk.services.portfolio_sync import AccountClient
from cryptodesk.trading.errors import OrderRejected

log = structlog.get_logger(__name__)


class LedgerAccount(Protocol):
    @property
    def kind(self) -> str: ...
    @property
    def exchange(self) -> str | None: ...
    @property
    def has_credentials(self) -> bool: ...


class LiveLedger(Protocol):
    """What live orders need of the ledger service (``LedgerService``)."""

    async def account(self, tenant: str, name: str) -> LedgerAccount | None: ...
    async def credentials(self, tenant: str, name: str) -> Any: ...
    async def import_entries(self, tenant: str, entries: Sequence[LedgerEntry]) -> Any: ...


# (exchange id, credentials, ledger account name) -> the sync's client of that account
TradeClients = Callable[[str, Any, str], AccountClient]


async def exchange_credentials(ledger: LiveLedger, tenant: str, exchange: str,
                               account: str) -> Any:  # fmt: skip
    """The API credentials of the tenant's ledger account ``account`` on ``exchange``;
    ``OrderRejected`` ``unknown_venue`` (no such exchange account) or
    ``no_credentials``."""
    found = await ledger.account(tenant, account)
    if found is None or found.kind != "exchange" or found.exchange != exchange:
        raise OrderRejected("unknown_venue", f"venue live:{exchange} trades a ledger account "
                            f"on {exchange}; {account!r} is none", field="venue")  # fmt: skip
    if not found.has_credentials:
        raise OrderRejected("no_credentials", f"account {account!r} has no API credentials",
                            field="account")  # fmt: skip
    try:
        return await ledger.credentials(tenant, account)
    except (DomainError, SecretsError) as exc:
        raise OrderRejected("no_credentials", str(exc), field="account") from None


class TradeBooking:
    """Books fills into ``ledger`` through the sync's clients (one per account, kept
    open until ``close``)."""

    def __init__(self, ledger: LiveLedger, clients: TradeClients) -> None:
        self._ledger = ledger
        self._make = clients
        self._clients: dict[tuple[str, str, str], AccountClient] = {}

    async def book_waiting(self, tenant: str,
                           blotter: LiveBlotter) -> dict[VenueKey, list[list[str]]]:  # fmt: skip
        """Book the blotter's fills not in the ledger yet; per venue, those now booked
        (for the caller to record). A failure is logged: those fills wait."""
        out: dict[VenueKey, list[list[str]]] = {}
        for key, waiting in blotter.unbooked.items():
            if not waiting:
                continue
            fills = [blotter.state(key).fills[k] for k in waiting]
            venue, account = key
            try:
                booked = await self.book(tenant, venue.removeprefix("live:"), account, fills)
            except Exception as exc:
                log.warning("live fills not in the ledger yet", tenant=tenant, venue=venue,
                            account=account, fills=len(fills), error=repr(exc))  # fmt: skip
                continue
            if booked:
                out[key] = booked
        return out

    async def book(self, tenant: str, exchange: str, account: str,
                   fills: Sequence[Fill]) -> list[list[str]]:  # fmt: skip
        """Import the entries of ``fills``' trades; the ``[symbol, trade id]`` of those
        now in the ledger (imported, or there already)."""
        client = self._clients.get((tenant, exchange, account))
        if client is None:
            credentials = await exchange_credentials(self._ledger, tenant, exchange, account)
            client = await self._make(exchange, credentials, account).__aenter__()
            self._clients[(tenant, exchange, account)] = client
        entries: list[LedgerEntry] = []
        booked: list[list[str]] = []
        for symbol in sorted({f.symbol for f in fills}):
            group = [f for f in fills if f.symbol == symbol]
            synced = await client.fetch_trades(min(f.ts for f in group), [symbol])
            for fill in group:
                entry = next((e for e in synced if same_trade(e, fill)), None)
                if entry is not None:
                    entries.append(entry)
                    booked.append([fill.symbol, fill.trade_id])
        if entries:
            await self._ledger.import_entries(tenant, entries)
        return booked

    async def close(self) -> None:
        for client in self._clients.values():
            await client.__aexit__(None, None, None)
        self._clients.clear()


def same_trade(entry: LedgerEntry, fill: Fill) -> bool:
    """Whether the sync's ``entry`` is ``fill``'s trade: same market and side, and its
    external id is the exchange's trade id (after the market's id, where an exchange
    numbers trades per market)."""
    base, _, quote = fill.symbol.partition("/")
    external = (entry.external_id or "").rpartition(":")[2]
    return (entry.asset, entry.counter_asset, entry.kind, external) == (
        base, quote, fill.side, fill.trade_id)  # fmt: skip
