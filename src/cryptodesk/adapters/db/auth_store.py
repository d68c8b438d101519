"""Users, tenants, refresh tokens, API keys and the audit log, in SQL.

Plain rows in, plain rows out; the rules (hashing, rotation, who may do
what) live in ``services/auth_service.py``. Listings take the tenant, so a
query across tenants cannot be written by mistake; the lookups by id that
authentication needs (a token names its user, a key its id) return the row
with its tenant, and the service compares it.

The audit log is one sha256 chain (``portfolio.hash_chain.link_hash`` over the
canonical JSON of each event), extended under a lock: in-process by an
``asyncio.Lock``, across processes by the primary key (two writers that read
the same head cannot both insert the next sequence number; the loser retries).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import func, insert, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine

from cryptodesk.adapters.db.engine import dialect_insert
from cryptodesk.adapters.db.models import (
    api_keys,
    audit_head,
    audit_log,
    refresh_tokens,
    tenants,
    users,
)
from cryptodesk.portfolio.hash_chain import canonical, link_hash

GENESIS = "0" * 64
_AUDIT_RETRIES = 5


@dataclass(frozen=True, slots=True)
class UserRow:
    id: str
    tenant_id: str
    email: str
    password_hash: str
    role: str
    created_at: int
    tokens_after: int
    disabled_at: int | None = None


@dataclass(frozen=True, slots=True)
class RefreshRow:
    id: str
    tenant_id: str
    user_id: str
    family_id: str
    token_hash: str
    created_at: int
    expires_at: int
    used_at: int | None = None
    revoked_at: int | None = None


@dataclass(frozen=True, slots=True)
class ApiKeyRow:
    id: str
    tenant_id: str
    user_id: str
    name: str
    prefix: str
    key_hash: str
    scopes: tuple[str, ...]
    created_at: int
    expires_at: int | None = None
    last_used_at: int | None = None
    revoked_at: int | None = None


@dataclass(frozen=True, slots=True)
class AuditRow:
    seq: int
    tenant_id: str | None
    ts: int
    event: str
    actor: str | None
    subject: str | None
    ip: str | None
    detail: dict[str, Any]
    prev_hash: str
    hash: str


@dataclass(frozen=True, slots=True)
class AuditBreak:
    seq: int
    reason: str


class EmailTaken(Exception):
    """Another user already has this e-mail address."""


def audit_body(
    ts: int,
    tenant_id: str | None,
    event: str,
    actor: str | None,
    subject: str | None,
    ip: str | None,
    detail: dict[str, Any],
) -> bytes:
    """The canonical bytes one audit event's hash covers."""
    return canonical(
        {"ts": ts, "tenant_id": tenant_id, "event": event, "actor": actor,
         "subject": subject, "ip": ip, "detail": detail}
    )  # fmt: skip


