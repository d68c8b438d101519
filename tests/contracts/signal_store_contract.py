"""The ``SqlSignalStore`` contract, run on SQLite (tests/unit) and PostgreSQL
(tests/integration). A subclass provides an async ``signals`` fixture yielding
a store on an empty, migrated database."""

from __future__ import annotations

import itertools

from cryptodesk.adapters.db.signal_store import SignalFilter, SqlSignalStore, list_key
from cryptodesk.domain.signals import Signal

T0 = 1_714_521_600_000  # 2024-05-01T00:00:00Z
HOUR = 3_600_000
BTC = ("sim", "BTC/USDT", "1h")
ETH = ("sim", "ETH/USDT", "1h")


def sig(
    rule: str, open_time: int, series: tuple[str, str, str] = BTC, *, kind: str = "golden_cross"
) -> Signal:
    return Signal(
        rule, kind, *series, open_time, 100.5, {"sma_3": 101.25, "sma_5": 100.75}, open_time + 5
    )


class SignalStoreContract:
    # ---- commit: compare-and-set progress plus signals ------------------------------

    async def test_first_commit_starts_the_series(self, signals: SqlSignalStore) -> None:
        assert await signals.progress(BTC) is None
        assert await signals.commit(BTC, T0, after=None, fired=[]) is True
        assert await signals.progress(BTC) == T0
        assert await signals.progress(ETH) is None

    async def test_commit_moves_progress_and_stores_signals(self, signals: SqlSignalStore) -> None:
        await signals.commit(BTC, T0, after=None, fired=[])
        fired = [sig("a", T0 + HOUR), sig("b", T0 + HOUR, kind="rsi_oversold")]
        assert await signals.commit(BTC, T0 + HOUR, after=T0, fired=fired) is True
        assert await signals.progress(BTC) == T0 + HOUR
        assert await signals.unpublished(BTC) == fired
        assert await signals.count() == 2

    async def test_forgotten_progress_starts_over(self, signals: SqlSignalStore) -> None:
        await signals.commit(BTC, T0, after=None, fired=[sig("a", T0)])
        await signals.commit(ETH, T0, after=None, fired=[])
        await signals.forget_progress(BTC)
        assert await signals.progress(BTC) is None
        assert await signals.progress(ETH) == T0
        assert await signals.commit(BTC, T0 + HOUR, after=None, fired=[])
        assert await signals.count() == 1  # signals stay

    async def test_a_stale_commit_writes_nothing(self, signals: SqlSignalStore) -> None:
        await signals.commit(BTC, T0, after=None, fired=[])
        assert await signals.commit(BTC, T0 + HOUR, after=T0, fired=[sig("a", T0 + HOUR)])
        # The same candle again (a redelivery, or a second worker): refused whole.
        again = [sig("a", T0 + HOUR), sig("z", T0 + HOUR)]
        assert await signals.commit(BTC, T0 + HOUR, after=T0, fired=again) is False
        assert await signals.commit(BTC, T0, after=None, fired=[sig("y", T0)]) is False
        assert await signals.progress(BTC) == T0 + HOUR
        assert [s.rule for s in await signals.unpublished(BTC)] == ["a"]

    async def test_a_stored_signal_is_kept_as_it_was(self, signals: SqlSignalStore) -> None:
        first = sig("a", T0)
        assert await signals.commit(BTC, T0, after=None, fired=[first])
        other = Signal("a", "death_cross", *BTC, T0, 1.0, {}, 1)  # same natural key
        assert await signals.commit(ETH, T0, after=None, fired=[other])
        assert await signals.unpublished(BTC) == [first]

    async def test_published_signals_leave_the_outbox(self, signals: SqlSignalStore) -> None:
        a, b, c = sig("a", T0), sig("b", T0), sig("a", T0, ETH)
        await signals.commit(BTC, T0, after=None, fired=[a, b])
        await signals.commit(ETH, T0, after=None, fired=[c])
        await signals.mark_published([a], at=T0 + 10)
        assert await signals.unpublished(BTC) == [b]
        assert await signals.unpublished(ETH) == [c]
        await signals.mark_published([a, b, c], at=T0 + 20)
        assert await signals.unpublished(BTC) == []
        assert await signals.unpublished(ETH) == []

    async def test_values_round_trip(self, signals: SqlSignalStore) -> None:
        s = Signal("m", "macd_cross_up", *BTC, T0, 0.1 + 0.2,
                   {"macd_line_12_26_9": -1e-300, "macd_signal_12_26_9": 3.0}, 7)  # fmt: skip
        await signals.commit(BTC, T0, after=None, fired=[s])
        (back,) = await signals.signals(SignalFilter(), limit=10)
        assert back == s
        assert back.values["macd_line_12_26_9"] == -1e-300

    # ---- listing --------------------------------------------------------------------

    async def _seed(self, signals: SqlSignalStore) -> list[Signal]:
        made: list[Signal] = []
        progress: dict[tuple[str, str, str], int | None] = {BTC: None, ETH: None}
        for i, series in itertools.product(range(4), (BTC, ETH)):
            t = T0 + i * HOUR
            fired = [sig("b", t, series), sig("a", t, series, kind="death_cross")]
            assert await signals.commit(series, t, after=progress[series], fired=fired)
            progress[series] = t
            made += fired
        return sorted(made, key=list_key)

    async def test_listing_is_in_key_order_with_filters(self, signals: SqlSignalStore) -> None:
        made = await self._seed(signals)
        assert await signals.signals(SignalFilter(), limit=100) == made
        assert await signals.signals(SignalFilter(), limit=3, newest_first=True) == made[::-1][:3]
        eth_a = await signals.signals(SignalFilter(symbol="ETH/USDT", rule="a"), limit=100)
        assert [(s.symbol, s.rule, s.open_time) for s in eth_a] == [
            ("ETH/USDT", "a", T0 + i * HOUR) for i in range(4)
        ]
        deaths = await signals.signals(SignalFilter(kind="death_cross"), limit=100)
        assert {s.rule for s in deaths} == {"a"}
        ranged = await signals.signals(
            SignalFilter(exchange="sim", interval="1h", start=T0 + HOUR, end=T0 + 3 * HOUR),
            limit=100,
        )
        assert ranged == [s for s in made if T0 + HOUR <= s.open_time < T0 + 3 * HOUR]
        assert await signals.signals(SignalFilter(exchange="kraken"), limit=100) == []

    async def test_keyset_pages_cover_everything_once(self, signals: SqlSignalStore) -> None:
        made = await self._seed(signals)
        forward: list[Signal] = []
        after = None
        while page := await signals.signals(SignalFilter(), limit=3, after=after):
            forward += page
            after = list_key(page[-1])
        assert forward == made
        backward: list[Signal] = []
        before = None
        while page := await signals.signals(
            SignalFilter(), limit=3, before=before, newest_first=True
        ):
            backward += page
            before = list_key(page[-1])
        assert backward == made[::-1]

    # ---- rules ----------------------------------------------------------------------

    async def test_rule_revisions_count_replacements(self, signals: SqlSignalStore) -> None:
        assert await signals.rules() is None
        assert await signals.rules_revision() is None
        assert await signals.replace_rules('[{"id": "a"}]', T0) == 1
        assert await signals.replace_rules("[]", T0 + 1) == 2
        stored = await signals.rules()
        assert stored is not None
        assert (stored.revision, stored.rules, stored.updated_at) == (2, "[]", T0 + 1)
        assert await signals.rules_revision() == 2
