"""Wire forms of the ledger routes: entries, pages, imports and the chain check.

Amounts leave and arrive as decimal strings (a JSON number would pass
through a binary float on the way); times leave as ISO 8601 UTC strings
and arrive as ISO 8601 or epoch milliseconds.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr

from cryptodesk.api import ledger_examples as ex
from cryptodesk.domain.errors import DomainError
from cryptodesk.domain.timeutil import parse_time, to_iso
from cryptodesk.portfolio.accounts import Account, AccountSpec, Balance, ExchangeCredentials
from cryptodesk.portfolio.hash_chain import BrokenLink, ChainReport, StoredEntry
from cryptodesk.portfolio.ledger import LedgerEntry, to_decimal

KindName = Literal["buy", "sell", "deposit", "withdrawal", "transfer", "income", "spend", "fee"]


def dec(value: Decimal) -> str:
    """Positional text of an exact amount (never exponent notation, no digits added)."""
    return format(value, "f")


def opt_dec(value: Decimal | None) -> str | None:
    return None if value is None else dec(value)


class _Out(BaseModel):
    model_config = ConfigDict(frozen=True)


class _In(BaseModel):
    model_config = ConfigDict(extra="forbid")


class LotPick(_In):
    """One lot chosen for specific identification."""

    id: str = Field(examples=["b-1"], description="The acquiring entry's id.", max_length=128)
    amount: str = Field(examples=["0.5"], max_length=64)


class LotPickOut(_Out):
    id: str = Field(examples=["b-1"])
    amount: str = Field(examples=["0.5"])


class EntryIn(_In):
    """One ledger transaction. ``id`` is its natural key within the tenant."""

    model_config = ConfigDict(json_schema_extra={"examples": [ex.ENTRY_IN]})

    id: str = Field(examples=["t-2024-0001"], max_length=128)
    timestamp: str = Field(
        examples=["2024-05-01T12:00:00Z"], description="ISO 8601 or epoch ms.", max_length=64
    )
    kind: KindName = Field(examples=["buy"])
    account: str = Field(examples=["binance-main"], max_length=64)
    asset: str = Field(examples=["BTC"], max_length=32)
    amount: str = Field(examples=["0.5"], description="Positive decimal string.", max_length=64)
    counter_asset: str | None = Field(None, examples=["USD"], max_length=32)
    counter_amount: str | None = Field(None, examples=["30000"], max_length=64)
    fee_asset: str | None = Field(None, examples=["USD"], max_length=32)
    fee_amount: str | None = Field(None, examples=["15"], max_length=64)
    fee_value: str | None = Field(
        None, description="The fee's value in the report currency.", max_length=64
    )
    to_account: str | None = Field(
        None, description="A transfer's receiving account.", max_length=64
    )
    value: str | None = Field(None, description="Fair value in the report currency.", max_length=64)
    lot_ids: list[LotPick] = Field(
        default_factory=list, description="Lots selected for specific identification."
    )
    note: str = Field("", max_length=1000)
    subkind: str | None = Field(
        None, examples=["staking"], description="Income only.", max_length=32
    )
    external_id: str | None = Field(None, description="The exchange's own id.", max_length=128)
    tags: list[Annotated[str, Field(max_length=64)]] = Field(default_factory=list, max_length=32)

    def to_entry(self) -> LedgerEntry:
        """The domain entry; a bad value is a ``DomainError`` naming its field."""

        def d(raw: str | None, field: str) -> Decimal | None:
            return None if raw is None else to_decimal(raw, field=field)

        return LedgerEntry(
            id=self.id,
            timestamp=parse_time(self.timestamp, field="timestamp"),
            kind=self.kind,
            account=self.account,
            asset=self.asset,
            amount=to_decimal(self.amount, field="amount"),
            counter_asset=self.counter_asset,
            counter_amount=d(self.counter_amount, "counter_amount"),
            fee_asset=self.fee_asset,
            fee_amount=d(self.fee_amount, "fee_amount"),
            to_account=self.to_account,
            value=d(self.value, "value"),
            lot_ids=tuple((p.id, to_decimal(p.amount, field="lot_ids")) for p in self.lot_ids),
            note=self.note,
            subkind=self.subkind,
            fee_value=d(self.fee_value, "fee_value"),
            external_id=self.external_id,
            tags=tuple(self.tags),
        )


class EntryData(_Out):
    """An entry's fields, as stored."""

    model_config = ConfigDict(json_schema_extra={"examples": [ex.ENTRY, ex.REVERSAL]})

    id: str = Field(examples=["t-2024-0001"])
    timestamp: str = Field(examples=["2024-05-01T12:00:00.000Z"])
    timestamp_ms: int = Field(examples=[1714564800000])
    kind: KindName = Field(examples=["buy"])
    subkind: str | None = Field(examples=[None])
    account: str = Field(examples=["binance-main"])
    asset: str = Field(examples=["BTC"])
    amount: str = Field(examples=["0.5"])
    counter_asset: str | None = Field(examples=["USD"])
    counter_amount: str | None = Field(examples=["30000"])
    fee_asset: str | None = Field(examples=["USD"])
    fee_amount: str | None = Field(examples=["15"])
    fee_value: str | None = Field(examples=[None])
    to_account: str | None = Field(examples=[None])
    value: str | None = Field(examples=[None])
    lot_ids: list[LotPickOut] = Field(examples=[[]])
    note: str = Field(examples=[""])
    reverses: str | None = Field(examples=[None], description="The entry this one corrects.")
    external_id: str | None = Field(examples=[None])
    tags: list[str] = Field(examples=[[]])

    @staticmethod
    def values(e: LedgerEntry) -> dict[str, Any]:
        return {
            "id": e.id, "timestamp": to_iso(e.timestamp), "timestamp_ms": e.timestamp,
            "kind": e.kind, "subkind": e.subkind, "account": e.account, "asset": e.asset,
            "amount": dec(e.amount), "counter_asset": e.counter_asset,
            "counter_amount": opt_dec(e.counter_amount), "fee_asset": e.fee_asset,
            "fee_amount": opt_dec(e.fee_amount), "fee_value": opt_dec(e.fee_value),
            "to_account": e.to_account, "value": opt_dec(e.value),
            "lot_ids": [LotPickOut(id=i, amount=dec(a)) for i, a in e.lot_ids],
            "note": e.note, "reverses": e.reverses, "external_id": e.external_id,
            "tags": list(e.tags),
        }  # fmt: skip

    @classmethod
    def of(cls, e: LedgerEntry) -> EntryData:
        return cls(**cls.values(e))