class SqlAuthStore:
    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine
        self._audit_lock = asyncio.Lock()

    # -- tenants and users --------------------------------------------------

    async def create_user(self, row: UserRow) -> None:
        """Insert ``row`` (its tenant is created when new); ``EmailTaken`` on a clash."""
        async with self._engine.begin() as conn:
            # Created if missing, race-free: two processes may bootstrap at once.
            await conn.execute(
                dialect_insert(self._engine, tenants)
                .values(id=row.tenant_id, created_at=row.created_at)
                .on_conflict_do_nothing()
            )
            taken = await conn.scalar(select(users.c.id).where(users.c.email == row.email))
            if taken is not None:
                raise EmailTaken(row.email)
            try:
                await conn.execute(insert(users).values(**_fields(row)))
            except IntegrityError as exc:  # a concurrent insert of the same e-mail
                raise EmailTaken(row.email) from exc

    async def count_users(self) -> int:
        async with self._engine.connect() as conn:
            return int(await conn.scalar(select(func.count()).select_from(users)) or 0)

    async def user_by_email(self, email: str) -> UserRow | None:
        return await self._user(users.c.email == email)

    async def user_by_id(self, user_id: str) -> UserRow | None:
        return await self._user(users.c.id == user_id)

    async def _user(self, where: Any) -> UserRow | None:
        async with self._engine.connect() as conn:
            row = (await conn.execute(select(*users.c).where(where))).first()
        return None if row is None else UserRow(*row)

    async def list_users(self, tenant: str) -> list[UserRow]:
        async with self._engine.connect() as conn:
            rows = await conn.execute(
                select(*users.c).where(users.c.tenant_id == tenant).order_by(users.c.email)
            )
            return [UserRow(*row) for row in rows]

    async def update_user(self, tenant: str, user_id: str, **values: Any) -> bool:
        async with self._engine.begin() as conn:
            result = await conn.execute(
                update(users)
                .where(users.c.tenant_id == tenant, users.c.id == user_id)
                .values(**values)
            )
            return bool(result.rowcount)

    # -- refresh tokens -----------------------------------------------------

    async def add_refresh(self, row: RefreshRow) -> None:
        async with self._engine.begin() as conn:
            await conn.execute(insert(refresh_tokens).values(**_fields(row)))

    async def refresh_by_id(self, token_id: str) -> RefreshRow | None:
        async with self._engine.connect() as conn:
            row = (
                await conn.execute(select(*refresh_tokens.c).where(refresh_tokens.c.id == token_id))
            ).first()
        return None if row is None else RefreshRow(*row)

    async def use_refresh(self, token_id: str, now: int) -> bool:
        """Mark the token used; False when it already was (or is revoked): a replay."""
        async with self._engine.begin() as conn:
            result = await conn.execute(
                update(refresh_tokens)
                .where(
                    refresh_tokens.c.id == token_id,
                    refresh_tokens.c.used_at.is_(None),
                    refresh_tokens.c.revoked_at.is_(None),
                )
                .values(used_at=now)
            )
            return bool(result.rowcount)

    async def revoke_refresh(self, now: int, *, family_id: str | None = None,
                             user_id: str | None = None) -> int:  # fmt: skip
        """Revoke a family's or a user's live refresh tokens; how many were live."""
        where = (
            refresh_tokens.c.family_id == family_id
            if family_id is not None
            else refresh_tokens.c.user_id == user_id
        )
        async with self._engine.begin() as conn:
            result = await conn.execute(
                update(refresh_tokens)
                .where(where, refresh_tokens.c.revoked_at.is_(None))
                .values(revoked_at=now)
            )
            return int(result.rowcount)

    # -- API keys -----------------------------------------------------------

    async def add_api_key(self, row: ApiKeyRow) -> None:
        values = _fields(row)
        values["scopes"] = json.dumps(sorted(row.scopes))
        async with self._engine.begin() as conn:
            await conn.execute(insert(api_keys).values(**values))

    async def api_key_by_id(self, key_id: str) -> ApiKeyRow | None:
        async with self._engine.connect() as conn:
            row = (await conn.execute(select(*api_keys.c).where(api_keys.c.id == key_id))).first()
        return None if row is None else _api_key(row)

    async def list_api_keys(self, tenant: str, user_id: str | None = None) -> list[ApiKeyRow]:
        query = select(*api_keys.c).where(api_keys.c.tenant_id == tenant)
        if user_id is not None:
            query = query.where(api_keys.c.user_id == user_id)
        async with self._engine.connect() as conn:
            rows = await conn.execute(query.order_by(api_keys.c.created_at, api_keys.c.id))
            return [_api_key(row) for row in rows]

    async def revoke_api_key(self, tenant: str, key_id: str, now: int) -> bool:
        async with self._engine.begin() as conn:
            result = await conn.execute(
                update(api_keys)
                .where(
                    api_keys.c.tenant_id == tenant,
                    api_keys.c.id == key_id,
                    api_keys.c.revoked_at.is_(None),
                )
                .values(revoked_at=now)
            )
            return bool(result.rowcount)

    async def touch_api_key(self, key_id: str, now: int) -> None:
        async with self._engine.begin() as conn:
            await conn.execute(
                update(api_keys).where(api_keys.c.id == key_id).values(last_used_at=now)
            )

    # -- audit log ----------------------------------------------------------

    async def append_audit(
        self, ts: int, tenant_id: str | None, event: str, actor: str | None,
        subject: str | None, ip: str | None, detail: dict[str, Any],
    ) -> int:  # fmt: skip
        """Append one event to the chain; its sequence number."""
        body = audit_body(ts, tenant_id, event, actor, subject, ip, detail)
        async with self._audit_lock:
            for attempt in range(_AUDIT_RETRIES):
                try:
                    return await self._append(
                        body, ts, tenant_id, event, actor, subject, ip, detail
                    )
                except IntegrityError:  # another process took this sequence number
                    if attempt == _AUDIT_RETRIES - 1:
                        raise
            raise AssertionError("unreachable")

    async def _append(
        self, body: bytes, ts: int, tenant_id: str | None, event: str, actor: str | None,
        subject: str | None, ip: str | None, detail: dict[str, Any],
    ) -> int:  # fmt: skip
        async with self._engine.begin() as conn:
            query = select(audit_head.c.seq, audit_head.c.hash).where(audit_head.c.id == 1)
            if self._engine.dialect.name == "postgresql":
                query = query.with_for_update()
            head = (await conn.execute(query)).first()
            seq, prev = (0, GENESIS) if head is None else (int(head[0]), str(head[1]))
            digest = link_hash(prev, body)
            await conn.execute(
                insert(audit_log).values(
                    seq=seq + 1, tenant_id=tenant_id, ts=ts, event=event, actor=actor,
                    subject=subject, ip=ip, detail=json.dumps(detail, sort_keys=True),
                    prev_hash=prev, hash=digest,
                )
            )  # fmt: skip
            if head is None:
                await conn.execute(insert(audit_head).values(id=1, seq=1, hash=digest))
            else:
                await conn.execute(
                    update(audit_head)
                    .where(audit_head.c.id == 1, audit_head.c.seq == seq)
                    .values(seq=seq + 1, hash=digest)
                )
            return seq + 1

    async def list_audit(
        self, tenant: str | None, *, after: int = 0, limit: int = 100
    ) -> list[AuditRow]:
        """Events in chain order after sequence ``after``; ``tenant`` None: all of them."""
        query = select(*audit_log.c).where(audit_log.c.seq > after)
        if tenant is not None:
            query = query.where(audit_log.c.tenant_id == tenant)
        async with self._engine.connect() as conn:
            rows = await conn.execute(query.order_by(audit_log.c.seq).limit(limit))
            return [_audit(row) for row in rows]

    async def verify_audit(self, batch: int = 5_000) -> AuditBreak | None:
        """The first event whose hash, link or position is wrong; None: the chain holds.

        Each event's hash must be sha256(previous hash + its canonical body), its
        ``prev_hash`` the previous event's hash and its ``seq`` the next number;
        the head row must name the last event (a deleted tail shows there).
        """
        prev, expected, after = GENESIS, 1, 0
        while True:
            rows = await self.list_audit(None, after=after, limit=batch)
            for row in rows:
                body = audit_body(row.ts, row.tenant_id, row.event, row.actor, row.subject,
                                  row.ip, row.detail)  # fmt: skip
                if row.seq != expected:
                    return AuditBreak(expected, f"event {expected} is missing")
                if row.prev_hash != prev:
                    return AuditBreak(
                        row.seq, f"event {row.seq} does not link to event {row.seq - 1}"
                    )
                if link_hash(prev, body) != row.hash:
                    return AuditBreak(row.seq, f"event {row.seq} was changed after it was written")
                prev, expected, after = row.hash, expected + 1, row.seq
            if len(rows) < batch:
                break
        head_seq, head_hash = await self.audit_head()
        if (head_seq, head_hash) != (expected - 1, prev):
            return AuditBreak(expected - 1, f"the head names event {head_seq}: events were removed")
        return None

    async def audit_head(self) -> tuple[int, str]:
        async with self._engine.connect() as conn:
            row = (await conn.execute(select(audit_head.c.seq, audit_head.c.hash))).first()
        return (0, GENESIS) if row is None else (int(row[0]), str(row[1]))


def _fields(row: Any) -> dict[str, Any]:
    return {name: getattr(row, name) for name in row.__slots__}


def _api_key(row: Sequence[Any]) -> ApiKeyRow:
    values = list(row)
    values[6] = tuple(json.loads(values[6]))
    return ApiKeyRow(*values)


def _audit(row: Sequence[Any]) -> AuditRow:
    values = list(row)
    values[7] = json.loads(values[7])
    return AuditRow(*values)
