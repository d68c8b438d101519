"""Who is asking and what they may do: roles, permissions and the principal.

The permission matrix (docs/security.md) lives here, once: every route
declares one permission, and a principal holds it when its role grants it
and, for an API key, when the key's scopes include it too.

- ``viewer`` reads everything of its tenant;
- ``trader`` also places orders, runs backtests and keeps its own API keys;
- ``manager`` also writes the ledger, accounts and signal rules, syncs and
  throws the kill switch;
- ``admin`` also manages users, reads the audit log and the scheduled jobs.

``public`` is the permission of what anyone may read without credentials
(health probes; market data while ``CRYPTODESK_PUBLIC_MARKET_DATA`` is on);
``profile:read`` (one's own identity, sessions) belongs to every role.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Final, Literal, get_args

from cryptodesk.domain.errors import DomainError

Role = Literal["viewer", "trader", "manager", "admin"]
ROLES: Final[tuple[Role, ...]] = get_args(Role)

Permission = Literal[
    "public",
    "profile:read",
    "market:read",
    "signals:read",
    "signals:write",
    "backtests:read",
    "backtests:run",
    "ledger:read",
    "ledger:write",
    "accounts:read",
    "accounts:write",
    "portfolio:read",
    "portfolio:sync",
    "reports:read",
    "risk:read",
    "orders:read",
    "orders:write",
    "orders:kill",
    "api_keys:manage",
    "users:manage",
    "audit:read",
    "jobs:read",
]
PERMISSIONS: Final[tuple[Permission, ...]] = get_args(Permission)

_VIEWER: frozenset[Permission] = frozenset(
    {
        "public",
        "profile:read",
        "market:read",
        "signals:read",
        "backtests:read",
        "ledger:read",
        "accounts:read",
        "portfolio:read",
        "reports:read",
        "risk:read",
        "orders:read",
    }
)
_TRADER: frozenset[Permission] = _VIEWER | {"orders:write", "backtests:run", "api_keys:manage"}
_MANAGER: frozenset[Permission] = _TRADER | {
    "ledger:write",
    "accounts:write",
    "portfolio:sync",
    "signals:write",
    "orders:kill",
}
_ADMIN = frozenset(PERMISSIONS)

ROLE_PERMISSIONS: Final[dict[Role, frozenset[Permission]]] = {
    "viewer": _VIEWER,
    "trader": _TRADER,
    "manager": _MANAGER,
    "admin": _ADMIN,
}

# Tenant ids: lower-case letters, digits, "_" and "-", 1-63 characters.
TENANT_PATTERN: Final = re.compile(r"^[a-z0-9][a-z0-9_-]{0,62}$")


def check_tenant(tenant: object, *, field: str = "tenant") -> str:
    """A tenant id: 1-63 of a-z, 0-9, ``_``, ``-``, starting a-z0-9; else ``DomainError``."""
    if not isinstance(tenant, str) or not TENANT_PATTERN.fullmatch(tenant):
        shown = tenant[:80] if isinstance(tenant, str) else tenant
        raise DomainError(f"{field} {shown!r} is not a tenant id", field=field)
    return tenant


def check_role(text: str, *, field: str = "role") -> Role:
    if text not in ROLES:
        raise DomainError(f"{field} {text!r} is not one of {', '.join(ROLES)}", field=field)
    return text


def check_scopes(
    scopes: list[str] | tuple[str, ...], *, field: str = "scopes"
) -> frozenset[Permission]:
    """API key scopes: known permissions (``public`` is implied, never a scope)."""
    unknown = sorted(set(scopes) - set(PERMISSIONS) | ({"public"} & set(scopes)))
    if unknown:
        raise DomainError(
            f"{field}: {', '.join(unknown)} is not a permission (see docs/security.md)",
            field=field,
        )
    return frozenset(scopes)  # type: ignore[arg-type]


@dataclass(frozen=True, slots=True)
class Principal:
    """The authenticated caller: a user (access token) or one of its API keys.

    ``scopes`` is ``None`` for a user (its role decides alone) and the key's
    scopes for an API key (role and scopes both must grant a permission).
    """

    tenant: str
    user_id: str
    email: str
    role: Role
    kind: Literal["user", "api_key"] = "user"
    key_id: str | None = None
    scopes: frozenset[Permission] | None = field(default=None)

    def can(self, permission: Permission) -> bool:
        if permission == "public":
            return True
        if permission == "profile:read":  # any authenticated caller, whatever its scopes
            return bool(self.user_id)
        if permission not in ROLE_PERMISSIONS[self.role]:
            return False
        return self.scopes is None or permission in self.scopes

    @property
    def rate_key(self) -> str:
        """What a rate limit counts: the API key, else the user."""
        return f"key:{self.key_id}" if self.key_id is not None else f"user:{self.user_id}"


ANONYMOUS_ROLE: Final[Role] = "viewer"


class AuthenticationError(Exception):
    """Credentials are missing, malformed, expired, tampered with or revoked (401).

    The message is safe to show the caller: it never contains the credential.
    """


class PermissionDenied(Exception):
    """The caller is authenticated but its role or scopes lack ``permission`` (403)."""

    def __init__(self, permission: str) -> None:
        super().__init__(f"this needs the permission {permission!r}")
        self.permission = permission
