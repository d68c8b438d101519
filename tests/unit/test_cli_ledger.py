"""``cryptodesk accounts`` and ``cryptodesk ledger`` as a user runs them, on a SQLite file
named by CRYPTODESK_DATABASE_URL."""

from __future__ import annotations

import asyncio
import json
import re
import sqlite3
from pathlib import Path

import pytest
from typer.testing import CliRunner, Result

from cryptodesk.adapters.db.engine import create_engine
from cryptodesk.adapters.secrets import SecretBox, generate_key
from cryptodesk.cli_ledger import register
from cryptodesk.observability.logging import configure_logging
from cryptodesk.portfolio.accounts import ExchangeCredentials
from cryptodesk.services.ledger_service import LedgerService
from tests.unit._cli import cli_app

runner = CliRunner()
pytestmark = pytest.mark.usefixtures("clean_env")
API_KEY, SECRET = "AKIA-cli-visible-nowhere", "cli-s3cr3t-visible-nowhere"
HEADER = "id,timestamp,kind,account,asset,amount,counter_asset,counter_amount,fee_asset,fee_amount,to_account,value,lot_ids,note\n"  # noqa: E501
ROWS = [
    "b1,2024-01-02T00:00:00Z,buy,kraken,BTC,0.5,USD,20000,USD,10,,,,first buy\n",
    "b2,2024-02-01T00:00:00Z,buy,kraken,BTC,0.25,USD,11000,,,,,,\n",
    "t1,2024-03-01T00:00:00Z,transfer,kraken,BTC,0.5,,,BTC,0.0001,cold,,,to cold\n",
    "s1,2024-04-01T00:00:00Z,sell,kraken,BTC,0.1,USD,6500,,,,,,\n",
    "i1,2024-04-15T00:00:00Z,income:staking,cold,ETH,0.01,,,,,,30,,\n",
]


APP = cli_app(register)


@pytest.fixture(autouse=True)
def quiet_logging() -> None:
    configure_logging("json", "WARNING")


