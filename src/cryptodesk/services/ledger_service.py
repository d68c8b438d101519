"""Accounts, reported balances and the hash-chained ledger of each tenant.

The ledger only grows: an import appends the entries it has not seen (same
``id``, or same ``(account, external_id)`` from an exchange, is the same row)
in one transaction, so a bad entry anywhere leaves the store as it was; an
``id`` already stored with different content is refused, because corrections
are reversing entries (:meth:`LedgerService.reverse`), never edits.

Every method takes the tenant first; nothing is shared between tenants, each
has its own chain.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, replace
from decimal import Decimal
from typing import Any, Final

import msgspec
from sqlalchemy.ext.asyncio import AsyncEngine

from cryptodesk.adapters.db.ledger_rows import LedgerTransaction
from cryptodesk.adapters.db.ledger_store import SqlLedgerStore
from cryptodesk.adapters.secrets import SecretBox, SecretsError
from cryptodesk.domain.auth import check_tenant
from cryptodesk.domain.errors import DomainError
from cryptodesk.domain.timeutil import now_ms
from cryptodesk.portfolio.accounts import (
    BALANCE_SOURCES,
    Account,
    AccountSpec,
    Balance,
    BalanceSource,
    ExchangeCredentials,
    check_balance,
    check_name,
)
from cryptodesk.portfolio.hash_chain import (
    ChainReport,
    Fields,
    StoredEntry,
    canonical,
    from_fields,
    to_fields,
)
from cryptodesk.portfolio.ledger import MAX_ID_LENGTH, LedgerEntry

# A reversal must copy these of the entry it corrects (portfolio/ledger.py).
_COPIED: Final = (
    "kind", "account", "asset", "amount", "counter_asset", "counter_amount",
    "fee_asset", "fee_amount", "to_account",
)  # fmt: skip
_DECIMALS: Final = ("amount", "counter_amount", "fee_amount")


class LedgerNotFound(DomainError):
    """The named account or entry does not exist for the tenant."""


@dataclass(frozen=True, slots=True)
class ImportResult:
    added: int  # appended to the chain
    skipped: int  # already stored (same id, or same account and external id)


@dataclass(slots=True)
class _Pending:
    entry: LedgerEntry
    fields: Fields
    body: bytes


class LedgerService:
    """The tenant-scoped ledger, accounts and balances over one ``SqlLedgerStore``.

    ``box`` encrypts exchange credentials; without one, accounts can still be
    added, but not with credentials.
    """

    def __init__(
        self,
        store: SqlLedgerStore | AsyncEngine,
        box: SecretBox | None,
        *,
        clock: Callable[[], int] = now_ms,
    ) -> None:
        self._store = store if isinstance(store, SqlLedgerStore) else SqlLedgerStore(store)
        self._box = box
        self._clock = clock

    @property
    def store(self) -> SqlLedgerStore:
        return self._store

    # ---- accounts -------------------------------------------------------------------

    async def add_account(self, tenant: str, spec: AccountSpec) -> Account:
        """Store a new account; ``DomainError`` if the tenant already has one by that name."""
        check_tenant(tenant)
        if not isinstance(spec, AccountSpec):
            raise DomainError("an account is given as an AccountSpec", field="account")
        token = None
        if spec.credentials is not None:
            token = self._seal(tenant, spec.name, spec.credentials)
        account = Account(
            spec.name, spec.kind, spec.exchange, spec.chain, spec.address, spec.note,
            token is not None, self._clock(),
        )  # fmt: skip
        if not await self._store.insert_account(tenant, account, token):
            raise DomainError(f"account {spec.name!r} already exists", field="name")
        return account

    async def accounts(self, tenant: str) -> list[Account]:
        return await self._store.accounts(check_tenant(tenant))

    async def account(self, tenant: str, name: str) -> Account | None:
        return await self._store.account(check_tenant(tenant), name)

    async def credentials(self, tenant: str, name: str) -> ExchangeCredentials:
        """The decrypted API credentials of exchange account ``name`` (for syncing only)."""
        check_tenant(tenant)
        account = await self._known_account(tenant, name)
        token = await self._store.credentials_token(tenant, name)
        if token is None:
            raise DomainError(f"account {account.name!r} has no API credentials", field="account")
        if self._box is None:
            raise SecretsError("no accounts key is configured: stored credentials cannot be read")
        try:
            data = msgspec.json.decode(self._box.decrypt(token))
            if data.get("tenant") != tenant or data.get("account") != name:
                raise SecretsError(f"stored credentials of {name!r} belong to another account")
            return ExchangeCredentials(data["api_key"], data["secret"], data.get("password"))
        except (msgspec.DecodeError, AttributeError, KeyError, DomainError):
            raise SecretsError(f"stored credentials of {name!r} are unreadable") from None

    def _seal(self, tenant: str, name: str, credentials: ExchangeCredentials) -> str:
        if self._box is None:
            raise DomainError(
                "no accounts key is configured, so credentials cannot be stored",
                field="credentials",
            )
        # Tenant and account inside the token: a token copied onto another row fails.
        payload = {
            "tenant": tenant, "account": name, "api_key": credentials.api_key,
            "secret": credentials.secret, "password": credentials.password,
        }  # fmt: skip
        return self._box.encrypt(msgspec.json.encode(payload).decode())

    async def _known_account(self, tenant: str, name: str) -> Account:
        account = await self._store.account(tenant, name)
        if account is None:
            raise LedgerNotFound(f"no account {name!r}", field="account")
        return account

    # ---- balances -------------------------------------------------------------------

    async def set_balances(
        self,
        tenant: str,
        account: str,
        balances: Mapping[str, Decimal],
        *,
        as_of: int,
        source: BalanceSource,
        complete: bool = False,
    ) -> None:
        """Record what ``account`` reports holding at ``as_of`` (epoch ms).

        A report older than the stored one for an asset does not replace it.
        ``complete``: the report lists every asset held (an exchange sync), so
        stored assets it leaves out are recorded as zero.
        """
        check_tenant(tenant)
        if source not in BALANCE_SOURCES:
            raise DomainError(f"source {source!r} is not one of {BALANCE_SOURCES}", field="source")
        if not isinstance(as_of, int) or isinstance(as_of, bool) or as_of < 0:
            raise DomainError("as_of must be epoch milliseconds", field="as_of")
        rows = [check_balance(asset, amount) for asset, amount in balances.items()]
        await self._known_account(tenant, account)
        await self._store.upsert_balances(
            tenant, account, rows, as_of=as_of, source=source, complete=complete
        )

    async def balances(self, tenant: str, account: str | None = None) -> list[Balance]:
        """The latest reported balance per account and asset, ordered by both."""
        return await self._store.balances(check_tenant(tenant), account)

    # ---- ledger ---------------------------------------------------------------------

    async def import_entries(
        self, tenant: str, entries: Iterable[LedgerEntry], *, create_accounts: bool = True
    ) -> ImportResult:
        """Append the entries not stored yet, all or none.

        Accounts the entries name that do not exist become manual accounts
        (``create_accounts``) or fail the import.
        """
        check_tenant(tenant)
        pending = [_prepare(e) for e in entries]
        async with self._store.ledger_transaction(tenant) as tx:
            return await self._append(tx, pending, create_accounts=create_accounts)

    async def append(
        self, tenant: str, entry: LedgerEntry, *, create_accounts: bool = True
    ) -> ImportResult:
        """One entry; ``ImportResult(0, 1)`` when it is already stored."""
        return await self.import_entries(tenant, [entry], create_accounts=create_accounts)

    async def reverse(
        self, tenant: str, entry_id: str, *, new_id: str | None = None, note: str = ""
    ) -> LedgerEntry:
        """Append the reversal of ``entry_id`` (a copy naming it in ``reverses``) and return it.

        Its id defaults to ``<entry_id>:reversal``; it keeps the original's
        timestamp, so any period that holds the original holds its reversal.
        """
        check_tenant(tenant)
        async with self._store.ledger_transaction(tenant) as tx:
            stored = (await tx.stored([entry_id])).get(entry_id)
            if stored is None:
                raise LedgerNotFound(f"no ledger entry {entry_id!r}", field="entry_id")
            if stored["reverses"] is not None:
                raise DomainError(
                    f"entry {entry_id!r} is itself a reversal; it cannot be reversed",
                    field="entry_id",
                )
            already = (await tx.reversals_of([entry_id])).get(entry_id)
            if already is not None:
                raise DomainError(
                    f"entry {entry_id!r} is already reversed by {already!r}", field="entry_id"
                )
            original = from_fields(stored)
            rid = new_id if new_id is not None else f"{entry_id}:reversal"
            if len(rid) > MAX_ID_LENGTH:
                raise DomainError("the reversal's id is too long: give one", field="new_id")
            reversal = replace(original, id=rid, reverses=entry_id, external_id=None, note=note)
            result = await self._append(tx, [_prepare(reversal)], create_accounts=False)
            if result.added != 1:
                raise DomainError(f"entry {rid!r} already exists", field="new_id")
            return reversal

    async def entries(
        self,
        tenant: str,
        *,
        start: int | None = None,
        end: int | None = None,
        account: str | None = None,
    ) -> list[LedgerEntry]:
        """Entries with ``start <= timestamp < end`` in append order; with ``account``,
        those it sends or receives (a transfer belongs to both of its accounts)."""
        return await self._store.entries(
            check_tenant(tenant), start=start, end=end, account=account
        )

    async def stored_entries(
        self,
        tenant: str,
        *,
        start: int | None = None,
        end: int | None = None,
        account: str | None = None,
        after_seq: int | None = None,
        limit: int | None = None,
    ) -> list[StoredEntry]:
        """As ``entries`` with each entry's ``seq`` and chain hash, for paging
        (``after_seq``: the last seq of the previous page)."""
        return await self._store.stored_entries(
            check_tenant(tenant),
            start=start,
            end=end,
            account=account,
            after_seq=after_seq,
            limit=limit,
        )

    async def tenants(self) -> list[str]:
        """Every tenant with an account or a ledger entry."""
        return await self._store.tenants()

    async def verify(self, tenant: str) -> ChainReport:
        """Check the tenant's chain: the first edited, deleted, reordered or missing entry."""
        return await self._store.verify_chain(check_tenant(tenant))

    async def close(self) -> None:
        await self._store.close()

    async def _append(
        self, tx: LedgerTransaction, pending: list[_Pending], *, create_accounts: bool
    ) -> ImportResult:
        stored = await tx.stored({p.entry.id for p in pending})
        known_external = await tx.external_ids(
            {(p.entry.account, x) for p in pending if (x := p.entry.external_id) is not None}
        )
        new: list[_Pending] = []
        seen: dict[str, bytes] = {}
        for p in pending:
            e = p.entry
            previous = seen.get(e.id)
            if previous is None and e.id in stored:
                previous = canonical(stored[e.id])
            if previous is not None:
                if previous != p.body:
                    raise DomainError(
                        f"entry {e.id!r} is already stored with different content; "
                        "correct it with a reversal, never an edit",
                        field="id",
                    )
                continue
            if e.external_id is not None:
                key = (e.account, e.external_id)
                if key in known_external:
                    continue
                known_external.add(key)
            seen[e.id] = p.body
            new.append(p)
        await self._check_reversals(tx, new, stored)
        await self._ensure_accounts(tx, new, create_accounts)
        await tx.append([(p.fields, p.body) for p in new])
        return ImportResult(added=len(new), skipped=len(pending) - len(new))

    async def _check_reversals(
        self, tx: LedgerTransaction, new: list[_Pending], stored: dict[str, Fields]
    ) -> None:
        targets = {e.reverses for p in new if (e := p.entry).reverses is not None}
        if not targets:
            return
        originals: dict[str, Fields] = {t: stored[t] for t in targets if t in stored}
        originals |= await tx.stored(targets - originals.keys())
        reversed_by = await tx.reversals_of(targets)
        for p in new:  # earlier entries of this import count as stored
            e = p.entry
            target = e.reverses
            if target is not None:
                original = originals.get(target)
                if original is None:
                    raise DomainError(
                        f"entry {e.id!r} reverses unknown entry {target!r}", field="reverses"
                    )
                if original["reverses"] is not None:
                    raise DomainError(
                        f"entry {e.id!r} reverses {target!r}, itself a reversal",
                        field="reverses",
                    )
                if target in reversed_by:
                    raise DomainError(
                        f"entry {e.id!r} reverses {target!r}, already reversed by "
                        f"{reversed_by[target]!r}",
                        field="reverses",
                    )
                differ = [f for f in _COPIED if _differs(f, p.fields[f], original[f])]
                if differ:
                    raise DomainError(
                        f"entry {e.id!r} must copy the {', '.join(differ)} of {target!r}, "
                        "the entry it reverses",
                        field="reverses",
                    )
                reversed_by[target] = e.id
            originals[e.id] = p.fields

    async def _ensure_accounts(
        self, tx: LedgerTransaction, new: list[_Pending], create: bool
    ) -> None:
        names = {p.entry.account for p in new} | {
            t for p in new if (t := p.entry.to_account) is not None
        }
        missing = names - await tx.account_names(names)
        if not missing:
            return
        if not create:
            first = sorted(missing)[0]
            raise LedgerNotFound(
                f"no account {first!r}: add it first or import with create_accounts",
                field="account",
            )
        await tx.add_manual_accounts(missing, self._clock())


def _prepare(entry: LedgerEntry) -> _Pending:
    if not isinstance(entry, LedgerEntry):
        raise DomainError(f"not a ledger entry: {type(entry).__name__}", field="entry")
    if entry.external_id is not None:
        check_name("external_id", entry.external_id, MAX_ID_LENGTH)
    for tag in entry.tags:
        if not isinstance(tag, str):
            raise DomainError(f"entry {entry.id!r}: tags must be text", field="tags")
    fields = to_fields(entry)
    return _Pending(entry, fields, canonical(fields))


def _differs(name: str, a: Any, b: Any) -> bool:
    """Whether field ``name`` differs between two entries' fields ("1.5" == "1.50")."""
    if name in _DECIMALS and a is not None and b is not None:
        return Decimal(a) != Decimal(b)
    return bool(a != b)
