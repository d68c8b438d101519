"""/api/v1/auth, /api/v1/api-keys, /api/v1/users and /api/v1/admin/audit over ASGI.

The app is the ``Harness`` one with a real ``AuthService`` on its own migrated
SQLite file: login, refresh and logout, revoke-all, API keys used both ways,
credentials that must be a 401 (never a 500), body errors that name the field,
the tenant's audit log with its cursor, and logs that never show a secret.
"""

from __future__ import annotations

import io
import re
from typing import Any

import httpx
import jwt
import pytest

from cryptodesk.domain.auth import Role
from cryptodesk.observability.logging import configure_logging
from tests.unit._auth import PASSWORD, SECRET
from tests.unit._fakes import Harness

PROBLEM = "application/problem+json"
LOGIN, REFRESH, LOGOUT = "/api/v1/auth/login", "/api/v1/auth/refresh", "/api/v1/auth/logout"
ME, REVOKE_ALL, KEYS = "/api/v1/auth/me", "/api/v1/auth/revoke-all", "/api/v1/api-keys"
TOKEN_FIELDS = {"access_token", "refresh_token", "token_type", "expires_in"}
USERS_MANAGE = "this needs the permission 'users:manage'"
ISO = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")


@pytest.fixture
def h() -> Harness:
    return Harness()


def problem(r: httpx.Response, status: int, code: str) -> dict[str, Any]:
    assert r.status_code == status, r.text
    assert r.headers["content-type"] == PROBLEM
    body: dict[str, Any] = r.json()
    assert body["type"] == f"https://cryptodesk.dev/problems/{code}"
    assert body["status"] == status
    return body


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def login(client: httpx.AsyncClient, email: str, password: str = PASSWORD) -> dict[str, Any]:
    r = await client.post(LOGIN, json={"email": email, "password": password})
    assert r.status_code == 200, r.text
    body: dict[str, Any] = r.json()
    return body


async def user_id(h: Harness, tenant: str, role: Role) -> str:
    await h.logins.token(tenant, role)
    user = await h.logins.service.store.user_by_email(h.logins.email(tenant, role))
    assert user is not None
    return user.id


# ---- login, refresh, logout -----------------------------------------------------------


async def test_login_answers_the_token_pair_and_me_names_the_caller(h: Harness) -> None:
    trader = await user_id(h, "acme", "trader")
    async with h.anonymous() as client:
        r = await client.post(LOGIN, json={"email": " Trader@ACME.test", "password": PASSWORD})
        assert r.status_code == 200
        assert r.headers["content-type"] == "application/json"
        tokens = r.json()
        me = await client.get(ME, headers=bearer(tokens["access_token"]))
    assert set(tokens) == TOKEN_FIELDS
    assert (tokens["token_type"], tokens["expires_in"]) == ("bearer", 900)
    assert jwt.decode(tokens["access_token"], SECRET, algorithms=["HS256"],
                      audience="cryptodesk-api")["sub"] == trader  # fmt: skip
    assert me.json() == {
        "tenant": "acme", "user_id": trader, "email": "trader@acme.test", "role": "trader",
        "kind": "user", "scopes": None,
        "permissions": ["public", "profile:read", "market:read", "signals:read",
                        "backtests:read", "backtests:run", "ledger:read", "accounts:read",
                        "portfolio:read", "reports:read", "risk:read", "orders:read",
                        "orders:write", "api_keys:manage"],
    }  # fmt: skip


async def test_a_wrong_password_and_an_unknown_email_get_the_same_401(h: Harness) -> None:
    await h.logins.token("acme", "trader")
    async with h.anonymous() as client:
        answers = [
            await client.post(
                LOGIN, json={"email": "trader@acme.test", "password": "not it at all"}
            ),
            await client.post(LOGIN, json={"email": "nobody@acme.test", "password": PASSWORD}),
        ]
    for r in answers:
        assert problem(r, 401, "unauthorized") == {
            "type": "https://cryptodesk.dev/problems/unauthorized", "title": "Unauthorized",
            "status": 401, "detail": "wrong e-mail or password", "instance": LOGIN,
        }  # fmt: skip
        assert r.headers["www-authenticate"] == 'Bearer realm="cryptodesk"'


