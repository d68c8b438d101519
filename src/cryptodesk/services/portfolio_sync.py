"""Exchange accounts into the ledger: balances, own trades, deposits and
withdrawals, then the reconciliation of what the ledger derives with what the
exchanges report.

A sync is idempotent: every entry carries the exchange's own id
(``<exchange>:trade|deposit|withdrawal:<id>``), ids already stored are left
out, and the ledger skips any it has anyway. It is incremental without a
table of its own: the newest stored entry of each kind (per symbol for trades
where the exchange serves them per symbol) says where the last sync got to,
and the next one starts ``overlap_ms`` before it, so a record the exchange
published late (a deposit confirmed hours after it arrived) is still seen.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from types import TracebackType
from typing import TYPE_CHECKING, Any, Final, Protocol

import structlog

from cryptodesk.domain.errors import DomainError
from cryptodesk.domain.timeutil import now_ms
from cryptodesk.portfolio.accounts import BalanceSource
from cryptodesk.portfolio.ledger import LedgerEntry
from cryptodesk.portfolio.reconcile import ReconciliationReport, reconcile

log = structlog.get_logger(__name__)
HOUR_MS: Final = 3_600_000
# Trades are final when served; deposits and withdrawals appear once complete,
# which can be days after the time they carry.
DEFAULT_OVERLAP_MS: Final[Mapping[str, int]] = {
    "trade": HOUR_MS,
    "deposit": 7 * 24 * HOUR_MS,
    "withdrawal": 7 * 24 * HOUR_MS,
}
KINDS: Final = ("trade", "deposit", "withdrawal")


class AccountClient(Protocol):
    """One exchange account's private API (``CcxtAccountClient``)."""

    @property
    def needs_symbols(self) -> bool: ...
    async def symbols_for(self, assets: Sequence[str]) -> list[str]: ...
    async def fetch_balances(self) -> dict[str, Decimal]: ...
    async def fetch_trades(
        self, since_ms: int, symbols: Sequence[str] | None = None
    ) -> list[LedgerEntry]: ...
    async def fetch_deposits(self, since_ms: int) -> list[LedgerEntry]: ...
    async def fetch_withdrawals(self, since_ms: int) -> list[LedgerEntry]: ...
    async def __aenter__(self) -> AccountClient: ...
    async def __aexit__(
        self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None: ...


# (exchange id, credentials, ledger account name) -> client
ClientFactory = Callable[[str, Any, str], AccountClient]


class StoredAccount(Protocol):
    @property
    def kind(self) -> str: ...
    @property
    def exchange(self) -> str | None: ...


class StoredBalance(Protocol):
    @property
    def account(self) -> str: ...
    @property
    def asset(self) -> str: ...
    @property
    def amount(self) -> Decimal: ...


class SyncLedger(Protocol):
    """What the sync needs of the ledger service."""

    async def account(self, tenant: str, name: str) -> StoredAccount | None: ...
    async def credentials(self, tenant: str, name: str) -> Any: ...
    async def entries(self, tenant: str, *, account: str | None = None) -> list[LedgerEntry]: ...
    async def import_entries(self, tenant: str, entries: Sequence[LedgerEntry]) -> Any: ...
    async def set_balances(
        self,
        tenant: str,
        account: str,
        balances: Mapping[str, Decimal],
        *,
        as_of: int,
        source: BalanceSource,
        complete: bool = ...,
    ) -> Any: ...
    async def balances(self, tenant: str) -> Sequence[StoredBalance]: ...


if TYPE_CHECKING:  # the ledger service is what the sync runs on
    from cryptodesk.services.ledger_service import LedgerService

    def _fits(service: LedgerService) -> SyncLedger:
        return service


@dataclass(frozen=True, slots=True)
class SyncResult:
    """What one sync fetched (trades, deposits, withdrawals), how many entries
    were new (``added``) or already in the ledger (``skipped``), and the
    balances the exchange reported."""

    account: str
    trades: int
    deposits: int
    withdrawals: int
    added: int
    skipped: int
    balances: dict[str, Decimal] = field(default_factory=dict)


class SyncService:
    """Sync exchange accounts into the ledger and reconcile it.

    ``clients`` builds the account client for an exchange id, its credentials
    and the ledger account name. ``symbols``: extra symbols to fetch trades
    for, per exchange, where the exchange serves trades per symbol (the sync
    asks for the pairs of every asset held, stored or moved).
    ``history_start_ms``: where the first sync of an account starts.
    """

    def __init__(
        self,
        ledger: SyncLedger,
        clients: ClientFactory,
        *,
        overlap_ms: Mapping[str, int] | None = None,
        history_start_ms: int = 1_483_228_800_000,  # 2017-01-01
        symbols: Mapping[str, Sequence[str]] | None = None,
        clock: Callable[[], int] = now_ms,
    ) -> None:
        self._ledger = ledger
        self._clients = clients
        self._overlap = {**DEFAULT_OVERLAP_MS, **(overlap_ms or {})}
        self._start = history_start_ms
        self._symbols = {k: tuple(v) for k, v in (symbols or {}).items()}
        self._clock = clock

    async def sync_account(self, tenant: str, account_name: str) -> SyncResult:
        account = await self._ledger.account(tenant, account_name)
        if account is None:
            raise DomainError(f"no account {account_name!r}", field="account")
        exchange = account.exchange
        if account.kind != "exchange" or not exchange:
            raise DomainError(f"account {account_name!r} is not an exchange account",
                              field="account")  # fmt: skip
        credentials = await self._ledger.credentials(tenant, account_name)
        if credentials is None:
            raise DomainError(f"account {account_name!r} has no API credentials",
                              field="credentials")  # fmt: skip
        stored = await self._ledger.entries(tenant, account=account_name)
        since = self._since(stored, exchange, account_name)
        async with self._clients(exchange, credentials, account_name) as client:
            balances = await client.fetch_balances()
            deposits = await client.fetch_deposits(since["deposit"])
            withdrawals = await client.fetch_withdrawals(since["withdrawal"])
            moved = [*stored, *deposits, *withdrawals]
            trades = await self._trades(client, exchange, account_name, balances, moved, since)
        fetched = {e.id: e for e in (*trades, *deposits, *withdrawals)}
        known = {e.id for e in stored}
        fresh = sorted((e for e in fetched.values() if e.id not in known),
                       key=lambda e: (e.timestamp, e.id))  # fmt: skip
        added = _added(await self._ledger.import_entries(tenant, fresh), len(fresh)) if fresh else 0
        # Complete: an asset the exchange no longer lists is recorded as zero.
        await self._ledger.set_balances(tenant, account_name, balances, as_of=self._clock(),
                                        source="exchange", complete=True)  # fmt: skip
        result = SyncResult(account_name, len(trades), len(deposits), len(withdrawals), added,
                            len(fetched) - added, balances)  # fmt: skip
        log.info("exchange account synced", tenant=tenant, account=account_name,
                 exchange=exchange, trades=result.trades, deposits=result.deposits,
                 withdrawals=result.withdrawals, added=added, skipped=result.skipped)  # fmt: skip
        return result

    async def reconciliation(
        self,
        tenant: str,
        *,
        accounts: Sequence[str] | None = None,
        tolerance: Decimal = Decimal(0),
    ) -> ReconciliationReport:
        """The ledger against the balances last reported for each account (all
        reported accounts unless ``accounts`` names some)."""
        reported: dict[str, dict[str, Decimal]] = {}
        for balance in await self._ledger.balances(tenant):
            reported.setdefault(balance.account, {})[balance.asset] = balance.amount
        entries = await self._ledger.entries(tenant)
        return reconcile(entries, reported, tolerance=tolerance, accounts=accounts)

    # -- where the last sync got to ---------------------------------------------------
    def _since(self, stored: Sequence[LedgerEntry], exchange: str, account: str) -> dict[str, int]:
        newest: dict[str, int] = {}
        for entry in stored:
            kind = _synced_kind(entry, exchange, account)
            if kind is not None and entry.timestamp > newest.get(kind, -1):
                newest[kind] = entry.timestamp
        return {
            kind: max(self._start, newest[kind] - self._overlap[kind])
            if kind in newest else self._start
            for kind in KINDS
        }  # fmt: skip

    async def _trades(
        self,
        client: AccountClient,
        exchange: str,
        account: str,
        balances: Mapping[str, Decimal],
        moved: Sequence[LedgerEntry],
        since: Mapping[str, int],
    ) -> list[LedgerEntry]:
        if not client.needs_symbols:
            return await client.fetch_trades(since["trade"])
        assets = set(balances)
        newest: dict[str, int] = {}  # per symbol, of the trades synced before
        for entry in moved:
            assets.update(a for a in (entry.asset, entry.counter_asset, entry.fee_asset) if a)
            if _synced_kind(entry, exchange, account) == "trade":
                symbol = f"{entry.asset}/{entry.counter_asset}"
                newest[symbol] = max(newest.get(symbol, -1), entry.timestamp)
        symbols = set(await client.symbols_for(sorted(assets))) | set(
            self._symbols.get(exchange, ())
        )
        out: list[LedgerEntry] = []
        for symbol in sorted(symbols):
            start = self._start
            if symbol in newest:
                start = max(self._start, newest[symbol] - self._overlap["trade"])
            out += await client.fetch_trades(start, [symbol])
        return out


def _synced_kind(entry: LedgerEntry, exchange: str, account: str) -> str | None:
    """``trade``/``deposit``/``withdrawal`` for an entry an earlier sync of this account made."""
    if entry.account != account:
        return None
    prefix, _, rest = entry.id.partition(":")
    kind = rest.partition(":")[0]
    return kind if prefix == exchange and kind in KINDS else None


def _added(outcome: Any, submitted: int) -> int:
    """How many entries the ledger stored: its own count where it reports one."""
    added = getattr(outcome, "added", outcome)
    return added if isinstance(added, int) and not isinstance(added, bool) else submitted