class EntryOut(EntryData):
    """A stored entry with its place in the tenant's hash chain."""

    model_config = ConfigDict(json_schema_extra={"examples": [ex.STORED_ENTRY]})

    seq: int = Field(examples=[1], description="Position in the tenant's hash chain, from 1.")
    hash: str = Field(
        examples=["9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"],
        description="sha256 of the chain up to and including this entry.",
    )

    @classmethod
    def stored(cls, s: StoredEntry) -> EntryOut:
        return cls(seq=s.seq, hash=s.hash, **cls.values(s.entry))


class EntriesPage(_Out):
    model_config = ConfigDict(json_schema_extra={"examples": [ex.ENTRIES_PAGE]})

    entries: list[EntryOut] = Field(description="In chain order (seq ascending).")
    next_cursor: str | None = Field(
        examples=[None], description="Pass as `cursor` (same filters) for the next page."
    )


class ReverseIn(_In):
    model_config = ConfigDict(json_schema_extra={"examples": [ex.REVERSE_IN]})

    id: str | None = Field(
        None, description="The reversal's id (default: derived from the original's).",
        max_length=128,
    )  # fmt: skip
    note: str = Field("", max_length=1000)


class ImportOut(_Out):
    model_config = ConfigDict(json_schema_extra={"examples": [ex.IMPORTED]})

    added: int = Field(examples=[120], description="Entries appended to the chain.")
    skipped: int = Field(examples=[3], description="Already stored (same id or exchange id).")


class BrokenLinkOut(_Out):
    seq: int = Field(examples=[42], description="Where the chain first fails to hold.")
    id: str | None = Field(
        examples=["t-2024-0042"], description="The entry there; null when it is gone."
    )
    reason: Literal[
        "edited", "deleted", "reordered", "bad_prev_link", "truncated", "head_mismatch"
    ] = Field(examples=["edited"])
    message: str = Field(examples=["entry 't-2024-0042' (seq 42) does not match its hash"])

    @classmethod
    def of(cls, b: BrokenLink) -> BrokenLinkOut:
        return cls(seq=b.seq, id=b.entry_id, reason=b.reason, message=b.message)


class VerifyOut(_Out):
    model_config = ConfigDict(json_schema_extra={"examples": [ex.VERIFIED, ex.BROKEN]})

    ok: bool = Field(examples=[True])
    entries: int = Field(examples=[1250], description="Stored entries examined.")
    first_broken: BrokenLinkOut | None = Field(
        examples=[None], description="The first place the chain does not hold; null when ok."
    )
    head_hash: str | None = Field(
        examples=["9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"],
        description="The newest entry's chain hash when ok (64 zeros when empty), else null. "
        "Recorded elsewhere, it also exposes a rewrite of the whole chain.",
    )

    @classmethod
    def of(cls, r: ChainReport) -> VerifyOut:
        broken = None if r.first_broken is None else BrokenLinkOut.of(r.first_broken)
        return cls(ok=r.ok, entries=r.entries, first_broken=broken, head_hash=r.head_hash)


# ---- accounts -------------------------------------------------------------------------


class _AccountIn(_In):
    name: str = Field(examples=["binance-main"], max_length=64)
    note: str = Field("", max_length=1000)