async def test_unknown_fields_and_wrong_types_are_422_naming_the_field(h: Harness) -> None:
    ok = {"email": "trader@acme.test", "password": PASSWORD}
    cases = [
        (LOGIN, {**ok, "role": "admin"}, "role"), (LOGIN, {**ok, "email": 5}, "email"),
        (LOGIN, {**ok, "password": ["x"]}, "password"), (LOGIN, {"email": ok["email"]}, "password"),
        (LOGIN, {**ok, "password": "x" * 257}, "password"),
        (REFRESH, {"refresh_token": 5}, "refresh_token"), (LOGOUT, {}, "refresh_token"),
        (REFRESH, {"refresh_token": "x", "token": "y"}, "token"),
    ]  # fmt: skip
    async with h.anonymous() as client:
        for url, body, field in cases:
            r = await client.post(url, json=body)
            answer = problem(r, 422, "invalid-body")
            assert answer["detail"] == f"invalid field: {field}", (url, body)
            assert [e["name"] for e in answer["errors"]] == [field]
    assert [r.event for r in await h.logins.service.store.list_audit(None)] == []


async def test_refresh_rotates_a_reused_token_ends_the_family_and_logout_revokes(
    h: Harness,
) -> None:
    await h.logins.token("acme", "trader")
    async with h.anonymous() as client:
        first = await login(client, "trader@acme.test")
        r = await client.post(REFRESH, json={"refresh_token": first["refresh_token"]})
        assert r.status_code == 200
        second = r.json()
        assert set(second) == TOKEN_FIELDS
        assert second["refresh_token"] != first["refresh_token"]
        assert (await client.get(ME, headers=bearer(second["access_token"]))).status_code == 200
        reused = await client.post(REFRESH, json={"refresh_token": first["refresh_token"]})
        newest = await client.post(REFRESH, json={"refresh_token": second["refresh_token"]})
        other = await login(client, "trader@acme.test")
        out = await client.post(LOGOUT, json={"refresh_token": other["refresh_token"]})
        after = await client.post(REFRESH, json={"refresh_token": other["refresh_token"]})
        garbage = await client.post(LOGOUT, json={"refresh_token": "not-a-token"})
    assert problem(reused, 401, "unauthorized")["detail"] == (
        "the refresh token was used already; its family is revoked")  # fmt: skip
    assert (
        problem(newest, 401, "unauthorized")["detail"] == "the refresh token is revoked or expired"
    )
    assert (out.status_code, out.content) == (204, b"")
    assert (
        problem(after, 401, "unauthorized")["detail"] == "the refresh token is revoked or expired"
    )
    assert problem(garbage, 401, "unauthorized")["detail"] == "the refresh token is not valid"


async def test_revoke_all_for_oneself_and_by_an_admin_for_another_user(h: Harness) -> None:
    trader = await user_id(h, "acme", "trader")
    async with h.client("acme", "admin") as admin, h.client("acme", "manager") as manager, \
            h.client("acme", "trader") as as_trader, h.anonymous() as client:  # fmt: skip
        assert (await as_trader.get(ME)).status_code == 200
        denied = await manager.post(REVOKE_ALL, json={"user_id": trader})
        assert problem(denied, 403, "forbidden")["detail"] == USERS_MANAGE
        assert (await as_trader.get(ME)).status_code == 200
        done = await admin.post(REVOKE_ALL, json={"user_id": trader})
        assert (done.status_code, done.json()) == (200, {"refresh_tokens_revoked": 1})
        gone = await as_trader.get(ME)
        assert problem(gone, 401, "unauthorized")["detail"] == "the access token is revoked"
        missing = await admin.post(REVOKE_ALL, json={"user_id": "0" * 32})
        assert problem(missing, 404, "not-found")["detail"] == f"no user {'0' * 32} in this tenant"
        again = await login(client, "trader@acme.test")  # right after: a new session works
        assert (await client.get(ME, headers=bearer(again["access_token"]))).status_code == 200
        mine = await manager.post(REVOKE_ALL)  # no body: the caller's own tokens
        assert mine.json() == {"refresh_tokens_revoked": 1}
        problem(await manager.get(ME), 401, "unauthorized")
        problem(await manager.post(REVOKE_ALL, json={"user": trader}), 401, "unauthorized")


# ---- API keys -------------------------------------------------------------------------


