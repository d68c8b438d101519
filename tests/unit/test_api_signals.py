"""/api/v1/signal-rules, /api/v1/signals and /api/v1/indicators over ASGI."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from cryptodesk.adapters.db import migrate
from cryptodesk.adapters.db.engine import create_engine
from cryptodesk.adapters.db.signal_store import SqlSignalStore
from cryptodesk.api.routes.signals import signals_router
from cryptodesk.domain.signals import Signal
from cryptodesk.services.signal_queries import SignalQueries
from cryptodesk.services.signal_rules import MaCrossRule, RuleBook
from tests.unit._fakes import MINUTE, T0, Harness, make_candle

PROBLEM = "application/problem+json"
NOW = T0 + 10 * MINUTE
SERIES = [make_candle(i) for i in range(600)]  # closes 100.75, 101.0, ..., 250.5


class SignalHarness(Harness):
    """The market harness plus the signal routes on a real SQLite signal store."""

    def attach(self, signals: SqlSignalStore) -> None:
        self.signals = signals
        self.book = RuleBook(signals, [MaCrossRule(id="g", type="ma_cross", symbols=["BTC/USDT"])])
        self.signal_queries = SignalQueries(
            self.queries, self.store, signals, self.book,
            exchanges=["sim", "kraken"], symbols=["BTC/USDT", "ETH/USDT"],
            intervals=["1m", "1h"], clock=lambda: NOW,
        )  # fmt: skip
        # What create_app(..., signals=signals_router(...)) does once wired.
        self.app.include_router(signals_router(self.signal_queries))


@pytest.fixture
async def h(tmp_path: Path) -> AsyncIterator[SignalHarness]:
    url = f"sqlite+aiosqlite:///{tmp_path / 's.db'}"
    await asyncio.to_thread(migrate.upgrade, url)
    engine = create_engine(url)
    harness = SignalHarness()
    harness.attach(SqlSignalStore(engine))
    await harness.store.upsert_candles(SERIES)
    yield harness
    await harness.signals.close()
    await engine.dispose()


def assert_problem(r: httpx.Response, status: int, code: str, name: str | None) -> dict[str, Any]:
    assert r.status_code == status, r.text
    assert r.headers["content-type"] == PROBLEM
    body: dict[str, Any] = r.json()
    assert body["type"] == f"https://cryptodesk.dev/problems/{code}"
    if name is not None:
        assert [e["name"] for e in body["errors"]] == [name]
    return body


# ---- rules ----------------------------------------------------------------------------

GOLDEN_DEFAULTS = {
    "id": "g", "type": "ma_cross", "exchanges": [], "symbols": ["BTC/USDT"], "intervals": [],
    "fast": 50, "slow": 200,
}  # fmt: skip


async def test_rules_come_from_the_settings_until_put(h: SignalHarness) -> None:
    async with h.client() as client:
        r = await client.get("/api/v1/signal-rules")
        assert r.status_code == 200
        assert r.json() == {
            "source": "settings", "revision": None, "updated_at": None, "rules": [GOLDEN_DEFAULTS]
        }  # fmt: skip
        body = {
            "rules": [
                {"id": "btc-rsi", "type": "rsi_levels", "symbols": ["btc-usdt"],
                 "intervals": ["1h"], "upper": 80},
                {"id": "bb", "type": "bb_break"},
            ]
        }  # fmt: skip
        put = await client.put("/api/v1/signal-rules", json=body)
        again = await client.get("/api/v1/signal-rules")
        second = await client.put("/api/v1/signal-rules", json={"rules": []})
    assert put.status_code == 200
    assert put.json() == again.json() == {
        "source": "database", "revision": 1, "updated_at": "2024-05-01T00:10:00.000Z",
        "rules": [
            {"id": "btc-rsi", "type": "rsi_levels", "exchanges": [], "symbols": ["BTC/USDT"],
             "intervals": ["1h"], "period": 14, "upper": 80.0, "lower": 30.0},
            {"id": "bb", "type": "bb_break", "exchanges": [], "symbols": [], "intervals": [],
             "period": 20, "k": 2.0},
        ],
    }  # fmt: skip
    assert second.json()["revision"] == 2
    assert second.json()["rules"] == []
    assert (await h.book.current()).rules == []


@pytest.mark.parametrize(
    ("rule", "name", "reason"),
    [
        ({"id": "x", "type": "ma_cross", "fast": 200, "slow": 50}, "rules.0.ma_cross",
         "fast (200) must be below slow (50)"),
        ({"id": "x", "type": "rsi_levels", "upper": 20}, "rules.0.rsi_levels",
         "0 < lower < upper < 100"),
        ({"id": "x", "type": "ma_cross", "fast": 0}, "rules.0.ma_cross.fast", "greater than"),
        ({"id": "x", "type": "breakout"}, "rules.0", "breakout"),
        ({"id": "has space", "type": "ma_cross"}, "rules.0.ma_cross.id", "pattern"),
        ({"id": "x", "type": "ma_cross", "speed": 3}, "rules.0.ma_cross.speed", "not permitted"),
        ({"id": "x", "type": "ma_cross", "intervals": ["7m"]}, "rules.0.ma_cross.intervals",
         "unknown interval"),
        ({"id": "x", "type": "ma_cross", "symbols": ["DOGE/USDT"]}, "rules.0.symbols",
         "'DOGE/USDT' is not served here"),
        ({"id": "x", "type": "ma_cross", "intervals": ["4h"]}, "rules.0.intervals",
         "'4h' is not served here"),
    ],
)  # fmt: skip
async def test_a_bad_rule_is_a_400_naming_it_and_stores_nothing(
    h: SignalHarness, rule: dict[str, Any], name: str, reason: str
) -> None:
    async with h.client() as client:
        r = await client.put("/api/v1/signal-rules", json={"rules": [rule]})
        after = await client.get("/api/v1/signal-rules")
    # The rule models refuse most (422); what the server serves is checked after (400).
    if "not served here" in reason:
        body = assert_problem(r, 400, "invalid-parameter", name)
    else:
        body = assert_problem(r, 422, "invalid-body", name)
    assert reason in body["errors"][0]["reason"]
    assert after.json()["source"] == "settings"


async def test_duplicate_rule_ids_are_refused(h: SignalHarness) -> None:
    rules = [{"id": "x", "type": "ma_cross"}, {"id": "x", "type": "bb_break"}]
    async with h.client() as client:
        r = await client.put("/api/v1/signal-rules", json={"rules": rules})
    body = assert_problem(r, 422, "invalid-body", "rules")
    assert "rule id 'x' is used twice" in body["errors"][0]["reason"]


# ---- signals --------------------------------------------------------------------------


def sig(rule: str, i: int, symbol: str = "BTC/USDT", kind: str = "golden_cross") -> Signal:
    return Signal(rule, kind, "sim", symbol, "1m", T0 + i * MINUTE, 100.25,
                  {"sma_3": 100.5, "sma_5": 100.0}, T0 + i * MINUTE + 61_000)  # fmt: skip


async def seed(h: SignalHarness) -> None:
    for symbol in ("BTC/USDT", "ETH/USDT"):
        after = None
        for i in range(5):
            fired = [sig("a", i, symbol, "death_cross"), sig("b", i, symbol)]
            assert await h.signals.commit(("sim", symbol, "1m"), T0 + i * MINUTE, after=after,
                                          fired=fired)  # fmt: skip
            after = T0 + i * MINUTE


def keys(body: dict[str, Any]) -> list[tuple[str, str, int]]:
    return [(s["symbol"], s["rule"], s["open_time_ms"]) for s in body["signals"]]


async def test_signals_payload(h: SignalHarness) -> None:
    await seed(h)
    async with h.client() as client:
        r = await client.get("/api/v1/signals", params={"symbol": "BTC-USDT", "rule": "b",
                                                        "limit": 1})  # fmt: skip
    assert r.status_code == 200
    assert r.json() == {
        "signals": [
            {"rule": "b", "kind": "golden_cross", "exchange": "sim", "symbol": "BTC/USDT",
             "interval": "1m", "open_time": "2024-05-01T00:04:00.000Z",
             "open_time_ms": T0 + 4 * MINUTE, "close": "100.25",
             "values": {"sma_3": 100.5, "sma_5": 100.0},
             "detected_at": "2024-05-01T00:05:01.000Z"},
        ],
        "next_cursor": r.json()["next_cursor"],
    }  # fmt: skip
    assert r.json()["next_cursor"] is not None


async def test_signal_pages_walk_back_and_forward(h: SignalHarness) -> None:
    await seed(h)
    everything = sorted(
        ((s, r, T0 + i * MINUTE) for s in ("BTC/USDT", "ETH/USDT") for r in "ab" for i in range(5)),
        key=lambda k: (k[2], k[0], k[1]),
    )
    async with h.client() as client:
        backward: list[tuple[str, str, int]] = []
        params: dict[str, Any] = {"limit": 3}
        while True:
            body = (await client.get("/api/v1/signals", params=params)).json()
            backward = keys(body) + backward
            if body["next_cursor"] is None:
                break
            params["cursor"] = body["next_cursor"]
        forward: list[tuple[str, str, int]] = []
        params = {"limit": 4, "start": str(T0 + MINUTE), "kind": "golden_cross"}
        while True:
            body = (await client.get("/api/v1/signals", params=params)).json()
            forward += keys(body)
            if body["next_cursor"] is None:
                break
            params["cursor"] = body["next_cursor"]
    assert backward == everything
    assert forward == [k for k in everything if k[1] == "b" and k[2] >= T0 + MINUTE]


@pytest.mark.parametrize(
    ("params", "status", "code", "name"),
    [
        ({"kind": "moon"}, 400, "invalid-parameter", "kind"),
        ({"rule": "no spaces"}, 400, "invalid-parameter", "rule"),
        ({"exchange": "nowhere"}, 404, "unknown-exchange", "exchange"),
        ({"interval": "4h"}, 400, "unknown-interval", "interval"),
        ({"start": "yesterday"}, 400, "invalid-parameter", "start"),
        ({"start": str(T0 + 5), "end": str(T0)}, 400, "invalid-parameter", "end"),
        ({"limit": 0}, 400, "invalid-parameter", "limit"),
        ({"cursor": "bm9wZQ"}, 400, "invalid-cursor", "cursor"),
    ],
)
async def test_bad_signal_queries_name_the_parameter(
    h: SignalHarness, params: dict[str, Any], status: int, code: str, name: str
) -> None:
    async with h.client() as client:
        r = await client.get("/api/v1/signals", params=params)
    assert_problem(r, status, code, name)


async def test_a_cursor_only_continues_its_own_query(h: SignalHarness) -> None:
    await seed(h)
    async with h.client() as client:
        first = (await client.get("/api/v1/signals", params={"limit": 2, "rule": "a"})).json()
        params = {"rule": "b", "cursor": first["next_cursor"]}
        r = await client.get("/api/v1/signals", params=params)
    assert_problem(r, 400, "invalid-cursor", "cursor")


# ---- indicators -----------------------------------------------------------------------


async def test_indicators_are_the_newest_values_over_enough_candles(h: SignalHarness) -> None:
    async with h.client() as client:
        r = await client.get(
            "/api/v1/indicators",
            params={"exchange": "sim", "symbol": "BTC/USDT", "interval": "1m",
                    "names": "sma:3, rsi:14,bbands:4:2"},
        )  # fmt: skip
    assert r.status_code == 200, r.text
    body = r.json()
    closes = [c.close for c in SERIES]
    assert closes[-4:] == [249.75, 250.0, 250.25, 250.5]
    assert body["indicators"] == ["sma:3", "rsi:14", "bbands:4:2"]
    assert body["open_time_ms"] == SERIES[-1].open_time
    assert body["close"] == "250.5"
    assert body["candles"] == 14 * 30 + 1  # RSI's window; the store holds more
    values = body["values"]
    assert values["sma_3"] == 250.25
    assert values["rsi_14"] == 100.0  # only gains
    assert values["bbands_middle_4_2"] == 250.125


async def test_warming_values_are_null(h: SignalHarness) -> None:
    await h.store.upsert_candles([make_candle(i, interval="1h", step=3_600_000) for i in range(3)])
    async with h.client() as client:
        r = await client.get(
            "/api/v1/indicators",
            params={"exchange": "sim", "symbol": "BTC/USDT", "interval": "1h",
                    "names": "sma:3,sma:5"},
        )  # fmt: skip
    assert r.json()["values"] == {"sma_3": 101.0, "sma_5": None}
    assert r.json()["candles"] == 3


@pytest.mark.parametrize(
    ("names", "reason"),
    [
        ("rsi:x", "'rsi:x'"),
        ("foo:3", "unknown indicator 'foo'"),
        ("sma:3,,ema:2", "empty item"),
        ("sma:0", "'sma:0'"),
    ],
)
async def test_bad_indicator_names_are_a_400_naming_the_item(
    h: SignalHarness, names: str, reason: str
) -> None:
    async with h.client() as client:
        r = await client.get(
            "/api/v1/indicators",
            params={"exchange": "sim", "symbol": "BTC/USDT", "interval": "1m", "names": names},
        )
    body = assert_problem(r, 400, "invalid-parameter", "names")
    assert reason in body["detail"]


async def test_indicators_of_a_series_with_no_candles_are_a_404(h: SignalHarness) -> None:
    async with h.client() as client:
        r = await client.get(
            "/api/v1/indicators",
            params={"exchange": "sim", "symbol": "ETH/USDT", "interval": "1m", "names": "rsi:14"},
        )
    assert_problem(r, 404, "no-data", None)
