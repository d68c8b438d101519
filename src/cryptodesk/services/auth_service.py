"""Authentication: passwords, access and refresh tokens, API keys, the audit trail.

- Passwords are hashed with argon2id (argon2-cffi's RFC 9106 defaults), in a
  worker thread so a login never stalls the event loop. An unknown e-mail is
  checked against a dummy hash, so its answer takes as long as a wrong password.
- Access tokens are HS256 JWTs (PyJWT) naming the user and tenant, valid
  ``access_seconds``. Each request re-reads the user (cached ``user_ttl``
  seconds per process): a disabled user, a role change or "revoke all" takes
  effect within that time even for tokens already issued.
- Refresh tokens are ``<id>.<secret>``; only sha256(secret) is stored. Each is
  used once and answered with a new one of the same family; presenting a used
  one again (a stolen copy) revokes the family.
- API keys are ``cdk_<id>_<secret>``, shown once; the prefix ``cdk_<id>``
  identifies them in listings. A key acts as its user with its scopes
  (``domain.auth.Principal``); ``last_used_at`` is written at most once a minute.
- Every security event is appended to the hash-chained audit log.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import re
import secrets
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any, Literal

import jwt
import structlog
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

from cryptodesk.adapters.db.auth_store import (
    ApiKeyRow,
    AuditRow,
    EmailTaken,
    RefreshRow,
    SqlAuthStore,
    UserRow,
)
from cryptodesk.domain.auth import (
    AuthenticationError,
    Permission,
    Principal,
    Role,
    check_role,
    check_scopes,
    check_tenant,
)
from cryptodesk.domain.errors import DomainError
from cryptodesk.services.market_queries import QueryError

log = structlog.get_logger(__name__)

ISSUER = "cryptodesk"
AUDIENCE = "cryptodesk-api"
KEY_PREFIX = "cdk_"
EMAIL_PATTERN = re.compile(r"^[^@\s]{1,64}@[^@\s]{1,189}$")
MIN_PASSWORD = 12
MAX_PASSWORD = 256
_TOUCH_EVERY_MS = 60_000
_KEY_PATTERN = re.compile(r"^cdk_([0-9a-f]{16})_([A-Za-z0-9_-]{43})$")
_REFRESH_PATTERN = re.compile(r"^([0-9a-f]{32})\.([A-Za-z0-9_-]{43})$")


def _secret() -> str:
    return base64.urlsafe_b64encode(secrets.token_bytes(32)).decode().rstrip("=")


def _sha256(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def check_email(text: str, *, field: str = "email") -> str:
    email = text.strip().lower()
    if len(email) > 254 or not EMAIL_PATTERN.fullmatch(email):
        raise DomainError(f"{field} {text[:80]!r} is not an e-mail address", field=field)
    return email


def check_password(text: str, *, field: str = "password") -> str:
    if not MIN_PASSWORD <= len(text) <= MAX_PASSWORD:
        raise DomainError(
            f"{field} must be {MIN_PASSWORD} to {MAX_PASSWORD} characters", field=field
        )
    return text


@dataclass(frozen=True, slots=True)
class TokenPair:
    access_token: str
    refresh_token: str
    expires_in: int
    token_type: Literal["bearer"] = "bearer"


@dataclass(frozen=True, slots=True)
class NewApiKey:
    key: str  # shown once
    row: ApiKeyRow


@dataclass(frozen=True, slots=True)
class Origin:
    """Where a security event came from, for the audit log."""

    ip: str | None = None


class AuthService:
    def __init__(
        self,
        store: SqlAuthStore,
        secret: bytes,
        *,
        access_seconds: int = 900,
        refresh_seconds: int = 30 * 86_400,
        user_ttl: float = 5.0,
        clock: Callable[[], float] = time.time,
        hasher: PasswordHasher | None = None,
    ) -> None:
        if len(secret) < 32:
            raise ValueError("the token signing secret must be at least 32 bytes")
        self.store = store
        self._secret = secret
        self.access_seconds = access_seconds
        self.refresh_seconds = refresh_seconds
        self._user_ttl = user_ttl
        self._clock = clock
        self._hasher = hasher or PasswordHasher()
        self._dummy_hash: str | None = None
        self._users: dict[str, tuple[float, UserRow | None]] = {}
        self._keys: dict[str, tuple[float, ApiKeyRow | None]] = {}

    def _now_ms(self) -> int:
        return int(self._clock() * 1000)

    # -- users --------------------------------------------------------------

    async def create_user(
        self, tenant: str, email: str, password: str, role: str, *,
        actor: str | None = None, origin: Origin = Origin(),
    ) -> UserRow:  # fmt: skip
        tenant = check_tenant(tenant)
        email = check_email(email)
        check_password(password)
        checked_role = check_role(role)
        hashed = await asyncio.to_thread(self._hasher.hash, password)
        now = self._now_ms()
        row = UserRow(uuid.uuid4().hex, tenant, email, hashed, checked_role, now, 0)
        try:
            await self.store.create_user(row)
        except EmailTaken as exc:
            raise QueryError(
                f"a user with e-mail {email} exists already", field="email", code="conflict"
            ) from exc
        await self.audit("user_created", tenant, actor, email, origin, {"role": checked_role})
        return row

    async def bootstrap(
        self, tenant: str = "default", email: str = "admin@cryptodesk.local"
    ) -> str | None:
        """When no user exists: an admin with a random password, returned once."""
        if await self.store.count_users():
            return None
        password = secrets.token_urlsafe(18)
        try:
            await self.create_user(tenant, email, password, "admin", actor="bootstrap")
        except DomainError:  # another process bootstrapped first
            return None
        return password

    async def set_role(
        self, principal: Principal, user_id: str, role: str, origin: Origin
    ) -> UserRow:
        checked = check_role(role)
        user = await self._tenant_user(principal.tenant, user_id)
        await self.store.update_user(principal.tenant, user_id, role=checked)
        self._users.pop(user_id, None)
        await self.audit("role_changed", principal.tenant, principal.email, user.email, origin,
                         {"from": user.role, "to": checked})  # fmt: skip
        return replace(user, role=checked)

    async def users(self, tenant: str) -> list[UserRow]:
        return await self.store.list_users(tenant)

    async def _tenant_user(self, tenant: str, user_id: str) -> UserRow:
        user = await self.store.user_by_id(user_id)
        if user is None or user.tenant_id != tenant:
            raise LookupError(user_id)
        return user

    # -- login and tokens ---------------------------------------------------

    async def login(self, email: str, password: str, origin: Origin = Origin()) -> TokenPair:
        address = email.strip().lower()
        user = await self.store.user_by_email(address)
        ok = await asyncio.to_thread(
            self._verify, user.password_hash if user is not None else self._dummy(), password
        )
        if user is None or not ok or user.disabled_at is not None:
            tenant = None if user is None else user.tenant_id
            await self.audit("login_failed", tenant, address[:254], None, origin, {})
            raise AuthenticationError("wrong e-mail or password")
        await self.audit("login", user.tenant_id, user.email, None, origin, {})
        return await self._issue(user, uuid.uuid4().hex)

    def _verify(self, hashed: str, password: str) -> bool:
        try:
            return bool(self._hasher.verify(hashed, password))
        except (VerificationError, InvalidHashError):
            return False

    def _dummy(self) -> str:
        if self._dummy_hash is None:
            self._dummy_hash = self._hasher.hash(secrets.token_hex(16))
        return self._dummy_hash

    async def _issue(self, user: UserRow, family_id: str) -> TokenPair:
        now = self._now_ms()
        # "revoke all" refuses tokens issued up to its millisecond; one issued after
        # it within that same millisecond must still count as newer.
        issued = max(now, user.tokens_after)
        claims = {
            "iss": ISSUER, "aud": AUDIENCE, "sub": user.id, "tid": user.tenant_id,
            "iat": now // 1000, "ams": issued, "exp": now // 1000 + self.access_seconds,
            "jti": uuid.uuid4().hex, "typ": "access",
        }  # fmt: skip
        access = jwt.encode(claims, self._secret, algorithm="HS256")
        token_id, secret = uuid.uuid4().hex, _secret()
        await self.store.add_refresh(
            RefreshRow(
                token_id,
                user.tenant_id,
                user.id,
                family_id,
                _sha256(secret),
                now,
                now + self.refresh_seconds * 1000,
            )
        )
        return TokenPair(access, f"{token_id}.{secret}", self.access_seconds)

    async def refresh(self, token: str, origin: Origin = Origin()) -> TokenPair:
        row = await self._refresh_row(token)
        now = self._now_ms()
        user = await self._live_user(row.user_id)
        if row.revoked_at is not None or row.expires_at <= now or user is None:
            raise AuthenticationError("the refresh token is revoked or expired")
        if not await self.store.use_refresh(row.id, now):
            # A used token again: someone holds a copy. End the whole family.
            await self.store.revoke_refresh(now, family_id=row.family_id)
            await self.audit("refresh_reuse", row.tenant_id, user.email, None, origin,
                             {"family": row.family_id})  # fmt: skip
            raise AuthenticationError("the refresh token was used already; its family is revoked")
        await self.audit("token_refreshed", row.tenant_id, user.email, None, origin, {})
        return await self._issue(user, row.family_id)

    async def logout(self, token: str, origin: Origin = Origin()) -> None:
        """Revoke the refresh token's family (this session on every device it reached)."""
        row = await self._refresh_row(token)
        await self.store.revoke_refresh(self._now_ms(), family_id=row.family_id)
        user = await self.store.user_by_id(row.user_id)
        await self.audit("logout", row.tenant_id, user.email if user else None, None, origin, {})

    async def revoke_all(self, principal: Principal, user_id: str, origin: Origin) -> int:
        """Every refresh token and access token of ``user_id`` (same tenant) stops working."""
        user = await self._tenant_user(principal.tenant, user_id)
        now = self._now_ms()
        count = await self.store.revoke_refresh(now, user_id=user_id)
        await self.store.update_user(principal.tenant, user_id, tokens_after=now + 1)
        self._users.pop(user_id, None)
        await self.audit("tokens_revoked", principal.tenant, principal.email, user.email, origin,
                         {"refresh_tokens": count})  # fmt: skip
        return count

    async def _refresh_row(self, token: str) -> RefreshRow:
        match = _REFRESH_PATTERN.fullmatch(token)
        row = None if match is None else await self.store.refresh_by_id(match[1])
        if (
            match is None
            or row is None
            or not hmac.compare_digest(row.token_hash, _sha256(match[2]))
        ):
            raise AuthenticationError("the refresh token is not valid")
        return row

    async def authenticate_token(self, token: str) -> Principal:
        try:
            claims = jwt.decode(
                token, self._secret, algorithms=["HS256"], audience=AUDIENCE, issuer=ISSUER,
                # Times are checked below, on this service's clock (PyJWT reads the wall clock).
                options={"require": ["exp", "iat", "sub", "tid", "ams", "typ"],
                         "verify_exp": False, "verify_iat": False},
            )  # fmt: skip
        except jwt.PyJWTError as exc:
            raise AuthenticationError("the access token is not valid") from exc
        now = self._clock()
        if not isinstance(claims["exp"], int) or not isinstance(claims["iat"], int):
            raise AuthenticationError("the access token is not valid")
        if claims["iat"] > now:
            raise AuthenticationError("the access token is not valid")
        if claims["exp"] <= now:
            raise AuthenticationError("the access token has expired")
        if claims["typ"] != "access" or not isinstance(claims["sub"], str):
            raise AuthenticationError("the access token is not valid")
        user = await self._live_user(claims["sub"])
        if (
            user is None
            or user.tenant_id != claims["tid"]
            or int(claims["ams"]) < user.tokens_after
        ):
            raise AuthenticationError("the access token is revoked")
        return Principal(user.tenant_id, user.id, user.email, check_role(user.role))

    async def _live_user(self, user_id: str) -> UserRow | None:
        now = self._clock()
        cached = self._users.get(user_id)
        if cached is None or cached[0] <= now:
            user = await self.store.user_by_id(user_id)
            if len(self._users) > 100_000:
                self._users.clear()
            cached = self._users[user_id] = (now + self._user_ttl, user)
        user = cached[1]
        return None if user is None or user.disabled_at is not None else user

    # -- API keys -----------------------------------------------------------

    async def create_api_key(
        self, principal: Principal, name: str, scopes: list[str], *,
        expires_at: int | None = None, origin: Origin = Origin(),
    ) -> NewApiKey:  # fmt: skip
        if principal.kind != "user":
            raise DomainError("API keys are created by users, not by other API keys", field="key")
        wanted = check_scopes(scopes)
        beyond = sorted(p for p in wanted if not principal.can(p))
        if beyond:
            raise DomainError(
                f"scopes: the role {principal.role} does not have {', '.join(beyond)}",
                field="scopes",
            )
        now = self._now_ms()
        if expires_at is not None and expires_at <= now:
            raise DomainError("expires_at must be in the future", field="expires_at")
        key_id, secret = uuid.uuid4().hex[:16], _secret()
        row = ApiKeyRow(key_id, principal.tenant, principal.user_id, name, f"{KEY_PREFIX}{key_id}",
                        _sha256(secret), tuple(sorted(wanted)), now, expires_at)  # fmt: skip
        await self.store.add_api_key(row)
        await self.audit("api_key_created", principal.tenant, principal.email, row.prefix, origin,
                         {"name": name, "scopes": list(row.scopes)})  # fmt: skip
        return NewApiKey(f"{KEY_PREFIX}{key_id}_{secret}", row)

    async def api_keys(self, principal: Principal) -> list[ApiKeyRow]:
        """The caller's keys; an admin sees every key of the tenant."""
        mine = None if principal.role == "admin" else principal.user_id
        return await self.store.list_api_keys(principal.tenant, mine)

    async def revoke_api_key(self, principal: Principal, key_id: str, origin: Origin) -> bool:
        row = await self.store.api_key_by_id(key_id)
        if row is None or row.tenant_id != principal.tenant:
            return False
        if principal.role != "admin" and row.user_id != principal.user_id:
            return False
        done = await self.store.revoke_api_key(principal.tenant, key_id, self._now_ms())
        self._keys.pop(key_id, None)
        if done:
            await self.audit("api_key_revoked", principal.tenant, principal.email, row.prefix,
                             origin, {"name": row.name})  # fmt: skip
        return done

    async def authenticate_key(self, key: str) -> Principal:
        match = _KEY_PATTERN.fullmatch(key)
        if match is None:
            raise AuthenticationError("the API key is not valid")
        row = await self._key_row(match[1])
        now = self._now_ms()
        if row is None or not hmac.compare_digest(row.key_hash, _sha256(match[2])):
            raise AuthenticationError("the API key is not valid")
        if row.revoked_at is not None or (row.expires_at is not None and row.expires_at <= now):
            raise AuthenticationError("the API key is revoked or expired")
        user = await self._live_user(row.user_id)
        if user is None:
            raise AuthenticationError("the API key's user is disabled")
        if row.last_used_at is None or now - row.last_used_at >= _TOUCH_EVERY_MS:
            await self.store.touch_api_key(row.id, now)
            self._keys[row.id] = (self._clock() + self._user_ttl, replace(row, last_used_at=now))
        scopes: frozenset[Permission] = check_scopes(list(row.scopes))
        role: Role = check_role(user.role)
        return Principal(row.tenant_id, user.id, user.email, role, "api_key", row.id, scopes)

    async def _key_row(self, key_id: str) -> ApiKeyRow | None:
        now = self._clock()
        cached = self._keys.get(key_id)
        if cached is None or cached[0] <= now:
            if len(self._keys) > 100_000:
                self._keys.clear()
            cached = self._keys[key_id] = (
                now + self._user_ttl,
                await self.store.api_key_by_id(key_id),
            )
        return cached[1]

    # -- audit --------------------------------------------------------------

    async def audit(
        self, event: str, tenant: str | None, actor: str | None, subject: str | None,
        origin: Origin, detail: dict[str, Any],
    ) -> None:  # fmt: skip
        await self.store.append_audit(self._now_ms(), tenant, event, actor, subject, origin.ip,
                                      detail)  # fmt: skip
        log.info("security event", kind=event, tenant=tenant, actor=actor, subject=subject,
                 ip=origin.ip)  # fmt: skip

    async def audit_events(
        self, tenant: str, *, after: int = 0, limit: int = 100
    ) -> list[AuditRow]:
        return await self.store.list_audit(tenant, after=after, limit=limit)