async def test_an_api_key_is_shown_once_works_both_ways_within_its_scopes_until_revoked(
    h: Harness,
) -> None:
    trader = await user_id(h, "acme", "trader")
    scopes = ["orders:read", "market:read"]
    async with h.client("acme", "trader") as owner, h.anonymous() as client:
        made = await owner.post(KEYS, json={"name": "grafana", "scopes": scopes})
        assert made.status_code == 201, made.text
        key = made.json()["key"]
        found = re.fullmatch(r"cdk_([0-9a-f]{16})_[\w-]{43}", key)
        assert found is not None
        listed = await owner.get(KEYS)
        as_header = await client.get(ME, headers={"X-API-Key": key})
        as_bearer = await client.get(ME, headers=bearer(key))
        outside = await client.get(KEYS, headers={"X-API-Key": key})  # the role's, not the key's
        used = (await owner.get(KEYS)).json()[0]
        gone = await owner.delete(f"{KEYS}/{found[1]}")
        after = await client.get(ME, headers={"X-API-Key": key})
        twice = await owner.delete(f"{KEYS}/{found[1]}")
        revoked = (await owner.get(KEYS)).json()[0]
    shown = {
        "id": found[1], "name": "grafana", "prefix": f"cdk_{found[1]}",
        "scopes": ["market:read", "orders:read"], "created_at": made.json()["created_at"],
        "expires_at": None, "last_used_at": None, "revoked_at": None, "user_id": trader,
    }  # fmt: skip
    assert made.json() == {**shown, "key": key}
    assert key.startswith(shown["prefix"] + "_")
    assert ISO.match(shown["created_at"])
    assert listed.json() == [shown]  # never the key again
    assert key[21:] not in listed.text
    for r in (as_header, as_bearer):
        assert r.json() == {
            "tenant": "acme", "user_id": trader, "email": "trader@acme.test", "role": "trader",
            "kind": "api_key", "scopes": ["market:read", "orders:read"],
            "permissions": ["public", "profile:read", "market:read", "orders:read"],
        }  # fmt: skip
    assert problem(outside, 403, "forbidden")["detail"] == (
        "this needs the permission 'api_keys:manage'")  # fmt: skip
    assert ISO.match(used["last_used_at"])
    assert gone.status_code == 204
    assert problem(after, 401, "unauthorized")["detail"] == "the API key is revoked or expired"
    assert problem(twice, 404, "not-found")["detail"] == f"no live API key {found[1]} of yours"
    assert ISO.match(revoked["revoked_at"])


async def test_api_key_scopes_must_be_permissions_the_role_holds(h: Harness) -> None:
    async with h.client("acme", "trader") as trader, h.client("acme", "viewer") as viewer:
        beyond = await trader.post(KEYS, json={"name": "k", "scopes": ["users:manage"]})
        unknown = await trader.post(KEYS, json={"name": "k", "scopes": ["market:read"], "x": 1})
        empty = await trader.post(KEYS, json={"name": "k", "scopes": []})
        none_for_viewers = await viewer.post(KEYS, json={"name": "k", "scopes": ["market:read"]})
        assert (await trader.get(KEYS)).json() == []
    body = problem(beyond, 400, "invalid-parameter")
    assert body["detail"] == "scopes: the role trader does not have users:manage"
    assert [e["name"] for e in body["errors"]] == ["scopes"]
    assert problem(unknown, 422, "invalid-body")["detail"] == "invalid field: x"
    assert problem(empty, 422, "invalid-body")["detail"] == "invalid field: scopes"
    assert problem(none_for_viewers, 403, "forbidden")["detail"] == (
        "this needs the permission 'api_keys:manage'")  # fmt: skip


