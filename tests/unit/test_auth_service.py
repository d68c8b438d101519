"""AuthService and SqlAuthStore on a migrated SQLite file, on a clock the test turns.

Passwords (argon2id), access tokens (expiry to the millisecond, tampering),
refresh rotation with reuse detection, revoke-all, disabled users, API keys
(scopes, prefix, last use, revocation), secrets kept out of the database file,
and the hash-chained audit log with what an edit made behind its back shows.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
from collections.abc import AsyncIterator, Awaitable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jwt
import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from cryptodesk.adapters.db.auth_store import (
    GENESIS,
    ApiKeyRow,
    AuditBreak,
    AuditRow,
    RefreshRow,
    SqlAuthStore,
    UserRow,
    audit_body,
)
from cryptodesk.adapters.db.engine import create_engine
from cryptodesk.domain.auth import AuthenticationError, Principal, Role
from cryptodesk.domain.errors import DomainError
from cryptodesk.portfolio.hash_chain import link_hash
from cryptodesk.services.auth_service import AuthService, Origin
from tests.unit._auth import PASSWORD, SECRET, auth_db, auth_service

T0 = 1_714_521_600.0  # 2024-05-01T00:00:00Z
MS = 1_714_521_600_000
IP = Origin("203.0.113.7")
EXPIRED = "the access token has expired"
INVALID = "the access token is not valid"
REVOKED = "the access token is revoked"
DEAD_REFRESH = "the refresh token is revoked or expired"
BAD_REFRESH = "the refresh token is not valid"
REUSED = "the refresh token was used already; its family is revoked"
BAD_KEY, DEAD_KEY = "the API key is not valid", "the API key is revoked or expired"
WRONG_LOGIN = "wrong e-mail or password"


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> float:
        return self.now


@dataclass
class Env:
    auth: AuthService
    clock: Clock
    db: Path
    engine: AsyncEngine

    @property
    def store(self) -> SqlAuthStore:
        return self.auth.store

    async def user(self, name: str, role: Role = "trader", tenant: str = "acme") -> UserRow:
        return await self.auth.create_user(tenant, f"{name}@{tenant}.test", PASSWORD, role)

    async def principal(self, user: UserRow) -> Principal:
        pair = await self.auth.login(user.email, PASSWORD)
        return await self.auth.authenticate_token(pair.access_token)

    async def events(self, tenant: str | None = None) -> list[str]:
        return [row.event for row in await self.store.list_audit(tenant)]


@pytest.fixture
async def env() -> AsyncIterator[Env]:
    db = auth_db()
    engine = create_engine(f"sqlite+aiosqlite:///{db}")
    clock = Clock()
    yield Env(auth_service(engine, clock=clock), clock, db, engine)
    await engine.dispose()


async def refuses(
    call: Awaitable[object], message: str, kind: type[Exception] = AuthenticationError
) -> None:
    """``call`` raises ``kind`` with exactly ``message``."""
    with pytest.raises(kind) as caught:
        await call
    assert str(caught.value) == message


def sha256(value: str) -> str:
    return hashlib.sha256(value.encode()).hexdigest()


def claims_of(token: str) -> dict[str, Any]:
    return dict(jwt.decode(token, options={"verify_signature": False}))


def b64(value: dict[str, Any]) -> str:
    return base64.urlsafe_b64encode(json.dumps(value).encode()).decode().rstrip("=")


# ---- passwords and login --------------------------------------------------------------


async def test_login_answers_a_short_lived_signed_jwt_and_a_refresh_token(env: Env) -> None:
    ana = await env.auth.create_user("acme", " Ana@Acme.test ", PASSWORD, "trader")
    assert (ana.email, ana.role, ana.created_at) == ("ana@acme.test", "trader", MS)
    pair = await env.auth.login("ANA@acme.test ", PASSWORD, IP)
    assert (pair.token_type, pair.expires_in) == ("bearer", 900)
    assert jwt.get_unverified_header(pair.access_token) == {"alg": "HS256", "typ": "JWT"}
    claims = claims_of(pair.access_token)
    assert claims == {
        "iss": "cryptodesk", "aud": "cryptodesk-api", "sub": ana.id, "tid": "acme",
        "iat": 1_714_521_600, "ams": MS, "exp": 1_714_522_500, "jti": claims["jti"],
        "typ": "access",
    }  # fmt: skip
    principal = await env.auth.authenticate_token(pair.access_token)
    assert principal == Principal("acme", ana.id, "ana@acme.test", "trader")
    token_id, secret = pair.refresh_token.split(".")
    assert re.fullmatch(r"[0-9a-f]{32}", token_id)
    assert re.fullmatch(r"[\w-]{43}", secret)
    row = await env.store.refresh_by_id(token_id)
    assert row == RefreshRow(token_id, "acme", ana.id, row.family_id if row else "",
                             sha256(secret), MS, MS + 30 * 86_400_000)  # fmt: skip
    login = (await env.store.list_audit("acme"))[-1]
    assert (login.event, login.actor, login.ip, login.ts) == ("login", ana.email, IP.ip, MS)


async def test_passwords_are_stored_as_argon2id_hashes(env: Env) -> None:
    ana = await env.user("ana")
    stored = await env.store.user_by_id(ana.id)
    assert stored is not None
    assert stored.password_hash.startswith("$argon2id$v=19$m=8,t=1,p=1$")
    # The production hasher: argon2-cffi's RFC 9106 low-memory profile, argon2id.
    default = AuthService(env.store, SECRET, clock=env.clock)
    bob = await default.create_user("acme", "bob@acme.test", PASSWORD, "viewer")
    assert bob.password_hash.startswith("$argon2id$v=19$m=65536,t=3,p=4$")
    assert (await default.login("bob@acme.test", PASSWORD)).token_type == "bearer"
    with pytest.raises(ValueError, match="at least 32 bytes"):
        AuthService(env.store, SECRET[:31])


async def test_wrong_password_unknown_email_and_disabled_user_get_the_same_answer(
    env: Env,
) -> None:
    ana = await env.user("ana")
    await env.user("cid")
    await env.store.update_user("acme", (await env.user("dot")).id, disabled_at=MS)
    attempts = [("ana@acme.test", PASSWORD + "x"), ("nobody@acme.test", PASSWORD),
                ("dot@acme.test", PASSWORD), ("ana@acme.test", "")]  # fmt: skip
    for email, password in attempts:
        await refuses(env.auth.login(email, password, IP), WRONG_LOGIN)
    failed = [r for r in await env.store.list_audit(None) if r.event == "login_failed"]
    assert [(r.tenant_id, r.actor, r.ip) for r in failed] == [
        ("acme", ana.email, IP.ip), (None, "nobody@acme.test", IP.ip),
        ("acme", "dot@acme.test", IP.ip), ("acme", ana.email, IP.ip),
    ]  # fmt: skip


async def test_bootstrap_makes_one_admin_only_while_there_are_no_users(env: Env) -> None:
    password = await env.auth.bootstrap()
    assert password is not None
    assert len(password) == 24
    [admin] = await env.auth.users("default")
    assert (admin.email, admin.role) == ("admin@cryptodesk.local", "admin")
    assert (await env.auth.login(admin.email, password)).token_type == "bearer"
    assert await env.auth.bootstrap() is None


# ---- access tokens --------------------------------------------------------------------


async def test_an_access_token_expires_to_the_millisecond_on_the_service_clock(env: Env) -> None:
    ana = await env.user("ana")
    pair = await env.auth.login(ana.email, PASSWORD)
    env.clock.now = T0 + 899.5
    assert (await env.auth.authenticate_token(pair.access_token)).user_id == ana.id
    env.clock.now = T0 + 900
    await refuses(env.auth.authenticate_token(pair.access_token), EXPIRED)
    env.clock.now = T0 - 1  # issued "in the future": a clock gone wrong, not a valid token
    await refuses(env.auth.authenticate_token(pair.access_token), INVALID)


async def test_tampered_forged_and_malformed_access_tokens_are_refused(env: Env) -> None:
    ana, root = await env.user("ana"), await env.user("root", "admin")
    pair = await env.auth.login(ana.email, PASSWORD)
    head, body, sig = pair.access_token.split(".")
    claims = claims_of(pair.access_token)

    def signed(**change: Any) -> str:
        return jwt.encode({**claims, **change}, SECRET, algorithm="HS256")

    invalid = {
        "signature flipped": f"{head}.{body}.{sig[:10]}{'B' if sig[10] == 'A' else 'A'}{sig[11:]}",
        "payload changed": f"{head}.{b64({**claims, 'sub': root.id})}.{sig}",
        "alg none": jwt.encode({**claims, "sub": root.id}, "", algorithm="none"),
        "wrong secret": jwt.encode(claims, b"another-secret-of-at-least-32-bytes", "HS256"),
        "no signature": f"{head}.{body}.",
        "not a jwt": "abc", "three parts": "a.b.c", "empty": "",
        "a refresh token": pair.refresh_token,
        "another type": signed(typ="refresh"), "another audience": signed(aud="elsewhere"),
        "another issuer": signed(iss="elsewhere"), "exp as text": signed(exp=str(claims["exp"])),
        "no ams": jwt.encode({k: v for k, v in claims.items() if k != "ams"}, SECRET, "HS256"),
    }  # fmt: skip
    for token in invalid.values():
        await refuses(env.auth.authenticate_token(token), INVALID)
    # Signed with the right secret but naming a tenant or user that does not hold.
    for token in (signed(tid="beta"), signed(sub="0" * 32)):
        await refuses(env.auth.authenticate_token(token), REVOKED)
    assert (await env.auth.authenticate_token(pair.access_token)).role == "trader"


async def test_a_disabled_user_is_refused_everywhere_once_the_cache_expires(env: Env) -> None:
    ana = await env.user("ana")
    principal = await env.principal(ana)
    pair = await env.auth.login(ana.email, PASSWORD)
    key = await env.auth.create_api_key(principal, "k", ["market:read"])
    assert await env.store.update_user("acme", ana.id, disabled_at=MS) is True
    # Each process re-reads a user at most every user_ttl (5 s).
    assert (await env.auth.authenticate_token(pair.access_token)).user_id == ana.id
    env.clock.now = T0 + 5
    await refuses(env.auth.authenticate_token(pair.access_token), REVOKED)
    await refuses(env.auth.refresh(pair.refresh_token), DEAD_REFRESH)
    await refuses(env.auth.authenticate_key(key.key), "the API key's user is disabled")
    await refuses(env.auth.login(ana.email, PASSWORD), WRONG_LOGIN)


# ---- refresh tokens -------------------------------------------------------------------


async def test_refresh_rotates_and_a_reused_token_revokes_its_whole_family(env: Env) -> None:
    ana = await env.user("ana")
    first = await env.auth.login(ana.email, PASSWORD)
    elsewhere = await env.auth.login(ana.email, PASSWORD)  # another session, another family
    env.clock.now = T0 + 60
    second = await env.auth.refresh(first.refresh_token, IP)
    assert second.refresh_token != first.refresh_token
    assert claims_of(second.access_token)["iat"] == 1_714_521_660
    old, new = [await env.store.refresh_by_id(p.refresh_token[:32]) for p in (first, second)]
    assert old is not None
    assert new is not None
    assert (old.used_at, new.used_at, new.family_id) == (MS + 60_000, None, old.family_id)
    await refuses(env.auth.refresh(first.refresh_token, IP), REUSED)
    await refuses(env.auth.refresh(second.refresh_token), DEAD_REFRESH)
    assert (await env.auth.refresh(elsewhere.refresh_token)).token_type == "bearer"
    reuse = (await env.store.list_audit("acme"))[-2]
    assert (reuse.event, reuse.actor, reuse.ip, reuse.detail) == (
        "refresh_reuse", ana.email, IP.ip, {"family": old.family_id})  # fmt: skip
    assert await env.events() == ["user_created", "login", "login", "token_refreshed",
                                  "refresh_reuse", "token_refreshed"]  # fmt: skip


async def test_refresh_tokens_expire_and_malformed_ones_are_refused(env: Env) -> None:
    ana = await env.user("ana")
    a, b = [await env.auth.login(ana.email, PASSWORD) for _ in range(2)]
    env.clock.now = T0 + 30 * 86_400 - 0.5
    assert (await env.auth.refresh(a.refresh_token)).expires_in == 900
    env.clock.now = T0 + 30 * 86_400
    await refuses(env.auth.refresh(b.refresh_token), DEAD_REFRESH)
    token_id, secret = b.refresh_token.split(".")
    # One character of the secret changed (to a different character, whatever it was).
    tampered = f"{token_id}.{secret[:-1]}{'B' if secret.endswith('A') else 'A'}"
    for bad in ("", "abc", tampered, f"{'0' * 32}.{secret}",
                f"{token_id}.{secret}x", b.access_token):  # fmt: skip
        await refuses(env.auth.refresh(bad), BAD_REFRESH)
        await refuses(env.auth.logout(bad), BAD_REFRESH)


async def test_logout_revokes_the_family_and_leaves_other_sessions(env: Env) -> None:
    ana = await env.user("ana")
    a, b = [await env.auth.login(ana.email, PASSWORD) for _ in range(2)]
    rotated = await env.auth.refresh(a.refresh_token)
    await env.auth.logout(rotated.refresh_token, IP)
    await refuses(env.auth.refresh(rotated.refresh_token), DEAD_REFRESH)
    assert (await env.auth.refresh(b.refresh_token)).token_type == "bearer"
    # An access token is short-lived and not revoked by logout: it runs out by itself.
    assert (await env.auth.authenticate_token(rotated.access_token)).user_id == ana.id
    assert (await env.events("acme"))[-2:] == ["logout", "token_refreshed"]


async def test_revoke_all_ends_every_session_and_a_new_login_works_right_after(
    env: Env,
) -> None:
    root, ana = await env.user("root", "admin"), await env.user("ana")
    admin = await env.principal(root)
    sessions = [await env.auth.login(ana.email, PASSWORD) for _ in range(2)]
    # The same millisecond throughout: issued before revoke-all fails, after it works.
    assert await env.auth.revoke_all(admin, ana.id, IP) == 2
    for pair in sessions:
        await refuses(env.auth.authenticate_token(pair.access_token), REVOKED)
        await refuses(env.auth.refresh(pair.refresh_token), DEAD_REFRESH)
    again = await env.auth.login(ana.email, PASSWORD)
    assert (await env.auth.authenticate_token(again.access_token)).user_id == ana.id
    assert (await env.auth.refresh(again.refresh_token)).token_type == "bearer"
    revoked = [r for r in await env.store.list_audit("acme") if r.event == "tokens_revoked"]
    assert [(r.actor, r.subject, r.detail) for r in revoked] == [
        (root.email, ana.email, {"refresh_tokens": 2})]  # fmt: skip
    other = await env.principal(await env.user("boss", "admin", "beta"))
    with pytest.raises(LookupError):
        await env.auth.revoke_all(other, ana.id, IP)


async def test_a_role_change_is_audited_and_applies_at_once(env: Env) -> None:
    root, ana = await env.user("root", "admin"), await env.user("ana")
    admin = await env.principal(root)
    pair = await env.auth.login(ana.email, PASSWORD)
    assert (await env.auth.authenticate_token(pair.access_token)).role == "trader"
    changed = await env.auth.set_role(admin, ana.id, "viewer", IP)
    assert (changed.id, changed.role) == (ana.id, "viewer")
    assert (await env.auth.authenticate_token(pair.access_token)).role == "viewer"
    event = (await env.store.list_audit("acme"))[-1]
    assert (event.event, event.actor, event.subject, event.detail) == (
        "role_changed", root.email, ana.email, {"from": "trader", "to": "viewer"})  # fmt: skip
    message = "role 'root' is not one of viewer, trader, manager, admin"
    await refuses(env.auth.set_role(admin, ana.id, "root", IP), message, DomainError)
    other = await env.principal(await env.user("boss", "admin", "beta"))
    with pytest.raises(LookupError):
        await env.auth.set_role(other, ana.id, "admin", IP)


# ---- API keys -------------------------------------------------------------------------


async def test_an_api_key_is_shown_once_held_to_its_scopes_and_touched_once_a_minute(
    env: Env,
) -> None:
    ana = await env.user("ana")
    trader = await env.principal(ana)
    new = await env.auth.create_api_key(trader, "grafana", ["orders:read", "market:read"],
                                           origin=IP)  # fmt: skip
    found = re.fullmatch(r"cdk_([0-9a-f]{16})_([\w-]{43})", new.key)
    assert found is not None
    key_id, secret = found.groups()
    assert new.row == ApiKeyRow(key_id, "acme", ana.id, "grafana", f"cdk_{key_id}", sha256(secret),
                                ("market:read", "orders:read"), MS)  # fmt: skip
    assert new.key.startswith(new.row.prefix + "_")
    principal = await env.auth.authenticate_key(new.key)
    assert principal == Principal("acme", ana.id, ana.email, "trader", "api_key", key_id,
                                  frozenset({"market:read", "orders:read"}))  # fmt: skip
    # The role grants orders:write and api_keys:manage; the key's scopes do not.
    assert [principal.can(p) for p in ("orders:read", "orders:write", "api_keys:manage")] == [
        True, False, False]  # fmt: skip

    async def last_used() -> int | None:
        row = await env.store.api_key_by_id(key_id)
        return None if row is None else row.last_used_at

    assert await last_used() == MS
    for now, expected in ((59.5, MS), (60, MS + 60_000), (119.5, MS + 60_000),
                          (120.25, MS + 120_250)):  # fmt: skip
        env.clock.now = T0 + now
        await env.auth.authenticate_key(new.key)
        assert await last_used() == expected
    for bad in (new.key[:-1] + ("A" if new.key[-1] != "A" else "B"), "cdk_x", new.row.prefix, ""):
        await refuses(env.auth.authenticate_key(bad), BAD_KEY)


async def test_scopes_beyond_the_role_unknown_scopes_and_keys_making_keys_are_refused(
    env: Env,
) -> None:
    trader = await env.principal(await env.user("ana"))
    refusals = [
        (["market:read", "users:manage", "ledger:write"],
         "scopes: the role trader does not have ledger:write, users:manage"),
        (["market:read", "nope", "public"],
         "scopes: nope, public is not a permission (see docs/security.md)"),
    ]  # fmt: skip
    for scopes, message in refusals:
        await refuses(env.auth.create_api_key(trader, "k", scopes), message, DomainError)
    past = env.auth.create_api_key(trader, "k", ["market:read"], expires_at=MS)
    await refuses(past, "expires_at must be in the future", DomainError)
    new = await env.auth.create_api_key(trader, "k", ["api_keys:manage"])
    as_key = await env.auth.authenticate_key(new.key)
    message = "API keys are created by users, not by other API keys"
    await refuses(env.auth.create_api_key(as_key, "k2", ["market:read"]), message, DomainError)
    assert [k.name for k in await env.auth.api_keys(trader)] == ["k"]


async def test_api_keys_expire_and_are_revoked_by_their_owner_or_an_admin_only(
    env: Env,
) -> None:
    ana, cid, admin, other = [await env.principal(await env.user(*who)) for who in (
        ("ana",), ("cid",), ("root", "admin"), ("boss", "admin", "beta"))]  # fmt: skip
    short = await env.auth.create_api_key(ana, "short", ["market:read"], expires_at=MS + 1000)
    env.clock.now = T0 + 0.5
    kept = await env.auth.create_api_key(ana, "kept", ["market:read"])
    env.clock.now = T0 + 1
    await refuses(env.auth.authenticate_key(short.key), DEAD_KEY)
    key_id = kept.row.id
    assert [k.name for k in await env.auth.api_keys(admin)] == ["short", "kept"]
    assert await env.auth.api_keys(cid) == []
    assert await env.auth.revoke_api_key(cid, key_id, IP) is False
    assert await env.auth.revoke_api_key(other, key_id, IP) is False
    assert (await env.auth.authenticate_key(kept.key)).key_id == key_id
    assert await env.auth.revoke_api_key(admin, key_id, IP) is True
    assert await env.auth.revoke_api_key(ana, key_id, IP) is False  # revoked already
    await refuses(env.auth.authenticate_key(kept.key), DEAD_KEY)
    row = await env.store.api_key_by_id(key_id)
    assert row is not None
    assert (row.created_at, row.revoked_at) == (MS + 500, MS + 1000)
    revoked = [r for r in await env.store.list_audit("acme") if r.event == "api_key_revoked"]
    assert [(r.actor, r.subject, r.detail) for r in revoked] == [
        ("root@acme.test", kept.row.prefix, {"name": "kept"})]  # fmt: skip


async def test_no_secret_is_stored_in_plain_text_in_the_database_file(env: Env) -> None:
    ana = await env.user("ana")
    first = await env.auth.login(ana.email, PASSWORD)
    rotated = await env.auth.refresh(first.refresh_token)
    key = await env.auth.create_api_key(await env.principal(ana), "k", ["market:read"])
    await env.engine.dispose()  # WAL checkpointed: every row is in the files read below
    data = b"".join(p.read_bytes() for p in env.db.parent.glob(f"{env.db.name}*"))
    secrets = [PASSWORD, key.key, key.key[len(key.row.prefix) + 1 :], first.access_token]
    for pair in (first, rotated):
        secrets += [pair.refresh_token, pair.refresh_token.split(".")[1]]
    for secret in secrets:
        assert secret.encode() not in data
    # What is stored instead: hashes, and the key's prefix to recognise it by.
    for digest in (sha256(rotated.refresh_token.split(".")[1]), key.row.key_hash):
        assert digest.encode() in data
    assert key.row.prefix.encode() in data
    assert b"$argon2id$" in data


# ---- audit log ------------------------------------------------------------------------


def chain_breaks(rows: list[AuditRow]) -> list[int]:
    """The events whose link or hash does not recompute from the chain before them."""
    prev, broken = GENESIS, []
    for n, row in enumerate(rows, start=1):
        body = audit_body(row.ts, row.tenant_id, row.event, row.actor, row.subject, row.ip,
                          row.detail)  # fmt: skip
        if row.seq != n or row.prev_hash != prev or row.hash != link_hash(prev, body):
            broken.append(row.seq)
        prev = row.hash
    return broken


async def test_the_audit_log_is_one_hash_chain_and_an_edit_breaks_it(env: Env) -> None:
    root, ana = await env.user("root", "admin"), await env.user("ana")
    admin = await env.principal(root)
    with pytest.raises(AuthenticationError):
        await env.auth.login("nobody@acme.test", PASSWORD, IP)
    env.clock.now = T0 + 1
    pair = await env.auth.login(ana.email, PASSWORD, IP)
    await env.auth.refresh(pair.refresh_token, IP)
    key = await env.auth.create_api_key(admin, "k", ["market:read"], origin=IP)
    await env.auth.revoke_api_key(admin, key.row.id, IP)
    await env.auth.set_role(admin, ana.id, "manager", IP)
    await env.auth.revoke_all(admin, ana.id, IP)
    await env.user("bea", tenant="beta")
    rows = await env.store.list_audit(None)
    assert [(r.seq, r.event, r.tenant_id) for r in rows] == [
        (1, "user_created", "acme"), (2, "user_created", "acme"), (3, "login", "acme"),
        (4, "login_failed", None), (5, "login", "acme"), (6, "token_refreshed", "acme"),
        (7, "api_key_created", "acme"), (8, "api_key_revoked", "acme"),
        (9, "role_changed", "acme"), (10, "tokens_revoked", "acme"), (11, "user_created", "beta"),
    ]  # fmt: skip
    assert [r.ts for r in rows] == [MS] * 4 + [MS + 1000] * 7
    assert rows[6].detail == {"name": "k", "scopes": ["market:read"]}
    assert [r.seq for r in await env.store.list_audit("acme", after=5, limit=3)] == [6, 7, 8]
    assert chain_breaks(rows) == []
    assert await env.store.verify_audit() is None
    assert await env.store.audit_head() == (11, rows[-1].hash)

    async def sql(statement: str) -> None:
        async with env.engine.begin() as conn:
            await conn.execute(text(statement))

    await sql("""UPDATE audit_log SET detail = '{"from": "trader", "to": "viewer"}'
                 WHERE seq = 9""")  # a quieter role change than the one made
    assert chain_breaks(await env.store.list_audit(None)) == [9]
    changed = AuditBreak(9, "event 9 was changed after it was written")
    assert await env.store.verify_audit() == changed
    await sql("""UPDATE audit_log SET detail = '{"from": "trader", "to": "manager"}'
                 WHERE seq = 9""")  # fmt: skip
    assert await env.store.verify_audit() is None
    await sql("DELETE FROM audit_log WHERE seq = 11")
    assert chain_breaks(await env.store.list_audit(None)) == []  # what is left still links...
    removed = AuditBreak(10, "the head names event 11: events were removed")
    assert await env.store.verify_audit() == removed  # ...but the head remembers the tail
    await sql("DELETE FROM audit_log WHERE seq = 4")
    assert await env.store.verify_audit() == AuditBreak(4, "event 4 is missing")
