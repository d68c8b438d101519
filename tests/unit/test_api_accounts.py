"""/api/v1 accounts and balances, and tenant isolation, over ASGI on a real LedgerService."""

from __future__ import annotations

import io
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from cryptodesk.adapters.secrets import generate_key
from cryptodesk.observability.logging import configure_logging
from tests.unit._ledger_api import (
    CSV,
    Env,
    add_manual,
    ids,
    import_csv,
    migrated_template,
    open_env,
    problem,
)

API_KEY, SECRET, PASSWORD = "AKIA-visible-nowhere-1", "s3cr3t-visible-nowhere-2", "pw-nowhere-3"


@pytest.fixture(scope="module")
def migrated(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return migrated_template(tmp_path_factory.mktemp("template"))


@pytest.fixture
async def env(tmp_path: Path, migrated: Path) -> AsyncIterator[Env]:
    async for e in open_env(tmp_path, migrated, key=generate_key()):
        yield e


# ---- tenancy ----------------------------------------------------------------------------


async def test_accounts_need_credentials_and_no_header_picks_another_tenant(env: Env) -> None:
    async with env.anonymous() as anonymous:
        r = await anonymous.get("/api/v1/accounts", headers={"X-Tenant": "acme"})
    body = problem(r, 401, "unauthorized")
    assert body["detail"] == "this needs credentials: a bearer token or an X-API-Key"
    assert r.headers["www-authenticate"] == 'Bearer realm="cryptodesk"'
    async with env.client("acme") as acme, env.client("beta") as beta:
        await add_manual(acme, "acme-cash")
        r = await beta.get("/api/v1/accounts", headers={"X-Tenant": "acme"})
    assert r.status_code == 200
    assert r.json()["accounts"] == []


async def test_tenants_see_only_their_own_accounts_and_ledger(env: Env) -> None:
    async with env.client("acme") as a, env.client("beta") as b, env.client() as default:
        imported = await import_csv(a, CSV)
        assert imported.json() == {"added": 5, "skipped": 0}
        assert ids(await a.get("/api/v1/ledger")) == ["b1", "b2", "t1", "s1", "i1"]
        assert (await b.get("/api/v1/ledger")).json() == {"entries": [], "next_cursor": None}
        assert (await default.get("/api/v1/ledger")).json()["entries"] == []
        assert [x["name"] for x in (await a.get("/api/v1/accounts")).json()["accounts"]] == [
            "cold", "kraken",
        ]  # fmt: skip
        assert (await b.get("/api/v1/accounts")).json() == {"accounts": []}
        problem(await b.get("/api/v1/accounts/kraken"), 404, "unknown-account")
        problem(await b.post("/api/v1/ledger/b1/reverse"), 404, "unknown-entry")
        # The same file is new to another tenant, and each chain verifies on its own.
        again = await import_csv(b, CSV)
        assert again.json() == {"added": 5, "skipped": 0}
        va, vb = (await a.get("/api/v1/ledger/verify")).json(), await b.get("/api/v1/ledger/verify")
    assert va["ok"] is True
    assert va["entries"] == 5
    # Same entries, same hashes: a chain depends on its content only.
    assert vb.json() == va


# ---- accounts ---------------------------------------------------------------------------

EXCHANGE = {
    "kind": "exchange", "name": "binance-main", "exchange": "binance",
    "api_key": API_KEY, "secret": SECRET, "password": PASSWORD,
}  # fmt: skip
EXCHANGE_OUT = {
    "name": "binance-main", "kind": "exchange", "exchange": "binance", "chain": None,
    "address": None, "note": "", "has_credentials": True,
    "created_at": "2024-05-01T12:00:00.000Z",
}  # fmt: skip


async def test_an_exchange_account_keeps_its_secrets_out_of_every_answer_and_log(
    env: Env,
) -> None:
    log = io.StringIO()
    configure_logging("json", "DEBUG", stream=log)
    try:
        async with env.client() as client:
            answers = [
                created := await client.post("/api/v1/accounts", json=EXCHANGE),
                await client.get("/api/v1/accounts"),
                await client.get("/api/v1/accounts/binance-main"),
                # A duplicate and a bad request carry the secrets too.
                await client.post("/api/v1/accounts", json=EXCHANGE),
                await client.post("/api/v1/accounts", json={**EXCHANGE, "exchange": "Bad Id"}),
                await client.post("/api/v1/accounts", json={**EXCHANGE, "extra": 1}),
                await client.get("/openapi.json"),
            ]
    finally:
        configure_logging("json", "WARNING")
    assert created.status_code == 201
    assert created.headers["location"] == "/api/v1/accounts/binance-main"
    assert created.json() == EXCHANGE_OUT
    assert answers[1].json() == {"accounts": [EXCHANGE_OUT]}
    assert answers[2].json() == EXCHANGE_OUT
    for r in answers:
        for secret in (API_KEY, SECRET, PASSWORD):
            assert secret not in r.text
    assert '"level": "debug"' in log.getvalue()  # the log was on, and said nothing secret
    for secret in (API_KEY, SECRET, PASSWORD):
        assert secret not in log.getvalue()
    # Stored, encrypted: the service gives them back for syncing only.
    creds = await env.service.credentials("default", "binance-main")
    assert (creds.api_key, creds.secret, creds.password) == (API_KEY, SECRET, PASSWORD)
    assert SECRET.encode() not in env.db.read_bytes()


async def test_openapi_marks_the_credentials_write_only(env: Env) -> None:
    async with env.client() as client:
        doc = (await client.get("/openapi.json")).json()
    props = doc["components"]["schemas"]["ExchangeAccountIn"]["properties"]
    for name in ("api_key", "secret", "password"):
        assert props[name]["writeOnly"] is True, name
    assert "api_key" not in doc["components"]["schemas"]["AccountOut"]["properties"]
    body = doc["paths"]["/api/v1/ledger/import"]["post"]["requestBody"]
    assert list(body["content"]) == ["text/csv"]
    listing = doc["paths"]["/api/v1/ledger"]["get"]
    assert "X-Tenant" not in [p["name"] for p in listing["parameters"]]
    assert listing["x-permission"] == "ledger:read"
    assert listing["security"] == [{"HTTPBearer": []}, {"APIKeyHeader": []}]


async def test_a_taken_account_name_is_a_409(env: Env) -> None:
    async with env.client() as client:
        await add_manual(client, "cash")
        r = await client.post(
            "/api/v1/accounts", json={"kind": "wallet", "name": "cash", "chain": "bitcoin",
                                      "address": "bc1q"},
        )  # fmt: skip
    assert problem(r, 409, "conflict") == {
        "type": "https://cryptodesk.dev/problems/conflict", "title": "Conflict", "status": 409,
        "detail": "account 'cash' already exists", "instance": "/api/v1/accounts",
        "errors": [{"name": "name", "reason": "account 'cash' already exists"}],
    }  # fmt: skip


@pytest.mark.parametrize(
    ("body", "name", "detail"),
    [
        ({**EXCHANGE, "exchange": "Bad Id"}, "exchange",
         "exchange 'Bad Id' is not a ccxt exchange id"),
        ({**EXCHANGE, "secret": None, "password": None}, "secret",
         "secret is required with api_key"),
        ({**EXCHANGE, "api_key": None}, "api_key", "api_key is required with secret or password"),
        ({**EXCHANGE, "api_key": "  "}, "api_key", "api_key is required"),
        ({"kind": "manual", "name": " padded"}, "name", "name ' padded' is not a valid name"),
        ({"kind": "wallet", "name": "w", "chain": "bitcoin"}, "wallet.address", None),
        ({"kind": "bank", "name": "b"}, "request", None),
        ({"kind": "manual", "name": "m", "secret": "x"}, "manual.secret", None),
    ],
)  # fmt: skip
async def test_a_bad_account_is_a_400_naming_the_field(
    env: Env, body: dict[str, Any], name: str, detail: str | None
) -> None:
    async with env.client() as client:
        r = await client.post("/api/v1/accounts", json=body)
        listed = await client.get("/api/v1/accounts")
    # detail None: the body model refuses it (422); else the service does (400).
    got = (
        problem(r, 422, "invalid-body") if detail is None else problem(r, 400, "invalid-parameter")
    )
    assert [e["name"] for e in got["errors"]] == [name]
    if detail is not None:
        assert got["detail"] == detail
    assert listed.json() == {"accounts": []}


async def test_without_an_accounts_key_credentials_are_refused_but_accounts_are_not(
    tmp_path: Path, migrated: Path
) -> None:
    async for e in open_env(tmp_path, migrated, key=None):
        async with e.client() as client:
            r = await client.post("/api/v1/accounts", json=EXCHANGE)
            plain = {"kind": "exchange", "name": "kraken", "exchange": "kraken"}
            ok = await client.post("/api/v1/accounts", json=plain)
        body = problem(r, 400, "invalid-parameter")
        assert body["detail"] == "no accounts key is configured, so credentials cannot be stored"
        assert body["errors"][0]["name"] == "credentials"
        assert ok.status_code == 201
        assert ok.json()["has_credentials"] is False


async def test_unknown_accounts_are_404(env: Env) -> None:
    async with env.client() as client:
        got = await client.get("/api/v1/accounts/nope")
        balances = await client.get("/api/v1/accounts/nope/balances")
        put = await client.put("/api/v1/accounts/nope/balances", json={"balances": {"BTC": "1"}})
        filtered = await client.get("/api/v1/ledger", params={"account": "nope"})
    assert problem(got, 404, "unknown-account") == {
        "type": "https://cryptodesk.dev/problems/unknown-account", "title": "Not Found",
        "status": 404, "detail": "no account 'nope'", "instance": "/api/v1/accounts/nope",
        "errors": [{"name": "account", "reason": "no account 'nope'"}],
    }  # fmt: skip
    for r in (balances, put, filtered):
        assert problem(r, 404, "unknown-account")["detail"] == "no account 'nope'"


async def test_entered_balances_are_stored_and_newer_ones_win(env: Env) -> None:
    async with env.client() as client:
        wallet = {"kind": "wallet", "name": "cold", "chain": "bitcoin", "address": "bc1qxy"}
        assert (await client.post("/api/v1/accounts", json=wallet)).status_code == 201
        first = await client.put(
            "/api/v1/accounts/cold/balances",
            json={"balances": {"BTC": "1.50", "ETH": "0"}, "as_of": "2024-04-01T00:00:00Z"},
        )
        older = await client.put(
            "/api/v1/accounts/cold/balances",
            json={"balances": {"BTC": "9"}, "as_of": "2024-03-01T00:00:00Z"},
        )
        newer = await client.put("/api/v1/accounts/cold/balances", json={"balances": {"ETH": "2"}})
        got = await client.get("/api/v1/accounts/cold/balances")
    assert first.json() == {
        "account": "cold",
        "balances": [
            {"asset": "BTC", "amount": "1.50", "as_of": "2024-04-01T00:00:00.000Z",
             "source": "manual"},
            {"asset": "ETH", "amount": "0", "as_of": "2024-04-01T00:00:00.000Z",
             "source": "manual"},
        ],
    }  # fmt: skip
    assert older.json() == first.json()  # a report older than the stored one is ignored
    assert newer.json() == got.json() == {
        "account": "cold",
        "balances": [
            {"asset": "BTC", "amount": "1.50", "as_of": "2024-04-01T00:00:00.000Z",
             "source": "manual"},
            {"asset": "ETH", "amount": "2", "as_of": "2024-05-01T12:00:00.000Z",
             "source": "manual"},
        ],
    }  # fmt: skip


@pytest.mark.parametrize(
    ("body", "name", "detail"),
    [
        ({"balances": {"BTC": "-1"}}, "amount", "balance of BTC cannot be negative, got -1"),
        ({"balances": {"BTC": "lots"}}, "balances.BTC",
         "balances.BTC 'lots' is not a decimal number"),
        ({"balances": {"BTC": 1.5}}, "balances.BTC", None),
        ({"balances": {}, "as_of": "yesterday"}, "as_of",
         "as_of 'yesterday' is neither epoch milliseconds nor ISO 8601"),
    ],
)  # fmt: skip
async def test_bad_balances_are_a_400(
    env: Env, body: dict[str, Any], name: str, detail: str | None
) -> None:
    async with env.client() as client:
        await add_manual(client, "cash")
        r = await client.put("/api/v1/accounts/cash/balances", json=body)
        after = await client.get("/api/v1/accounts/cash/balances")
    got = (
        problem(r, 422, "invalid-body") if detail is None else problem(r, 400, "invalid-parameter")
    )
    assert [e["name"] for e in got["errors"]] == [name]
    if detail is not None:
        assert got["detail"] == detail
    assert after.json() == {"account": "cash", "balances": []}