async def test_expired_malformed_and_tampered_credentials_are_401_never_500(h: Harness) -> None:
    token = await h.logins.token("acme", "trader")
    head, body, sig = token.split(".")
    claims = jwt.decode(token, SECRET, algorithms=["HS256"], audience="cryptodesk-api")
    invalid = "the access token is not valid"
    cases = [
        (bearer(jwt.encode({**claims, "exp": claims["iat"] - 1}, SECRET, "HS256")),
         "the access token has expired"),
        (bearer(f"{head}.{body}.{sig[:5]}{'B' if sig[5] == 'A' else 'A'}{sig[6:]}"), invalid),
        (bearer(jwt.encode({**claims, "tid": "beta"}, "", algorithm="none")), invalid),
        (bearer(jwt.encode(claims, b"a-secret-that-is-not-the-server-one", "HS256")), invalid),
        (bearer("abc"), invalid), (bearer("a.b.c"), invalid), (bearer(f"{head}.."), invalid),
        (bearer("W10.W10.W10"), invalid), (bearer("x" * 5000), invalid),
        (bearer("cdk_nothing"), "the API key is not valid"),
        ({"X-API-Key": "garbage"}, "the API key is not valid"),
        ({"X-API-Key": f"cdk_{'0' * 16}_{'A' * 43}"}, "the API key is not valid"),
        ({"Authorization": "Basic dHJhZGVyOnB3"},
         "this needs credentials: a bearer token or an X-API-Key"),
        ({"Authorization": "Bearer"}, "this needs credentials: a bearer token or an X-API-Key"),
    ]  # fmt: skip
    async with h.anonymous() as client:
        for headers, detail in cases:
            r = await client.get(ME, headers=headers)
            assert problem(r, 401, "unauthorized")["detail"] == detail, headers
            assert r.headers["www-authenticate"] == 'Bearer realm="cryptodesk"'
        # Bad credentials on a route anyone may read are still refused, not ignored.
        tickers = await client.get("/api/v1/tickers", headers=bearer("abc"))
        assert problem(tickers, 401, "unauthorized")["detail"] == invalid
        assert (await client.get(ME, headers=bearer(token))).status_code == 200


# ---- users and the audit log ----------------------------------------------------------


async def test_admins_manage_users_and_managers_may_not(h: Harness) -> None:
    vic = {"email": "Vic@acme.test", "password": "a-long-password", "role": "viewer"}
    async with h.client("acme", "admin") as admin, h.client("acme", "manager") as manager:
        made = await admin.post("/api/v1/users", json=vic)
        assert made.status_code == 201, made.text
        vic_id = made.json()["id"]
        clash = await admin.post("/api/v1/users", json={**vic, "email": "vic@acme.test"})
        bad = [await admin.post("/api/v1/users", json={**vic, **change})
               for change in ({"role": "root"}, {"password": "short"}, {"extra": 1})]  # fmt: skip
        not_email = await admin.post("/api/v1/users", json={**vic, "email": "vic"})
        promoted = await admin.patch(f"/api/v1/users/{vic_id}", json={"role": "trader"})
        nobody = await admin.patch(f"/api/v1/users/{'0' * 32}", json={"role": "trader"})
        listed = await admin.get("/api/v1/users")
        denied = [
            await manager.get("/api/v1/users"),
            await manager.post("/api/v1/users", json={**vic, "email": "w@acme.test"}),
            await manager.patch(f"/api/v1/users/{vic_id}", json={"role": "admin"}),
        ]
    assert made.json() == {"id": vic_id, "email": "vic@acme.test", "role": "viewer",
                           "created_at": made.json()["created_at"], "disabled": False}  # fmt: skip
    assert (
        problem(clash, 409, "conflict")["detail"]
        == "a user with e-mail vic@acme.test exists already"
    )
    assert [problem(r, 422, "invalid-body")["detail"] for r in bad] == [
        "invalid field: role", "invalid field: password", "invalid field: extra"]  # fmt: skip
    assert [e["name"] for e in problem(not_email, 400, "invalid-parameter")["errors"]] == ["email"]
    assert (promoted.status_code, promoted.json()["role"]) == (200, "trader")
    problem(nobody, 404, "not-found")
    assert [(u["email"], u["role"]) for u in listed.json()] == [
        ("admin@acme.test", "admin"), ("vic@acme.test", "trader")]  # fmt: skip
    for r in denied:
        assert problem(r, 403, "forbidden")["detail"] == USERS_MANAGE
    changed = [r for r in await h.logins.service.store.list_audit("acme")
               if r.event == "role_changed"]  # fmt: skip
    assert [(r.actor, r.subject, r.detail) for r in changed] == [
        ("admin@acme.test", "vic@acme.test", {"from": "viewer", "to": "trader"})]  # fmt: skip