@pytest.fixture
def db(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    path = tmp_path / "data" / "ledger.db"
    monkeypatch.setenv("CRYPTODESK_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("CRYPTODESK_DATABASE_URL", f"sqlite+aiosqlite:///{path}")
    return path


@pytest.fixture
def key(db: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    value = generate_key()
    monkeypatch.setenv("CRYPTODESK_ACCOUNTS_KEY", value)
    return value


@pytest.fixture
def ledger_file(tmp_path: Path) -> Path:
    path = tmp_path / "ledger.csv"
    path.write_text(HEADER + "".join(ROWS))
    return path


def run(*args: str, input: str | None = None) -> Result:
    return runner.invoke(APP, list(args), input=input)


def ok(*args: str, input: str | None = None) -> list[str]:
    result = run(*args, input=input)
    assert result.exit_code == 0, result.output
    return result.stdout.splitlines()


def usage_error(*args: str, input: str | None = None) -> str:
    """The one stderr line of a command that must exit 2."""
    result = run(*args, input=input)
    assert result.exit_code == 2, result.output
    assert result.stdout == ""
    [line] = result.stderr.splitlines()
    return line


def stored_credentials(db: Path, key: str, name: str) -> ExchangeCredentials:
    async def read() -> ExchangeCredentials:
        engine = create_engine(f"sqlite+aiosqlite:///{db}")
        service = LedgerService(engine, SecretBox(key))
        try:
            return await service.credentials("default", name)
        finally:
            await service.close()
            await engine.dispose()

    return asyncio.run(read())


# ---- accounts ---------------------------------------------------------------------------


def test_keygen_prints_a_usable_key() -> None:
    [line] = ok("accounts", "keygen")
    assert re.fullmatch(r"[A-Za-z0-9_-]{43}=", line)
    box = SecretBox(line)
    assert box.decrypt(box.encrypt("x")) == "x"


def test_credentials_from_the_environment_are_stored_encrypted_and_never_shown(
    db: Path, key: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CRYPTODESK_ACCOUNT_API_KEY", API_KEY)
    monkeypatch.setenv("CRYPTODESK_ACCOUNT_SECRET", SECRET)
    monkeypatch.setenv("CRYPTODESK_LOG_LEVEL", "DEBUG")
    added = run("accounts", "add", "binance-main", "--kind", "exchange", "--exchange", "binance")
    listed = run("accounts", "list")
    as_json = run("accounts", "list", "--json")
    assert added.exit_code == 0, added.output
    assert added.stdout == "added exchange account binance-main (binance, credentials stored)\n"
    assert listed.stdout == "exchange account binance-main (binance, credentials stored)\n"
    assert json.loads(as_json.stdout) == [
        {"name": "binance-main", "kind": "exchange", "exchange": "binance", "chain": None,
         "address": None, "note": "", "has_credentials": True,
         "created_at": json.loads(as_json.stdout)[0]["created_at"]},
    ]  # fmt: skip
    assert '"level": "debug"' in added.stderr  # the log was on, and said nothing secret
    for result in (added, listed, as_json):
        assert API_KEY not in result.output
        assert SECRET not in result.output
    assert SECRET.encode() not in db.read_bytes()
    creds = stored_credentials(db, key, "binance-main")
    assert (creds.api_key, creds.secret, creds.password) == (API_KEY, SECRET, None)


def test_credentials_not_given_are_asked_for_without_echo(db: Path, key: str) -> None:
    result = run(
        "accounts", "add", "okx-1", "--kind", "exchange", "--exchange", "okx",
        input=f"{API_KEY}\n{SECRET}\n",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert result.stdout == (
        "API key: \nAPI secret: \nadded exchange account okx-1 (okx, credentials stored)\n"
    )
    creds = stored_credentials(db, key, "okx-1")
    assert (creds.api_key, creds.secret) == (API_KEY, SECRET)


def test_without_an_accounts_key_credentials_are_refused_before_asking(db: Path) -> None:
    line = usage_error("accounts", "add", "b", "--kind", "exchange", "--exchange", "binance")
    assert line == (
        "cryptodesk: error: no accounts key is configured, so credentials cannot be stored: "
        "set CRYPTODESK_ACCOUNTS_KEY (`cryptodesk accounts keygen` makes one) "
        "or pass --no-credentials"
    )
    assert ok("accounts", "list") == ["no accounts for tenant default"]
    assert ok(
        "accounts", "add", "b", "--kind", "exchange", "--exchange", "binance", "--no-credentials"
    ) == ["added exchange account b (binance, no credentials)"]


def test_a_bad_accounts_key_is_one_line(db: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CRYPTODESK_ACCOUNTS_KEY", "not-a-key")
    line = usage_error("accounts", "list")
    assert line == (
        "cryptodesk: error: CRYPTODESK_ACCOUNTS_KEY: the accounts key is not a Fernet key "
        "(44 characters of urlsafe base64): make one with `cryptodesk accounts keygen`"
    )


def test_wallet_and_manual_accounts_and_their_mistakes(db: Path) -> None:
    assert ok(
        "accounts", "add", "cold", "--kind", "wallet", "--chain", "bitcoin", "--address", "bc1q9"
    ) == ["added wallet account cold (bitcoin bc1q9)"]
    assert ok("accounts", "add", "cash") == ["added manual account cash"]
    assert usage_error("accounts", "add", "cash") == (
        "cryptodesk: error: account 'cash' already exists"
    )
    assert usage_error("accounts", "add", "w", "--kind", "wallet", "--chain", "bitcoin") == (
        "cryptodesk: error: address is required"
    )
    assert usage_error("accounts", "add", "m", "--api-key", "k") == (
        "cryptodesk: error: --api-key: a manual account has no API credentials"
    )
    assert usage_error("accounts", "add", "x", "--kind", "exchange", "--exchange", "Bad Id",
                       "--no-credentials") == (
        "cryptodesk: error: exchange 'Bad Id' is not a ccxt exchange id"
    )  # fmt: skip
    assert usage_error("accounts", "list", "--tenant", "Acme") == (
        "cryptodesk: error: --tenant 'Acme' is not a tenant id: 1-63 of a-z, 0-9, _ and -"
    )
    assert ok("accounts", "list") == [
        "manual account cash", "wallet account cold (bitcoin bc1q9)",
    ]  # fmt: skip


# ---- ledger -----------------------------------------------------------------------------

LISTED = [
    "     1  2024-01-02T00:00:00.000Z  b1  buy  kraken  0.5 BTC  for 20000 USD  fee 10 USD",
    "     2  2024-02-01T00:00:00.000Z  b2  buy  kraken  0.25 BTC  for 11000 USD",
    "     3  2024-03-01T00:00:00.000Z  t1  transfer  kraken->cold  0.5 BTC  fee 0.0001 BTC",
    "     4  2024-04-01T00:00:00.000Z  s1  sell  kraken  0.1 BTC  for 6500 USD",
    "     5  2024-04-15T00:00:00.000Z  i1  income:staking  cold  0.01 ETH",
]


def test_import_is_idempotent_and_lists_in_chain_order(db: Path, ledger_file: Path) -> None:
    assert ok("ledger", "import", str(ledger_file)) == [
        f"imported {ledger_file}: 5 added, 0 skipped"
    ]
    assert ok("ledger", "import", str(ledger_file), "--source", "generic") == [
        f"imported {ledger_file}: 0 added, 5 skipped"
    ]
    assert ok("ledger", "list") == LISTED
    assert ok("ledger", "list", "--account", "cold") == [LISTED[2], LISTED[4]]
    assert ok("ledger", "list", "--start", "2024-02-01", "--end", "2024-04-01") == LISTED[1:3]
    rows = json.loads(run("ledger", "list", "--json").stdout)
    assert [(r["seq"], r["id"], r["amount"]) for r in rows] == [
        (1, "b1", "0.5"), (2, "b2", "0.25"), (3, "t1", "0.5"), (4, "s1", "0.1"), (5, "i1", "0.01"),
    ]  # fmt: skip
    assert rows[4] | {"hash": "h"} == {
        "id": "i1", "timestamp": "2024-04-15T00:00:00.000Z", "timestamp_ms": 1_713_139_200_000,
        "kind": "income", "subkind": "staking", "account": "cold", "asset": "ETH",
        "amount": "0.01", "counter_asset": None, "counter_amount": None, "fee_asset": None,
        "fee_amount": None, "fee_value": None, "to_account": None, "value": "30",
        "lot_ids": [], "note": "", "reverses": None, "external_id": None, "tags": [],
        "seq": 5, "hash": "h",
    }  # fmt: skip
    assert ok("accounts", "list") == ["manual account cold", "manual account kraken"]
    assert usage_error("ledger", "list", "--account", "nope") == (
        "cryptodesk: error: no account 'nope'"
    )
    assert usage_error("ledger", "list", "--start", "soon") == (
        "cryptodesk: error: --start 'soon' is neither epoch milliseconds nor ISO 8601"
    )


def test_a_bad_row_imports_nothing_and_names_its_line(db: Path, tmp_path: Path) -> None:
    bad = tmp_path / "bad.csv"
    bad.write_text(HEADER + ROWS[0] + ROWS[1] + "s2,2024-04-01,sell,kraken,BTC,-3,USD,1,,,,,,\n")
    assert usage_error("ledger", "import", str(bad)) == (
        f"cryptodesk: error: {bad}:4: amount must be positive, got -3"
    )
    assert usage_error("ledger", "import", str(tmp_path / "missing.csv")).startswith(
        f"cryptodesk: error: {tmp_path / 'missing.csv'}: cannot read"
    )
    assert ok("ledger", "list") == []
    assert ok("accounts", "list") == ["no accounts for tenant default"]


def test_tenants_do_not_see_each_others_ledger(db: Path, ledger_file: Path) -> None:
    ok("ledger", "import", str(ledger_file), "--tenant", "acme")
    assert ok("ledger", "list", "--tenant", "acme") == LISTED
    assert ok("ledger", "list") == []
    assert ok("ledger", "verify") == ["ok: 0 entries", "head: " + "0" * 64]


def test_reverse_appends_a_correction(db: Path, ledger_file: Path) -> None:
    ok("ledger", "import", str(ledger_file))
    assert ok("ledger", "reverse", "b2", "--note", "duplicate") == ["reversed b2 with b2:reversal"]
    assert ok("ledger", "reverse", "s1", "--id", "fix-s1") == ["reversed s1 with fix-s1"]
    assert usage_error("ledger", "reverse", "b2") == (
        "cryptodesk: error: entry 'b2' is already reversed by 'b2:reversal'"
    )
    assert usage_error("ledger", "reverse", "nope") == "cryptodesk: error: no ledger entry 'nope'"
    assert ok("ledger", "list")[5:] == [
        "     6  2024-02-01T00:00:00.000Z  b2:reversal  buy  kraken  0.25 BTC  for 11000 USD"
        "  reverses b2",
        "     7  2024-04-01T00:00:00.000Z  fix-s1  sell  kraken  0.1 BTC  for 6500 USD"
        "  reverses s1",
    ]


def test_verify_exits_0_on_an_intact_chain_and_1_naming_the_first_broken_entry(
    db: Path, ledger_file: Path
) -> None:
    ok("ledger", "import", str(ledger_file))
    intact = ok("ledger", "verify")
    assert intact[0] == "ok: 5 entries"
    assert re.fullmatch(r"head: [0-9a-f]{64}", intact[1])
    with sqlite3.connect(db) as con:
        con.execute("UPDATE ledger_entries SET amount = '0.3' WHERE seq = 2")
        con.execute("UPDATE ledger_entries SET note = 'x' WHERE seq = 4")
    con.close()
    result = run("ledger", "verify")
    assert result.exit_code == 1
    assert result.stdout == (
        "broken at seq 2 (edited): entry 'b2' (seq 2) does not match its hash: it was edited\n"
    )
    assert result.stderr == ""


def test_verify_names_deleted_entries(db: Path, ledger_file: Path) -> None:
    ok("ledger", "import", str(ledger_file))
    with sqlite3.connect(db) as con:
        con.execute("DELETE FROM ledger_entries WHERE seq = 5")
    con.close()
    result = run("ledger", "verify")
    assert (result.exit_code, result.stdout) == (
        1,
        "broken at seq 5 (truncated): the head records 5 entries but the chain ends at seq 4: "
        "the newest 1 were deleted\n",
    )
    # Nothing is appended to a chain whose newest entries are gone.
    assert usage_error("ledger", "reverse", "b1") == (
        "cryptodesk: error: the ledger of tenant 'default' does not end where its head says; "
        "nothing is appended to a broken chain: run `cryptodesk ledger verify`"
    )
