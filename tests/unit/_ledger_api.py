"""The ledger API harness: the app with the ledger routes on a real LedgerService
over a migrated SQLite file, and the helpers its tests share."""

from __future__ import annotations

import shutil
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
from fastapi import FastAPI

from cryptodesk.adapters.db import migrate
from cryptodesk.adapters.db.engine import create_engine
from cryptodesk.adapters.secrets import SecretBox
from cryptodesk.api.app import create_app
from cryptodesk.api.routes.ledger import ledger_router
from cryptodesk.domain.auth import Role
from cryptodesk.services.ledger_service import LedgerService
from tests.unit._auth import Logins, auth_service
from tests.unit._fakes import Harness

PROBLEM = "application/problem+json"
NOW = 1_714_564_800_000  # 2024-05-01T12:00:00Z, the service's clock
HEADER = "id,timestamp,kind,account,asset,amount,counter_asset,counter_amount,fee_asset,fee_amount,to_account,value,lot_ids,note\n"  # noqa: E501
ROWS = [
    "b1,2024-01-02T00:00:00Z,buy,kraken,BTC,0.5,USD,20000,USD,10,,,,first buy\n",
    "b2,2024-02-01T00:00:00Z,buy,kraken,BTC,0.25,USD,11000,,,,,,\n",
    "t1,2024-03-01T00:00:00Z,transfer,kraken,BTC,0.5,,,BTC,0.0001,cold,,,to cold\n",
    "s1,2024-04-01T00:00:00Z,sell,kraken,BTC,0.1,USD,6500,,,,,,\n",
    "i1,2024-04-15T00:00:00Z,income:staking,cold,ETH,0.01,,,,,,30,,\n",
]
CSV = HEADER + "".join(ROWS)


@dataclass
class Env:
    app: FastAPI
    db: Path
    service: LedgerService
    logins: Logins

    def client(self, tenant: str = "default", role: Role = "admin") -> httpx.AsyncClient:
        """A client logged in as ``role`` of ``tenant``."""
        transport = httpx.ASGITransport(app=self.app, raise_app_exceptions=False)
        return httpx.AsyncClient(
            transport=transport, base_url="http://t", auth=self.logins.bearer(tenant, role)
        )

    def anonymous(self) -> httpx.AsyncClient:
        transport = httpx.ASGITransport(app=self.app, raise_app_exceptions=False)
        return httpx.AsyncClient(transport=transport, base_url="http://t")


def migrated_template(directory: Path) -> Path:
    """A migrated database file to copy per test (migrating takes a while)."""
    db = directory / "ledger.db"
    migrate.upgrade(f"sqlite+aiosqlite:///{db}")
    return db


async def open_env(tmp_path: Path, template: Path, *, key: str | None) -> AsyncIterator[Env]:
    """The app on a copy of ``template``; ``key``: the accounts key (None: none configured)."""
    db = tmp_path / "ledger.db"
    shutil.copyfile(template, db)
    engine = create_engine(f"sqlite+aiosqlite:///{db}")
    service = LedgerService(engine, None if key is None else SecretBox(key), clock=lambda: NOW)
    h = Harness()
    router = ledger_router(service, max_import_bytes=4096, clock=lambda: NOW)
    logins = Logins(auth_service(engine))
    app = create_app(h.queries, h.metrics, h.health, routers=[router], auth=logins.auth)
    yield Env(app, db, service, logins)
    await service.close()
    await engine.dispose()


def problem(r: httpx.Response, status: int, code: str) -> dict[str, Any]:
    assert r.status_code == status, r.text
    assert r.headers["content-type"] == PROBLEM
    body: dict[str, Any] = r.json()
    assert body["type"] == f"https://cryptodesk.dev/problems/{code}"
    assert body["status"] == status
    return body


def entry(**over: Any) -> dict[str, Any]:
    body = {
        "id": "e1", "timestamp": "2024-05-01T10:00:00Z", "kind": "buy", "account": "kraken",
        "asset": "BTC", "amount": "0.50", "counter_asset": "USD", "counter_amount": "30000",
    }  # fmt: skip
    return body | over


def stored(id: str, **over: Any) -> dict[str, Any]:
    """The entry fields of an answer, nulls and defaults included."""
    base = {
        "id": id, "timestamp": "2024-05-01T10:00:00.000Z", "timestamp_ms": 1_714_557_600_000,
        "kind": "buy", "subkind": None, "account": "kraken", "asset": "BTC", "amount": "0.50",
        "counter_asset": "USD", "counter_amount": "30000", "fee_asset": None,
        "fee_amount": None, "fee_value": None, "to_account": None, "value": None,
        "lot_ids": [], "note": "", "reverses": None, "external_id": None, "tags": [],
    }  # fmt: skip
    return base | over


async def add_manual(client: httpx.AsyncClient, name: str) -> None:
    r = await client.post("/api/v1/accounts", json={"kind": "manual", "name": name})
    assert r.status_code == 201, r.text


def ids(r: httpx.Response) -> list[str]:
    return [e["id"] for e in r.json()["entries"]]


async def import_csv(client: httpx.AsyncClient, text: str, **params: str) -> httpx.Response:
    return await client.post(
        "/api/v1/ledger/import", content=text, params=params, headers={"content-type": "text/csv"}
    )
