"""/api/v1 ledger over ASGI on a real LedgerService: entries, pages, reversals, imports
and the hash chain (tampered with directly in the SQLite file)."""

from __future__ import annotations

import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from cryptodesk.adapters.secrets import generate_key
from tests.unit._ledger_api import (
    CSV,
    HEADER,
    ROWS,
    Env,
    add_manual,
    entry,
    ids,
    import_csv,
    migrated_template,
    open_env,
    problem,
    stored,
)


@pytest.fixture(scope="module")
def migrated(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return migrated_template(tmp_path_factory.mktemp("template"))


@pytest.fixture
async def env(tmp_path: Path, migrated: Path) -> AsyncIterator[Env]:
    async for e in open_env(tmp_path, migrated, key=generate_key()):
        yield e


# ---- entries ----------------------------------------------------------------------------


async def test_an_entry_is_appended_once_and_a_retry_is_safe(env: Env) -> None:
    async with env.client() as client:
        await add_manual(client, "kraken")
        created = await client.post("/api/v1/ledger", json=entry())
        retried = await client.post("/api/v1/ledger", json=entry())
        listed = await client.get("/api/v1/ledger")
    assert created.status_code == 201
    assert created.json() == stored("e1")
    assert retried.status_code == 200
    assert retried.json() == stored("e1")
    [row] = listed.json()["entries"]
    assert row == stored("e1") | {"seq": 1, "hash": row["hash"]}
    assert len(row["hash"]) == 64


async def test_an_entry_with_every_field_round_trips(env: Env) -> None:
    full = entry(
        id="s9", kind="sell", amount="0.25", fee_asset="USD", fee_amount="1.5", fee_value="1.5",
        value="16000", lot_ids=[{"id": "e1", "amount": "0.25"}], note="partial",
        external_id="K-77", tags=["otc", "q2"], timestamp="1714557600000",
    )  # fmt: skip
    async with env.client() as client:
        await add_manual(client, "kraken")
        await client.post("/api/v1/ledger", json=entry())
        r = await client.post("/api/v1/ledger", json=full)
        listed = await client.get("/api/v1/ledger")
    assert r.status_code == 201
    expected = stored(
        "s9", kind="sell", amount="0.25", fee_asset="USD", fee_amount="1.5", fee_value="1.5",
        value="16000", lot_ids=[{"id": "e1", "amount": "0.25"}], note="partial",
        external_id="K-77", tags=["otc", "q2"],
    )  # fmt: skip
    assert r.json() == expected
    assert {k: v for k, v in listed.json()["entries"][1].items() if k != "hash"} == expected | {
        "seq": 2
    }


async def test_an_id_stored_with_other_content_is_a_409(env: Env) -> None:
    async with env.client() as client:
        await add_manual(client, "kraken")
        await client.post("/api/v1/ledger", json=entry())
        r = await client.post("/api/v1/ledger", json=entry(amount="0.5"))  # "0.50" stored
        listed = await client.get("/api/v1/ledger")
    detail = (
        "entry 'e1' is already stored with different content; "
        "correct it with a reversal, never an edit"
    )
    assert problem(r, 409, "conflict") == {
        "type": "https://cryptodesk.dev/problems/conflict", "title": "Conflict", "status": 409,
        "detail": detail, "instance": "/api/v1/ledger",
        "errors": [{"name": "id", "reason": detail}],
    }  # fmt: skip
    assert ids(listed) == ["e1"]


async def test_an_entry_on_an_unknown_account_is_a_404(env: Env) -> None:
    async with env.client() as client:
        r = await client.post("/api/v1/ledger", json=entry())
        listed = await client.get("/api/v1/ledger")
        accounts = await client.get("/api/v1/accounts")
    body = problem(r, 404, "unknown-account")
    assert body["detail"] == "no account 'kraken': add it first or import with create_accounts"
    assert body["errors"] == [{"name": "account", "reason": body["detail"]}]
    assert listed.json()["entries"] == []
    assert accounts.json() == {"accounts": []}


@pytest.mark.parametrize(
    ("over", "name", "detail"),
    [
        ({"amount": "-1"}, "amount", "amount must be positive, got -1"),
        ({"amount": "0"}, "amount", "amount must be positive, got 0"),
        ({"amount": "abc"}, "amount", "amount 'abc' is not a decimal number"),
        ({"amount": 0.5}, "amount", None),  # a JSON number passed through a float
        ({"kind": "gift"}, "kind", None),
        ({"timestamp": "soon"}, "timestamp",
         "timestamp 'soon' is neither epoch milliseconds nor ISO 8601"),
        ({"counter_asset": None}, "counter_asset", "counter_asset is required"),
        ({"kind": "income", "counter_asset": None, "counter_amount": None}, "subkind",
         "subkind is required"),
        ({"lot_ids": [{"id": "x", "amount": "1"}]}, "lot_ids",
         "a buy disposes of nothing to select lots for"),
        ({"colour": "red"}, "colour", None),
    ],
)  # fmt: skip
async def test_a_bad_entry_is_a_400_naming_the_field(
    env: Env, over: dict[str, Any], name: str, detail: str | None
) -> None:
    async with env.client() as client:
        await add_manual(client, "kraken")
        r = await client.post("/api/v1/ledger", json=entry(**over))
        listed = await client.get("/api/v1/ledger")
    # detail None: the body model refuses it (422); else the service does (400).
    body = (
        problem(r, 422, "invalid-body") if detail is None else problem(r, 400, "invalid-parameter")
    )
    assert [e["name"] for e in body["errors"]] == [name]
    if detail is not None:
        assert body["detail"] == detail
    assert listed.json()["entries"] == []


async def test_the_ledger_pages_by_cursor_and_filters(env: Env) -> None:
    async with env.client() as client:
        await import_csv(client, CSV)
        pages, cursor = [], None
        while True:
            params = {"limit": "2"} | ({} if cursor is None else {"cursor": cursor})
            page = (await client.get("/api/v1/ledger", params=params)).json()
            pages.append([e["id"] for e in page["entries"]])
            cursor = page["next_cursor"]
            if cursor is None:
                break
        exact = await client.get("/api/v1/ledger", params={"limit": "5"})
        cold = await client.get("/api/v1/ledger", params={"account": "cold"})
        window = await client.get(
            "/api/v1/ledger", params={"start": "2024-02-01T00:00:00Z", "end": "1711929600000"}
        )
        first = (await client.get("/api/v1/ledger", params={"limit": "1"})).json()
        other = await client.get(
            "/api/v1/ledger", params={"cursor": first["next_cursor"], "account": "kraken"}
        )
        junk = await client.get("/api/v1/ledger", params={"cursor": "not-a-cursor"})
        bad_time = await client.get("/api/v1/ledger", params={"start": "May"})
        too_many = await client.get("/api/v1/ledger", params={"limit": "1001"})
    assert pages == [["b1", "b2"], ["t1", "s1"], ["i1"]]
    assert ids(exact) == ["b1", "b2", "t1", "s1", "i1"]
    assert exact.json()["next_cursor"] is None
    assert [e["seq"] for e in exact.json()["entries"]] == [1, 2, 3, 4, 5]
    assert ids(cold) == ["t1", "i1"]  # a transfer belongs to both its accounts
    assert ids(window) == ["b2", "t1"]  # 2024-02-01 inclusive .. 2024-04-01 exclusive
    assert problem(other, 400, "invalid-cursor")["detail"] == (
        "cursor belongs to a query with other filters; match them"
    )
    assert problem(junk, 400, "invalid-cursor")["errors"] == [
        {"name": "cursor", "reason": "cursor is not one this server issued"}
    ]
    assert problem(bad_time, 400, "invalid-parameter")["errors"][0]["name"] == "start"
    assert problem(too_many, 400, "invalid-parameter")["errors"][0]["name"] == "limit"


async def test_an_imported_row_reads_back_exactly(env: Env) -> None:
    async with env.client() as client:
        await import_csv(client, CSV)
        rows = (await client.get("/api/v1/ledger")).json()["entries"]
    b1, t1, i1 = rows[0], rows[2], rows[4]
    assert {k: v for k, v in b1.items() if k != "hash"} == stored(
        "b1", seq=1, timestamp="2024-01-02T00:00:00.000Z", timestamp_ms=1_704_153_600_000,
        amount="0.5", counter_amount="20000", fee_asset="USD", fee_amount="10",
        note="first buy",
    )  # fmt: skip
    assert (t1["kind"], t1["to_account"], t1["fee_asset"], t1["fee_amount"]) == (
        "transfer", "cold", "BTC", "0.0001",
    )  # fmt: skip
    assert (i1["kind"], i1["subkind"], i1["value"], i1["account"]) == (
        "income", "staking", "30", "cold",
    )  # fmt: skip


# ---- reversals --------------------------------------------------------------------------


async def test_a_reversal_is_appended_and_cannot_be_repeated(env: Env) -> None:
    async with env.client() as client:
        await import_csv(client, CSV)
        r = await client.post("/api/v1/ledger/b2/reverse", json={"note": "double entry"})
        again = await client.post("/api/v1/ledger/b2/reverse")
        of_reversal = await client.post("/api/v1/ledger/b2:reversal/reverse")
        named = await client.post("/api/v1/ledger/s1/reverse", json={"id": "fix-s1"})
        taken = await client.post("/api/v1/ledger/b1/reverse", json={"id": "fix-s1"})
        unknown = await client.post("/api/v1/ledger/nope/reverse")
        long_id = await client.post(f"/api/v1/ledger/{'x' * 125}/reverse")
        listed = await client.get("/api/v1/ledger")
    assert r.status_code == 201
    assert r.json() == stored(
        "b2:reversal", timestamp="2024-02-01T00:00:00.000Z", timestamp_ms=1_706_745_600_000,
        amount="0.25", counter_amount="11000", reverses="b2", note="double entry",
    )  # fmt: skip
    assert problem(again, 409, "conflict")["errors"] == [
        {"name": "entry_id", "reason": "entry 'b2' is already reversed by 'b2:reversal'"}
    ]
    assert problem(of_reversal, 409, "conflict")["detail"] == (
        "entry 'b2:reversal' is itself a reversal; it cannot be reversed"
    )
    assert named.status_code == 201
    assert named.json()["id"] == "fix-s1"
    assert problem(taken, 409, "conflict")["errors"] == [
        {"name": "id", "reason": "entry 'fix-s1' is already stored with different content; "
                                 "correct it with a reversal, never an edit"}
    ]  # fmt: skip
    assert problem(unknown, 404, "unknown-entry") == {
        "type": "https://cryptodesk.dev/problems/unknown-entry", "title": "Not Found",
        "status": 404, "detail": "no ledger entry 'nope'",
        "instance": "/api/v1/ledger/nope/reverse",
        "errors": [{"name": "entry_id", "reason": "no ledger entry 'nope'"}],
    }  # fmt: skip
    assert problem(long_id, 400, "invalid-parameter")["errors"][0]["name"] == "id"
    assert ids(listed) == ["b1", "b2", "t1", "s1", "i1", "b2:reversal", "fix-s1"]


# ---- imports ----------------------------------------------------------------------------


async def test_importing_the_same_file_again_skips_every_row(env: Env) -> None:
    async with env.client() as client:
        first = await import_csv(client, CSV)
        again = await import_csv(client, CSV)
        deposit = "x1,2024-05-01,deposit,kraken,ETH,1,,,,,,,,\n"
        more = await import_csv(client, HEADER + ROWS[0] + deposit)
        listed = await client.get("/api/v1/ledger")
        verified = await client.get("/api/v1/ledger/verify")
    assert (first.status_code, first.json()) == (200, {"added": 5, "skipped": 0})
    assert again.json() == {"added": 0, "skipped": 5}
    assert more.json() == {"added": 1, "skipped": 1}
    assert ids(listed) == ["b1", "b2", "t1", "s1", "i1", "x1"]
    assert verified.json()["ok"] is True
    assert verified.json()["entries"] == 6


async def test_a_bad_row_fails_the_whole_import_naming_its_line(env: Env) -> None:
    bad = HEADER + ROWS[0] + ROWS[1] + "s2,2024-04-01T00:00:00Z,sell,kraken,BTC,-3,USD,1,,,,,,\n"
    async with env.client() as client:
        await import_csv(client, HEADER + ROWS[0])
        before = (await client.get("/api/v1/ledger")).json()
        r = await import_csv(client, bad)
        after = (await client.get("/api/v1/ledger")).json()
        accounts = (await client.get("/api/v1/accounts")).json()
    assert problem(r, 400, "invalid-ledger-file") == {
        "type": "https://cryptodesk.dev/problems/invalid-ledger-file", "title": "Bad Request",
        "status": 400, "detail": "line 4: amount must be positive, got -3",
        "instance": "/api/v1/ledger/import",
        "errors": [{"name": "body", "reason": "line 4: amount must be positive, got -3"}],
        "line": 4, "field": "amount",
    }  # fmt: skip
    assert after == before
    assert [e["id"] for e in after["entries"]] == ["b1"]
    assert [a["name"] for a in accounts["accounts"]] == ["kraken"]


async def test_an_import_clashing_with_stored_content_is_a_409_and_stores_nothing(
    env: Env,
) -> None:
    async with env.client() as client:
        await import_csv(client, HEADER + ROWS[0])
        clash = HEADER + ROWS[1] + ROWS[0].replace("first buy", "edited")
        r = await import_csv(client, clash)
        listed = await client.get("/api/v1/ledger")
    assert problem(r, 409, "conflict")["errors"][0]["name"] == "id"
    assert ids(listed) == ["b1"]


@pytest.mark.parametrize(
    ("headers", "body", "params", "status", "code", "detail"),
    [
        ({"content-type": "application/json"}, CSV, {}, 415, "unsupported-media-type",
         "the body must be text/csv or text/plain, not application/json"),
        ({"content-type": "text/csv; charset=klingon"}, CSV, {}, 415, "unsupported-media-type",
         "unknown charset 'klingon'"),
        ({"content-type": "text/csv"}, HEADER + ROWS[0] * 60, {}, 413, "payload-too-large",
         "the upload is larger than 4096 bytes; split the file"),
        ({"content-type": "text/csv"}, "", {}, 400, "invalid-ledger-file", "the file is empty"),
        ({"content-type": "text/csv"}, "a,b\n1,2\n", {}, 400, "invalid-ledger-file", None),
        ({"content-type": "text/csv"}, CSV, {"source": "excel"}, 400, "invalid-parameter", None),
    ],
)  # fmt: skip
async def test_an_unusable_upload_is_refused(
    env: Env,
    headers: dict[str, str],
    body: str,
    params: dict[str, str],
    status: int,
    code: str,
    detail: str | None,
) -> None:
    async with env.client() as client:
        r = await client.post("/api/v1/ledger/import", content=body, headers=headers, params=params)
        listed = await client.get("/api/v1/ledger")
    got = problem(r, status, code)
    if detail is not None:
        assert got["detail"] == detail
    assert listed.json()["entries"] == []


async def test_a_latin1_upload_with_its_charset_imports(env: Env) -> None:
    text = HEADER + ROWS[0].replace("first buy", "café")
    async with env.client() as client:
        r = await client.post(
            "/api/v1/ledger/import", content=text.encode("latin-1"),
            headers={"content-type": "text/csv; charset=latin-1"},
        )  # fmt: skip
        undeclared = await client.post(
            "/api/v1/ledger/import", content=text.encode("latin-1"),
            headers={"content-type": "text/csv"},
        )  # fmt: skip
        listed = await client.get("/api/v1/ledger")
    assert r.json() == {"added": 1, "skipped": 0}
    assert problem(undeclared, 400, "invalid-ledger-file")["line"] == 2
    assert listed.json()["entries"][0]["note"] == "café"


# ---- the chain --------------------------------------------------------------------------


async def test_verify_reports_an_intact_chain(env: Env) -> None:
    async with env.client() as client:
        empty = await client.get("/api/v1/ledger/verify")
        await import_csv(client, CSV)
        full = await client.get("/api/v1/ledger/verify")
        last = (await client.get("/api/v1/ledger")).json()["entries"][-1]
    assert empty.json() == {"ok": True, "entries": 0, "first_broken": None, "head_hash": "0" * 64}
    assert full.json() == {
        "ok": True, "entries": 5, "first_broken": None, "head_hash": last["hash"],
    }  # fmt: skip


@pytest.mark.parametrize(
    ("sql", "broken"),
    [
        ("UPDATE ledger_entries SET amount = '0.26' WHERE seq = 2",
         {"seq": 2, "id": "b2", "reason": "edited",
          "message": "entry 'b2' (seq 2) does not match its hash: it was edited"}),
        ("DELETE FROM ledger_entries WHERE seq = 3",
         {"seq": 4, "id": "s1", "reason": "deleted",
          "message": "seq 3 missing before entry 's1' (seq 4): entries were deleted"}),
        ("DELETE FROM ledger_entries WHERE seq = 5",
         {"seq": 5, "id": None, "reason": "truncated",
          "message": "the head records 5 entries but the chain ends at seq 4: "
                     "the newest 1 were deleted"}),
    ],
)  # fmt: skip
async def test_verify_names_the_first_broken_entry_after_tampering(
    env: Env, sql: str, broken: dict[str, Any]
) -> None:
    async with env.client("acme") as acme, env.client("beta") as beta:
        await import_csv(acme, CSV)
        await import_csv(beta, CSV)
        con = sqlite3.connect(env.db)
        with con:
            con.execute(sql + " AND tenant_id = 'acme'")
        con.close()
        r = await acme.get("/api/v1/ledger/verify")
        other = await beta.get("/api/v1/ledger/verify")
    assert r.status_code == 200
    assert r.json() == {"ok": False, "entries": 5 if "UPDATE" in sql else 4,
                        "first_broken": broken, "head_hash": None}  # fmt: skip
    assert other.json()["ok"] is True