class ExchangeAccountIn(_AccountIn):
    """An exchange account; with ``api_key`` and ``secret`` it can be synced.

    The credentials are encrypted at rest and never returned by any route."""

    model_config = ConfigDict(json_schema_extra={"examples": [ex.EXCHANGE_ACCOUNT_IN]})

    kind: Literal["exchange"]
    exchange: str = Field(examples=["binance"], description="ccxt exchange id.", max_length=32)
    api_key: SecretStr | None = Field(None, json_schema_extra={"writeOnly": True})
    secret: SecretStr | None = Field(None, json_schema_extra={"writeOnly": True})
    password: SecretStr | None = Field(
        None, description="Passphrase, for the venues that have one (OKX, KuCoin).",
        json_schema_extra={"writeOnly": True},
    )  # fmt: skip

    def to_spec(self) -> AccountSpec:
        return AccountSpec(
            self.name, "exchange", exchange=self.exchange, credentials=self.credentials(),
            note=self.note,
        )  # fmt: skip

    def credentials(self) -> ExchangeCredentials | None:
        key, secret, password = self.api_key, self.secret, self.password
        if key is None and secret is None and password is None:
            return None
        if key is None:
            raise DomainError("api_key is required with secret or password", field="api_key")
        if secret is None:
            raise DomainError("secret is required with api_key", field="secret")
        return ExchangeCredentials(
            key.get_secret_value(),
            secret.get_secret_value(),
            None if password is None else password.get_secret_value(),
        )


class WalletAccountIn(_AccountIn):
    """An on-chain wallet; its balances are entered (``PUT .../balances``) or synced."""

    model_config = ConfigDict(json_schema_extra={"examples": [ex.WALLET_ACCOUNT_IN]})

    kind: Literal["wallet"]
    chain: str = Field(examples=["bitcoin"], max_length=32)
    address: str = Field(examples=["bc1qxy2kgdygjrsqtzq2n0yrf2493p83kkfjhx0wlh"], max_length=256)

    def to_spec(self) -> AccountSpec:
        return AccountSpec(
            self.name, "wallet", chain=self.chain, address=self.address, note=self.note
        )


class ManualAccountIn(_AccountIn):
    """Any other place assets are held (a broker, cash); fed by imports and entries."""

    model_config = ConfigDict(json_schema_extra={"examples": [ex.MANUAL_ACCOUNT_IN]})

    kind: Literal["manual"]

    def to_spec(self) -> AccountSpec:
        return AccountSpec(self.name, "manual", note=self.note)


AccountIn = Annotated[
    ExchangeAccountIn | WalletAccountIn | ManualAccountIn, Field(discriminator="kind")
]


class AccountOut(_Out):
    model_config = ConfigDict(json_schema_extra={"examples": [ex.ACCOUNT]})

    name: str = Field(examples=["binance-main"])
    kind: Literal["exchange", "wallet", "manual"] = Field(examples=["exchange"])
    exchange: str | None = Field(examples=["binance"])
    chain: str | None = Field(examples=[None])
    address: str | None = Field(examples=[None])
    note: str = Field(examples=[""])
    has_credentials: bool = Field(
        examples=[True], description="API credentials are stored (they are never returned)."
    )
    created_at: str = Field(examples=["2024-05-01T12:00:00.000Z"])

    @classmethod
    def of(cls, a: Account) -> AccountOut:
        return cls(
            name=a.name, kind=a.kind, exchange=a.exchange, chain=a.chain, address=a.address,
            note=a.note, has_credentials=a.has_credentials, created_at=to_iso(a.created_at),
        )  # fmt: skip


class AccountsOut(_Out):
    model_config = ConfigDict(json_schema_extra={"examples": [ex.ACCOUNTS]})

    accounts: list[AccountOut] = Field(description="By name.")


class BalancesIn(_In):
    model_config = ConfigDict(json_schema_extra={"examples": [ex.BALANCES_IN]})

    balances: dict[str, str] = Field(
        examples=[{"BTC": "0.5", "ETH": "12.25"}],
        description="Asset -> amount held (decimal string, zero or more).",
        max_length=10_000,
    )
    as_of: str | None = Field(
        None, examples=["2024-05-01T12:00:00Z"], description="When true (default: now).",
        max_length=64,
    )  # fmt: skip

    def amounts(self) -> dict[str, Decimal]:
        return {
            asset: to_decimal(amount, field=f"balances.{asset}")
            for asset, amount in self.balances.items()
        }


class BalanceOut(_Out):
    asset: str = Field(examples=["BTC"])
    amount: str = Field(examples=["0.5"])
    as_of: str = Field(examples=["2024-05-01T12:00:00.000Z"])
    source: Literal["manual", "exchange", "provider"] = Field(examples=["manual"])

    @classmethod
    def of(cls, b: Balance) -> BalanceOut:
        return cls(asset=b.asset, amount=dec(b.amount), as_of=to_iso(b.as_of), source=b.source)


class BalancesOut(_Out):
    model_config = ConfigDict(json_schema_extra={"examples": [ex.BALANCES]})

    account: str = Field(examples=["cold-wallet"])
    balances: list[BalanceOut] = Field(description="The latest reported per asset, by asset.")
