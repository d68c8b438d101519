"""Accounts a tenant holds assets in, and the balances they report.

Three kinds: ``exchange`` (a ccxt exchange id, optionally with API
credentials so balances and trades can be synced), ``wallet`` (an on-chain
address; balances entered by hand or by a provider) and ``manual`` (anything
else, e.g. a broker or an account created by a ledger import).

Credentials travel only inside :class:`ExchangeCredentials`, whose repr and
str hide every value, so a log line or a traceback cannot leak them. An
:class:`Account` never carries them: it says only whether it has some.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from decimal import Decimal
from typing import Final, Literal

from cryptodesk.domain.errors import DomainError
from cryptodesk.portfolio.ledger import MAX_ACCOUNT_LENGTH, MAX_ASSET_LENGTH

AccountKind = Literal["exchange", "wallet", "manual"]
ACCOUNT_KINDS: Final[tuple[str, ...]] = ("exchange", "wallet", "manual")
BalanceSource = Literal["manual", "exchange", "provider"]
BALANCE_SOURCES: Final[tuple[str, ...]] = ("manual", "exchange", "provider")
MAX_CHAIN_LENGTH: Final = 32
MAX_ADDRESS_LENGTH: Final = 256
MAX_SECRET_LENGTH: Final = 4096
# ccxt ids are lowercase letters and digits ("binance", "bitfinex2", "gateio").
_CCXT_ID = re.compile(r"^[a-z][a-z0-9_]{1,31}$")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def check_name(field: str, value: object, limit: int) -> str:
    """``value`` as a name: non-empty text of at most ``limit`` characters, no edge spaces."""
    if not isinstance(value, str) or not value:
        raise DomainError(f"{field} is required", field=field)
    if len(value) > limit or value != value.strip() or _CONTROL.search(value):
        raise DomainError(f"{field} {value!r} is not a valid {field}", field=field)
    return value


@dataclass(frozen=True, slots=True, repr=False)
class ExchangeCredentials:
    """API key, secret and (for some venues, e.g. OKX, KuCoin) a passphrase."""

    api_key: str
    secret: str
    password: str | None = None

    def __post_init__(self) -> None:
        for name in ("api_key", "secret"):
            value = getattr(self, name)
            if not isinstance(value, str) or not value.strip():
                raise DomainError(f"{name} is required", field=name)
        for name in ("api_key", "secret", "password"):
            value = getattr(self, name)
            if value is not None and len(value) > MAX_SECRET_LENGTH:
                raise DomainError(f"{name} is too long", field=name)

    def __repr__(self) -> str:
        return "ExchangeCredentials(<hidden>)"

    __str__ = __repr__


@dataclass(frozen=True, slots=True)
class AccountSpec:
    """What a caller asks for when adding an account (see the module docstring)."""

    name: str
    kind: AccountKind
    exchange: str | None = None  # ccxt id, for kind "exchange"
    credentials: ExchangeCredentials | None = None
    chain: str | None = None  # for kind "wallet", e.g. "bitcoin", "ethereum"
    address: str | None = None
    note: str = ""

    def __post_init__(self) -> None:
        check_name("name", self.name, MAX_ACCOUNT_LENGTH)
        if self.kind not in ACCOUNT_KINDS:
            raise DomainError(
                f"kind {self.kind!r} is not one of {', '.join(ACCOUNT_KINDS)}", field="kind"
            )
        if self.kind == "exchange":
            if not isinstance(self.exchange, str) or not _CCXT_ID.match(self.exchange):
                raise DomainError(
                    f"exchange {self.exchange!r} is not a ccxt exchange id", field="exchange"
                )
        elif self.exchange is not None or self.credentials is not None:
            raise DomainError(f"a {self.kind} account has no exchange", field="exchange")
        if self.credentials is not None and not isinstance(self.credentials, ExchangeCredentials):
            raise DomainError("credentials must be ExchangeCredentials", field="credentials")
        if self.kind == "wallet":
            check_name("chain", self.chain, MAX_CHAIN_LENGTH)
            check_name("address", self.address, MAX_ADDRESS_LENGTH)
        elif self.chain is not None or self.address is not None:
            raise DomainError(f"a {self.kind} account has no chain or address", field="chain")
        if not isinstance(self.note, str):
            raise DomainError("note must be text", field="note")

    def __repr__(self) -> str:  # the dataclass repr would show the credentials' repr anyway
        return (
            f"AccountSpec(name={self.name!r}, kind={self.kind!r}, exchange={self.exchange!r}, "
            f"has_credentials={self.credentials is not None}, chain={self.chain!r}, "
            f"address={self.address!r})"
        )


@dataclass(frozen=True, slots=True)
class Account:
    """A stored account; credentials stay encrypted in the store."""

    name: str
    kind: AccountKind
    exchange: str | None
    chain: str | None
    address: str | None
    note: str
    has_credentials: bool
    created_at: int  # epoch ms


@dataclass(frozen=True, slots=True)
class Balance:
    """The latest balance ``account`` reported for ``asset``, true at ``as_of``."""

    account: str
    asset: str
    amount: Decimal
    as_of: int  # epoch ms
    source: BalanceSource


def check_balance(asset: object, amount: object) -> tuple[str, Decimal]:
    """A reported balance: an asset name and a finite, non-negative Decimal."""
    name = check_name("asset", asset, MAX_ASSET_LENGTH)
    if not isinstance(amount, Decimal) or not amount.is_finite():
        raise DomainError(f"balance of {name} must be a finite Decimal", field="amount")
    if amount < 0:
        raise DomainError(f"balance of {name} cannot be negative, got {amount}", field="amount")
    return name, amount
