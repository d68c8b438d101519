"""Flows, time- and money-weighted returns: textbook answers, edge cases, the service.

Known answers are the standard CFA Level I examples of "Calculate and compare
the money-weighted and time-weighted rates of return" (Kaplan Schweser notes;
discussed at https://www.analystforum.com/t/question/13698 and
http://forum.theanalystspace.com/viewthread.php?tid=104359):

- A: buy one share at $100 (t=0), a second at $120 (t=1), sell both at $130
  (t=2), $2 dividend per share at the end of each year, paid out.
  MWR 13.86 %, TWR [(1.22)(1.10)]^(1/2) - 1 = 15.84 % a year.
- B: buy four shares at $50, sell two at $50 at t=1, $5 dividend per share and
  sale of the other two at $80 at t=2. MWR 20.52 %, TWR
  [(1.00)(1.70)]^(1/2) - 1 = 30.38 % a year.
- C: one share at $100, three more at $89 (t=1, $1 dividend on the first),
  four sold at $98 with $1 dividends (t=2): MWR 6.35 %
  (https://www.analystforum.com/t/money-weighted-return/126285).

In portfolio terms a paid-out dividend is a withdrawal at the start of the
next period and a purchase a contribution, so each period's value is the
holding plus the dividend it just paid.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import AsyncIterator
from datetime import date
from decimal import Decimal as D
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cryptodesk.adapters.db import migrate
from cryptodesk.adapters.db.engine import create_engine
from cryptodesk.adapters.db.snapshot_store import SqlSnapshotStore
from cryptodesk.adapters.db.sql_store import SqlMarketStore
from cryptodesk.domain.errors import DomainError
from cryptodesk.domain.market import Candle
from cryptodesk.portfolio import performance as perf
from cryptodesk.portfolio.ledger import LedgerEntry
from cryptodesk.services.portfolio_valuation import ClosePrices, LivePrices, PortfolioValuation

DAY = 86_400_000
T0 = 1_717_200_000_000  # 2024-06-01T00:00:00Z
YEAR = 365 * DAY


def root(a: float, b: float, c: float) -> float:
    """The positive root of a x^2 + b x + c: growth factor of a two-period IRR."""
    return (-b + math.sqrt(b * b - 4 * a * c)) / (2 * a)


# ---- time-weighted ---------------------------------------------------------------------------


def test_twr_example_a() -> None:
    twr = perf.time_weighted(D(100), [(D(0), D(122)), (D(118), D(264))])
    assert twr == perf.Rate(D("0.342"))
    assert perf.annualize(D("0.342"), 730) == D("0.1584472366")  # 15.84 %: sqrt(1.342) - 1


def test_twr_example_b() -> None:
    twr = perf.time_weighted(D(200), [(D(0), D(200)), (D(-100), D(170))])
    assert twr.value == D("0.7")
    assert perf.annualize(D("0.7"), 730) == D("0.3038404810")  # 30.38 %: sqrt(1.7) - 1


def test_twr_skips_empty_periods_and_refuses_undefined_ones() -> None:
    # Nothing held on day 1; a deposit of 50 at the start of day 2 grows to 55.
    assert perf.time_weighted(D(0), [(D(0), D(0)), (D(50), D(55))]).value == D("0.1")
    undefined = perf.time_weighted(D(0), [(D(0), D(10))])
    assert undefined.value is None
    assert undefined.note == "period 1 starts with no capital (0) but ends at 10"
    assert perf.annualize(D(-1), 400) is None


# ---- money-weighted --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("flows", "textbook", "a", "b", "c"),
    [
        ([-100, -118, 264], "0.1386", 100, 118, -264),  # A
        ([-200, 100, 170], "0.2052", 200, -100, -170),  # B
        ([-100, -266, 396], "0.0635", 100, 266, -396),  # C
    ],
)
def test_mwr_textbook_examples(flows: list[int], textbook: str, a: int, b: int, c: int) -> None:
    rate = perf.internal_rate([(T0 + i * YEAR, D(f)) for i, f in enumerate(flows)])
    assert rate.value is not None
    assert rate.value.quantize(D("0.0001")) == D(textbook)
    assert float(rate.value) == pytest.approx(root(a, b, c) - 1, abs=1e-9)


def test_mwr_is_none_without_a_root() -> None:
    same_sign = perf.internal_rate([(T0, D(-100)), (T0 + YEAR, D(-50))])
    assert same_sign == perf.Rate(None, "the cash flows never change sign: "
                                        "no rate of return solves them")  # fmt: skip
    # A thousandfold in a day is beyond the searched range of daily rates.
    wild = perf.internal_rate([(T0, D(-1)), (T0 + DAY, D(1000))])
    assert wild.value is None
    assert wild.note is not None
    assert "no rate of return between" in wild.note
    assert perf.internal_rate([]).value is None


def test_mwr_over_days_is_annualised_with_365() -> None:
    # +1 % over 73 days: (1.01) ** (365 / 73) - 1
    rate = perf.internal_rate([(T0, D(-100)), (T0 + 73 * DAY, D(101))])
    assert float(rate.value or 0) == pytest.approx(1.01**5 - 1, abs=1e-9)


# ---- flows -----------------------------------------------------------------------------------


def e(
    id: str, day: int, kind: str, account: str, asset: str, amount: str, **kw: object
) -> LedgerEntry:
    for key in ("counter_amount", "fee_amount", "value", "fee_value"):
        if key in kw:
            kw[key] = D(str(kw[key]))
    return LedgerEntry(id, T0 + day * DAY, kind, account, asset, D(amount), **kw)  # type: ignore[arg-type]


LEDGER = [
    e("buy", 0, "buy", "bin", "BTC", "1", counter_asset="USD", counter_amount=100,
      fee_asset="USD", fee_amount=1),
    e("swap", 0, "sell", "bin", "BTC", "0.5", counter_asset="ETH", counter_amount=10, value=60),
    e("dep", 1, "deposit", "cold", "SOL", "2", value=30),
    e("dep2", 1, "deposit", "cold", "SOL", "1"),
    e("move", 1, "transfer", "bin", "ETH", "4", to_account="cold"),
    e("stake", 1, "income", "cold", "SOL", "0.1", subkind="staking", value=2),
    e("fee", 1, "fee", "bin", "BTC", "0.001", value=0.1),
    e("sell", 2, "sell", "bin", "BTC", "0.4", counter_asset="USD", counter_amount=50,
      fee_asset="USD", fee_amount=0.5),
    e("out", 2, "withdrawal", "cold", "ETH", "1"),
    e("pay", 2, "spend", "cold", "SOL", "1", value=16),
    e("usd", 2, "deposit", "bank", "USD", "1000"),
    e("oops", 2, "deposit", "cold", "SOL", "9", value=1),
    e("undo", 2, "deposit", "cold", "SOL", "9", value=1, reverses="oops"),
]  # fmt: skip


def price(asset: str, ts: int) -> D | None:
    return {"SOL": D(15), "ETH": D(6)}.get(asset) if ts < T0 + 2 * DAY else None


def test_flows_of_every_kind() -> None:
    found = [(f.entry_id, f.account, f.asset, f.amount, f.internal)
             for f in perf.flows(LEDGER, "USD", price=price)]  # fmt: skip
    assert found == [
        ("buy", "bin", "BTC", D(100), False),
        ("buy", "bin", "BTC", D(1), False),  # the USD fee: paid in from outside
        ("swap", "bin", "ETH", D(60), True),
        ("swap", "bin", "BTC", D(-60), True),
        ("dep", "cold", "SOL", D(30), False),
        ("dep2", "cold", "SOL", D(15), False),  # no value: valued at the price given
        ("move", "bin", "ETH", D(-24), True),
        ("move", "cold", "ETH", D(24), True),
        ("sell", "bin", "BTC", D(-50), False),
        ("sell", "bin", "BTC", D("0.5"), False),
        ("out", "cold", "ETH", None, False),  # no value and no price: unvalued
        ("pay", "cold", "SOL", D(-16), False),
    ]
    window = perf.flows(LEDGER, "USD", start=T0 + DAY, end=T0 + 2 * DAY, price=price)
    assert [f.entry_id for f in window] == ["dep", "dep2", "move", "move"]


def test_daily_net_flows_leave_out_internal_moves() -> None:
    per_day, unvalued = perf.daily_net_flows(perf.flows(LEDGER, "USD", price=price))
    assert per_day == {date(2024, 6, 1): D(101), date(2024, 6, 2): D(45),
                       date(2024, 6, 3): D("-65.5")}  # fmt: skip
    assert [f.entry_id for f in unvalued] == ["out"]


def test_period_returns_link_days_and_skip_unknown_ones() -> None:
    d = [date(2024, 6, i) for i in range(1, 6)]
    values = {d[0]: D(100), d[1]: D(110), d[2]: None, d[3]: D(250), d[4]: D(240)}
    flows = {d[0]: D(999), d[2]: D(100), d[3]: D(20)}  # d0's flow is inside its close
    p = perf.period_returns(values, flows, d[0], d[4])
    # d2 is unknown: its flow joins d3's at the start of the d2..d3 period.
    # 110/100 * 250/(110+120) * 240/250
    expected = D(110) / 100 * (D(250) / 230) * (D(240) / 250) - 1
    assert p.twr.value == expected.quantize(perf.RETURN_STEP)
    assert (p.days, p.start_value, p.end_value, p.net_flows) == (4, D(100), D(240), D(120))
    assert p.twr_annualized is None  # under a year: not annualised
    assert (
        p.notes[0] == "no complete value at the close of 2024-06-03: its flows move to the next day"
    )
    assert p.mwr.value is not None
    missing = perf.period_returns({d[0]: D(1)}, {}, d[0], d[1])
    assert (missing.twr.value, missing.mwr.value) == (None, None)
    assert missing.notes == ("no complete portfolio value at the close of 2024-06-02",)
    with pytest.raises(DomainError, match="must be after start"):
        perf.period_returns(values, flows, d[1], d[1])
    assert perf.to_dict(p)["twr"] == str(expected.quantize(perf.RETURN_STEP))


# ---- the service: snapshots from stored closes, then returns ----------------------------------


@pytest.fixture
async def stores(tmp_path: Path) -> AsyncIterator[tuple[SqlMarketStore, SqlSnapshotStore]]:
    url = f"sqlite+aiosqlite:///{tmp_path / 'p.db'}"
    await asyncio.to_thread(migrate.upgrade, url)
    market = SqlMarketStore(create_engine(url))
    yield market, SqlSnapshotStore(create_engine(url), clock=lambda: T0)
    await market.close()


def daily(day: int, close: float) -> Candle:
    return Candle("binance", "BTC/USDT", "1d", T0 + day * DAY, close, close, close, close, 1.0,
                  trades=1, closed=True)  # fmt: skip


async def test_service_performance_from_snapshots_and_ledger(
    stores: tuple[SqlMarketStore, SqlSnapshotStore],
) -> None:
    market, snapshots = stores
    await market.upsert_candles([daily(0, 100.0), daily(1, 110.0), daily(2, 121.0)])
    entries = [
        e("b", 0, "buy", "bin", "BTC", "1", counter_asset="USD", counter_amount=90),
        e("d", 2, "deposit", "cold", "BTC", "1"),  # no value: the stored close of its day
    ]

    async def source(_tenant: str) -> list[LedgerEntry]:
        return entries

    closes = ClosePrices(market, exchanges=["binance"], currency="USD")
    live = LivePrices(None, exchanges=[], currency="USD")  # type: ignore[arg-type]
    service = PortfolioValuation(source, live, closes, snapshots, currency="USD", method="fifo")
    for i in range(3):
        await service.record_snapshot("acme", date(2024, 6, 1 + i))
    rows = await snapshots.day("acme", "2024-06-03")
    assert [(r.account, r.amount, r.price, r.market_value) for r in rows] == [
        ("bin", D(1), D("121.0"), D("121.0")), ("cold", D(1), D("121.0"), D("121.0")),
    ]  # fmt: skip
    p = await service.performance("acme", date(2024, 6, 1), date(2024, 6, 3))
    assert (p.start_value, p.end_value, p.net_flows) == (D("100.0"), D("242.0"), D("121.0"))
    assert p.twr.value == (D("1.1") * D(242) / D(231) - 1).quantize(perf.RETURN_STEP)
    growth = root(100, 121, -242)  # 100 x^2 + 121 x = 242, x a day's growth
    assert float(p.mwr.value or 0) == pytest.approx(growth**365 - 1, rel=1e-9)
    assert p.notes == ()


# ---- property: internal flows cancel, so per-position PnL adds up to the total ----------------

ASSETS = ("BTC", "ETH", "USD")
ACCOUNTS = ("a", "b")


@st.composite
def entries(draw: st.DrawFn) -> list[LedgerEntry]:
    out: list[LedgerEntry] = []
    amounts = st.decimals(min_value=D("0.001"), max_value=D(1000), places=3)
    for i in range(draw(st.integers(1, 12))):
        kind = draw(st.sampled_from(["buy", "sell", "transfer", "deposit", "withdrawal"]))
        account = draw(st.sampled_from(ACCOUNTS))
        asset = draw(st.sampled_from(ASSETS[:2]))
        kw: dict[str, object] = {}
        if kind in ("buy", "sell"):
            kw["counter_asset"] = draw(st.sampled_from([a for a in ASSETS if a != asset]))
            kw["counter_amount"] = draw(amounts)
            kw["value"] = draw(amounts)
            if draw(st.booleans()):
                kw["fee_asset"], kw["fee_amount"] = "USD", draw(amounts)
        elif kind == "transfer":
            kw["to_account"] = "b" if account == "a" else "a"
        amount = draw(amounts)
        out.append(LedgerEntry(f"e{i}", T0 + i * 1000, kind, account, asset, amount, **kw))  # type: ignore[arg-type]
    return out


@settings(max_examples=200, deadline=None)
@given(entries())
def test_internal_flows_cancel_and_every_flow_is_valued(ledger: list[LedgerEntry]) -> None:
    found = perf.flows(ledger, "USD", price=lambda _a, _t: D("2.5"))
    assert all(f.amount is not None and f.asset != "USD" for f in found)
    for entry in ledger:
        internal = [f.amount for f in found if f.entry_id == entry.id and f.internal]
        assert sum((a for a in internal if a is not None), D(0)) == 0
    per_day, unvalued = perf.daily_net_flows(found)
    assert unvalued == []
    external = sum((f.amount for f in found if not f.internal and f.amount is not None), D(0))
    assert sum(per_day.values(), D(0)) == external
