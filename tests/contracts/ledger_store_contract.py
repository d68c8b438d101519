"""The ledger contract (``LedgerService`` over ``SqlLedgerStore``), run on SQLite
(tests/unit) and PostgreSQL (tests/integration). A subclass provides an async
``ledger`` fixture (a service on an empty, migrated database, keyed with
``KEY``) and ``sql``, an async function running one raw SQL statement on that
database (for the tamper tests: what someone with database access could do)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from decimal import Decimal
from typing import Any

import pytest

from cryptodesk.adapters.db.engine import StorageError
from cryptodesk.adapters.secrets import SecretBox, SecretsError
from cryptodesk.domain.errors import DomainError
from cryptodesk.portfolio.accounts import AccountSpec, Balance, ExchangeCredentials
from cryptodesk.portfolio.ledger import LedgerEntry, effective_entries
from cryptodesk.services.ledger_service import ImportResult, LedgerNotFound, LedgerService

KEY = "3q2HMzTLMpiN6mWxbJ9Y0h7tr8Q4cn0u5cNwq-UHslU="
OTHER_KEY = "kV0eF1hU5sGZ2y0X8oV3jJ8yJ3m7aP6qE0w9rT1uY2I="
T0 = 1_714_521_600_000  # 2024-05-01T00:00:00Z
NOW = T0 + 86_400_000
D = Decimal
Sql = Callable[[str], Awaitable[None]]


def buy(
    i: int | str, ts: int = T0, *, account: str = "binance", amount: str = "0.5", **kw: Any
) -> LedgerEntry:
    return LedgerEntry(
        f"e{i}", ts, "buy", account, "BTC", D(amount), counter_asset="USD",
        counter_amount=D("30000.00"), **kw,
    )  # fmt: skip


def chain_of(n: int) -> list[LedgerEntry]:
    return [buy(i, T0 + i) for i in range(1, n + 1)]


class LedgerStoreContract:
    # ---- accounts -------------------------------------------------------------------

    async def test_accounts_of_every_kind(self, ledger: LedgerService) -> None:
        creds = ExchangeCredentials("key-1", "s3cret-1", "pass-1")
        ex = await ledger.add_account(
            "acme", AccountSpec("binance", "exchange", exchange="binance", credentials=creds)
        )
        await ledger.add_account(
            "acme", AccountSpec("cold", "wallet", chain="bitcoin", address="bc1qxyz", note="vault")
        )
        await ledger.add_account("acme", AccountSpec("broker", "manual"))
        assert ex.has_credentials
        assert ex.created_at == NOW
        names = [(a.name, a.kind, a.exchange, a.chain, a.address, a.has_credentials)
                 for a in await ledger.accounts("acme")]  # fmt: skip
        assert names == [
            ("binance", "exchange", "binance", None, None, True),
            ("broker", "manual", None, None, None, False),
            ("cold", "wallet", None, "bitcoin", "bc1qxyz", False),
        ]
        cold = await ledger.account("acme", "cold")
        assert cold is not None
        assert cold.note == "vault"
        assert await ledger.account("acme", "nope") is None
        got = await ledger.credentials("acme", "binance")
        assert (got.api_key, got.secret, got.password) == ("key-1", "s3cret-1", "pass-1")
        assert "s3cret" not in repr(await ledger.accounts("acme")) + repr(got)

    async def test_account_names_are_unique_per_tenant(self, ledger: LedgerService) -> None:
        await ledger.add_account("acme", AccountSpec("main", "manual"))
        with pytest.raises(DomainError, match="account 'main' already exists"):
            await ledger.add_account("acme", AccountSpec("main", "exchange", exchange="kraken"))
        await ledger.add_account("beta", AccountSpec("main", "exchange", exchange="kraken"))
        assert [a.kind for a in await ledger.accounts("acme")] == ["manual"]
        assert [a.kind for a in await ledger.accounts("beta")] == ["exchange"]

    async def test_credentials_are_encrypted_at_rest(self, ledger: LedgerService, sql: Sql) -> None:
        creds = ExchangeCredentials("key-1", "s3cret-1")
        spec = AccountSpec("binance", "exchange", exchange="binance", credentials=creds)
        await ledger.add_account("acme", spec)
        await ledger.add_account("beta", spec)
        with pytest.raises(SecretsError, match="not the one they were encrypted with"):
            await LedgerService(ledger.store, SecretBox(OTHER_KEY)).credentials("acme", "binance")
        await ledger.add_account("acme", AccountSpec("k", "exchange", exchange="kraken"))
        with pytest.raises(DomainError, match="has no API credentials"):
            await ledger.credentials("acme", "k")
        with pytest.raises(LedgerNotFound):
            await ledger.credentials("acme", "nope")
        with pytest.raises(DomainError, match="no accounts key"):
            await LedgerService(ledger.store, None).add_account("acme", spec)
        # A token copied onto another tenant's row does not decrypt as that account.
        await sql(
            "UPDATE accounts SET credentials = (SELECT credentials FROM accounts "
            "WHERE tenant_id = 'acme' AND name = 'binance') WHERE tenant_id = 'beta'"
        )
        with pytest.raises(SecretsError, match="belong to another account"):
            await ledger.credentials("beta", "binance")

    # ---- balances -------------------------------------------------------------------

    async def test_balances_keep_the_latest_report(self, ledger: LedgerService) -> None:
        await ledger.add_account("acme", AccountSpec("cold", "wallet", chain="btc", address="a"))
        await ledger.set_balances("acme", "cold", {"BTC": D("1.50")}, as_of=T0, source="manual")
        await ledger.set_balances(
            "acme", "cold", {"BTC": D("2"), "ETH": D("0")}, as_of=T0 + 10, source="provider"
        )
        await ledger.set_balances("acme", "cold", {"BTC": D("9")}, as_of=T0 + 5, source="manual")
        assert await ledger.balances("acme") == [
            Balance("cold", "BTC", D("2"), T0 + 10, "provider"),
            Balance("cold", "ETH", D("0"), T0 + 10, "provider"),
        ]
        await ledger.set_balances(
            "acme", "cold", {"SOL": D("3.25")}, as_of=T0 + 20, source="exchange", complete=True
        )
        got = [(b.asset, str(b.amount), b.as_of) for b in await ledger.balances("acme", "cold")]
        assert got == [("BTC", "0", T0 + 20), ("ETH", "0", T0 + 20), ("SOL", "3.25", T0 + 20)]
        assert await ledger.balances("beta") == []

    async def test_bad_balances_are_refused(self, ledger: LedgerService) -> None:
        await ledger.add_account("acme", AccountSpec("m", "manual"))
        with pytest.raises(LedgerNotFound):
            await ledger.set_balances("acme", "nope", {"BTC": D(1)}, as_of=T0, source="manual")
        with pytest.raises(DomainError, match="cannot be negative"):
            await ledger.set_balances("acme", "m", {"BTC": D(-1)}, as_of=T0, source="manual")
        with pytest.raises(DomainError, match="source"):
            await ledger.set_balances("acme", "m", {"BTC": D(1)}, as_of=T0, source="guess")  # type: ignore[arg-type]
        assert await ledger.balances("acme") == []

    # ---- imports --------------------------------------------------------------------

    async def test_import_is_idempotent_and_exact(self, ledger: LedgerService) -> None:
        rich = LedgerEntry(
            "s1", T0 + 9, "sell", "binance", "BTC", D("0.250"), counter_asset="USD",
            counter_amount=D("16000.10"), fee_asset="BNB", fee_amount=D("0.001"),
            fee_value=D("0.60"), lot_ids=(("e1", D("0.250")),), note="partial fill",
            external_id="T-77", tags=("otc", "desk"),
        )  # fmt: skip
        entries = [*chain_of(3), rich]
        assert await ledger.import_entries("acme", entries) == ImportResult(4, 0)
        assert await ledger.import_entries("acme", entries) == ImportResult(0, 4)
        stored = await ledger.entries("acme")
        assert stored == entries
        assert str(stored[0].counter_amount) == "30000.00"
        assert [a.name for a in await ledger.accounts("acme")] == ["binance"]
        assert (await ledger.verify("acme")).entries == 4

    async def test_the_same_exchange_id_is_the_same_entry(self, ledger: LedgerService) -> None:
        await ledger.import_entries("acme", [buy(1, external_id="X1")])
        again = [buy("1b", external_id="X1"), buy(2, account="kraken", external_id="X1")]
        assert await ledger.import_entries("acme", again) == ImportResult(1, 1)
        within = [buy(3, external_id="X3"), buy(4, external_id="X3"), buy(3, external_id="X3")]
        assert await ledger.import_entries("acme", within) == ImportResult(1, 2)
        assert [e.id for e in await ledger.entries("acme")] == ["e1", "e2", "e3"]

    async def test_an_edit_is_refused_and_nothing_is_imported(self, ledger: LedgerService) -> None:
        await ledger.import_entries("acme", chain_of(2))
        batch = [buy(3, T0 + 3), buy(2, T0 + 2, amount="0.6"), buy(4, T0 + 4)]
        with pytest.raises(DomainError, match="entry 'e2' is already stored with different"):
            await ledger.import_entries("acme", batch)
        with pytest.raises(DomainError, match="entry 'e5' is already stored with different"):
            await ledger.import_entries("acme", [buy(5), buy(5, amount="0.7")])
        assert [e.id for e in await ledger.entries("acme")] == ["e1", "e2"]
        assert (await ledger.verify("acme")).ok

    async def test_unknown_accounts(self, ledger: LedgerService) -> None:
        moved = LedgerEntry("t1", T0, "transfer", "binance", "BTC", D("0.1"), to_account="cold")
        with pytest.raises(LedgerNotFound, match="no account 'binance'"):
            await ledger.import_entries("acme", [buy(1), moved], create_accounts=False)
        assert await ledger.accounts("acme") == []
        assert await ledger.entries("acme") == []
        await ledger.import_entries("acme", [buy(1), moved])
        assert [(a.name, a.kind) for a in await ledger.accounts("acme")] == [
            ("binance", "manual"), ("cold", "manual"),
        ]  # fmt: skip

    async def test_entries_in_append_order_with_filters(self, ledger: LedgerService) -> None:
        moved = LedgerEntry("t1", T0 + 5, "transfer", "binance", "BTC", D("0.1"), to_account="cold")
        await ledger.import_entries("acme", [buy(1, T0 + 9), buy(2, T0 + 1), moved])
        await ledger.append("acme", buy(3, T0 + 3, account="kraken"))
        assert [e.id for e in await ledger.entries("acme")] == ["e1", "e2", "t1", "e3"]
        got = await ledger.entries("acme", start=T0 + 3, end=T0 + 9)
        assert [e.id for e in got] == ["t1", "e3"]
        assert [e.id for e in await ledger.entries("acme", account="cold")] == ["t1"]
        page = await ledger.stored_entries("acme", after_seq=1, limit=2)
        assert [(s.seq, s.entry.id) for s in page] == [(2, "e2"), (3, "t1")]
        assert (await ledger.verify("acme")).head_hash == (await ledger.stored_entries("acme"))[
            -1
        ].hash

    async def test_a_large_import_in_one_transaction(self, ledger: LedgerService) -> None:
        entries = chain_of(25_000)  # more keys than one lookup query takes
        assert await ledger.import_entries("acme", entries) == ImportResult(25_000, 0)
        assert await ledger.import_entries("acme", entries[::-1]) == ImportResult(0, 25_000)
        report = await ledger.verify("acme")
        assert (report.ok, report.entries) == (True, 25_000)

    # ---- tenants --------------------------------------------------------------------

    async def test_tenants_are_isolated(self, ledger: LedgerService, sql: Sql) -> None:
        await ledger.import_entries("acme", chain_of(3))
        await ledger.import_entries("beta", [buy(1, T0 + 1), buy(9, account="kraken")])
        assert [e.id for e in await ledger.entries("beta")] == ["e1", "e9"]
        assert [a.name for a in await ledger.accounts("beta")] == ["binance", "kraken"]
        with pytest.raises(LedgerNotFound):
            await ledger.reverse("beta", "e2")
        await sql("UPDATE ledger_entries SET amount = '9' WHERE tenant_id = 'acme' AND seq = 2")
        assert not (await ledger.verify("acme")).ok
        beta = await ledger.verify("beta")
        assert (beta.ok, beta.entries) == (True, 2)
        await ledger.append("beta", buy(10))
        with pytest.raises(DomainError, match="tenant"):
            await ledger.entries("")
        await ledger.add_account("gamma", AccountSpec(name="cold", kind="manual"))
        assert await ledger.tenants() == ["acme", "beta", "gamma"]

    # ---- corrections ----------------------------------------------------------------

    async def test_reversal_copies_the_entry(self, ledger: LedgerService) -> None:
        await ledger.import_entries("acme", [*chain_of(2), buy(3, external_id="X3")])
        rev = await ledger.reverse("acme", "e3", note="duplicate fill")
        assert rev == LedgerEntry(
            "e3:reversal", T0, "buy", "binance", "BTC", D("0.5"), counter_asset="USD",
            counter_amount=D("30000.00"), note="duplicate fill", reverses="e3",
        )  # fmt: skip
        custom = await ledger.reverse("acme", "e1", new_id="fix-1")
        assert (custom.id, custom.reverses) == ("fix-1", "e1")
        stored = await ledger.entries("acme")
        assert [e.id for e in effective_entries(stored)] == ["e2"]
        with pytest.raises(DomainError, match="already reversed by 'e3:reversal'"):
            await ledger.reverse("acme", "e3")
        with pytest.raises(DomainError, match="itself a reversal"):
            await ledger.reverse("acme", "fix-1")
        with pytest.raises(LedgerNotFound, match="no ledger entry 'e9'"):
            await ledger.reverse("acme", "e9")
        assert len(await ledger.entries("acme")) == 5

    async def test_imported_reversals_are_checked(self, ledger: LedgerService) -> None:
        await ledger.import_entries("acme", chain_of(1))
        ok = [buy(2), buy("2r", reverses="e2", amount="0.50")]  # same amount, other spelling
        assert await ledger.import_entries("acme", ok) == ImportResult(2, 0)
        bad = {
            "reverses unknown entry 'e7'": [buy("x", reverses="e7")],
            "must copy the amount of 'e1'": [buy("x", reverses="e1", amount="0.4")],
            "'e2', already reversed by 'e2r'": [buy("x", reverses="e2")],
            "'e2r', itself a reversal": [buy("x", reverses="e2r")],
            "'ez' reverses 'e1', already reversed by 'ey'": [
                buy("y", reverses="e1"),
                buy("z", reverses="e1"),
            ],
        }
        for message, batch in bad.items():
            with pytest.raises(DomainError, match=message):
                await ledger.import_entries("acme", batch)
        assert [e.id for e in await ledger.entries("acme")] == ["e1", "e2", "e2r"]

    # ---- tampering --------------------------------------------------------------------

    async def _tampered(self, ledger: LedgerService, sql: Sql, *statements: str) -> Any:
        await ledger.import_entries("acme", chain_of(5))
        await ledger.import_entries("beta", chain_of(5))
        assert (await ledger.verify("acme")).ok
        for statement in statements:
            await sql(statement)
        report = await ledger.verify("acme")
        assert not report.ok
        assert report.head_hash is None
        assert (await ledger.verify("beta")).ok
        broken = report.first_broken
        assert broken is not None
        return report.entries, broken.seq, broken.entry_id, broken.reason

    async def test_an_edited_field_is_detected(self, ledger: LedgerService, sql: Sql) -> None:
        edit = "UPDATE ledger_entries SET amount = '0.50' WHERE tenant_id = 'acme' AND seq = 3"
        assert await self._tampered(ledger, sql, edit) == (5, 3, "e3", "edited")

    async def test_a_deleted_entry_is_detected(self, ledger: LedgerService, sql: Sql) -> None:
        drop = "DELETE FROM ledger_entries WHERE tenant_id = 'acme' AND entry_id = 'e2'"
        assert await self._tampered(ledger, sql, drop) == (4, 3, "e3", "deleted")

    async def test_swapped_entries_are_detected(self, ledger: LedgerService, sql: Sql) -> None:
        where = "WHERE tenant_id = 'acme' AND seq ="
        swap = (
            f"UPDATE ledger_entries SET seq = -1 {where} 2",
            f"UPDATE ledger_entries SET seq = 2 {where} 4",
            f"UPDATE ledger_entries SET seq = 4 {where} -1",
        )
        assert await self._tampered(ledger, sql, *swap) == (5, 2, "e4", "reordered")

    async def test_a_truncated_tail_is_detected(self, ledger: LedgerService, sql: Sql) -> None:
        cut = "DELETE FROM ledger_entries WHERE tenant_id = 'acme' AND seq > 3"
        assert await self._tampered(ledger, sql, cut) == (3, 4, None, "truncated")
        with pytest.raises(StorageError, match="does not end where its head says"):
            await ledger.append("acme", buy(6))

    async def test_an_edited_head_is_detected(self, ledger: LedgerService, sql: Sql) -> None:
        edit = f"UPDATE ledger_heads SET hash = '{'f' * 64}' WHERE tenant_id = 'acme'"
        assert await self._tampered(ledger, sql, edit) == (5, 5, "e5", "head_mismatch")

    async def test_a_lowered_head_is_detected(self, ledger: LedgerService, sql: Sql) -> None:
        edit = "UPDATE ledger_heads SET seq = 3 WHERE tenant_id = 'acme'"
        assert await self._tampered(ledger, sql, edit) == (5, 4, "e4", "head_mismatch")