async def test_the_audit_log_lists_the_tenants_security_events_page_by_page(h: Harness) -> None:
    trader = await user_id(h, "acme", "trader")
    await user_id(h, "beta", "admin")
    async with h.client("acme", "admin") as admin, h.client("beta", "admin") as beta, \
            h.anonymous() as client:  # fmt: skip
        await admin.get(ME)
        await client.post(LOGIN, json={"email": "trader@acme.test", "password": "wrong-password"})
        tokens = await login(client, "trader@acme.test")
        await client.post(REFRESH, json={"refresh_token": tokens["refresh_token"]})
        key = (await admin.post(KEYS, json={"name": "ci", "scopes": ["market:read"]})).json()
        await admin.delete(f"{KEYS}/{key['id']}")
        await admin.patch(f"/api/v1/users/{trader}", json={"role": "viewer"})
        await beta.post(KEYS, json={"name": "beta-key", "scopes": ["market:read"]})
        await client.post(LOGIN, json={"email": "nobody@beta.test", "password": "whatever-pw"})
        pages, cursor = [], None
        while True:
            params = {"limit": 3} | ({"cursor": cursor} if cursor else {})
            page = (await admin.get("/api/v1/admin/audit", params=params)).json()
            pages.append([e["event"] for e in page["events"]])
            if (cursor := page["next_cursor"]) is None:
                break
        everything = (await admin.get("/api/v1/admin/audit")).json()
        theirs = (await beta.get("/api/v1/admin/audit")).json()
        bad_cursor = await admin.get("/api/v1/admin/audit", params={"cursor": "abc"})
        async with h.client("acme", "manager") as manager:
            denied = await manager.get("/api/v1/admin/audit")
    events = everything["events"]
    assert [e["event"] for e in events] == [
        "user_created", "login", "user_created", "login", "login_failed", "login",
        "token_refreshed", "api_key_created", "api_key_revoked", "role_changed",
    ]  # fmt: skip
    assert pages == [["user_created", "login", "user_created"],
                     ["login", "login_failed", "login"],
                     ["token_refreshed", "api_key_created", "api_key_revoked"],
                     ["role_changed"]]  # fmt: skip
    assert everything["next_cursor"] is None
    assert [e["seq"] for e in events] == sorted(e["seq"] for e in events)
    assert all("beta" not in f"{e['actor']} {e['subject']}" for e in events)
    assert (events[4]["actor"], events[4]["ip"]) == ("trader@acme.test", "127.0.0.1")
    assert events[7]["subject"] == key["prefix"]
    assert events[9]["detail"] == {"from": "trader", "to": "viewer"}
    assert [e["event"] for e in theirs["events"]] == [
        "user_created", "login", "api_key_created"]  # fmt: skip
    assert problem(bad_cursor, 400, "invalid-parameter")["errors"][0]["name"] == "cursor"
    assert problem(denied, 403, "forbidden")["detail"] == "this needs the permission 'audit:read'"


async def test_logs_never_show_a_password_a_token_or_an_api_key(h: Harness) -> None:
    wrong = "a-wrong-password-that-is-secret"
    log = io.StringIO()
    configure_logging("json", "DEBUG", stream=log)
    try:
        await user_id(h, "acme", "trader")
        async with h.anonymous() as client:
            await client.post(LOGIN, json={"email": "trader@acme.test", "password": wrong})
            tokens = await login(client, "trader@acme.test")
            rotated = (
                await client.post(REFRESH, json={"refresh_token": tokens["refresh_token"]})
            ).json()
            made = await client.post(KEYS, headers=bearer(rotated["access_token"]),
                                     json={"name": "k", "scopes": ["market:read"]})  # fmt: skip
            key = made.json()["key"]
            await client.get(ME, headers={"X-API-Key": key})
            await client.post(LOGOUT, json={"refresh_token": rotated["refresh_token"]})
    finally:
        configure_logging("json", "WARNING")
    text = log.getvalue()
    assert '"kind": "api_key_created"' in text  # the log was on, and said nothing secret
    assert '"level": "debug"' in text
    secrets = [PASSWORD, wrong, key, key[21:]]
    for pair in (tokens, rotated):
        secrets += [pair["access_token"], pair["refresh_token"], pair["refresh_token"][33:]]
    for secret in secrets:
        assert secret not in text
