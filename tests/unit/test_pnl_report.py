"""The daily PnL report builder: a worked day with trades, a transfer, income and fees."""

from __future__ import annotations

from datetime import date
from decimal import Decimal as D

from cryptodesk.portfolio import pnl_report
from cryptodesk.portfolio.performance import Flow
from cryptodesk.portfolio.tax_lots import CostBasisResult, DisposalLine, Holding, IncomeLine

DAY = 86_400_000
T0 = 1_717_200_000_000  # 2024-06-01T00:00:00Z
D1 = T0 + DAY  # the reported day, 2024-06-02
HOUR = 3_600_000


def sale(account: str, asset: str, gain: str, when: int) -> DisposalLine:
    return DisposalLine("s", asset, D("0.5"), T0 - DAY, when, D(0), D(0), D(gain), "short",
                        "lot", account, "sell")  # fmt: skip


OPENING = CostBasisResult("fifo", "USD", True, holdings=[
    Holding("BTC", D(1), D(30000), "bin"),
    Holding("ETH", D(10), D(20000), "bin"),
    Holding("SOL", D(5), D(500), "cold"),
])  # fmt: skip
CLOSING = CostBasisResult(
    "fifo", "USD", True,
    holdings=[
        Holding("BTC", D("0.5"), D(15000), "bin"),
        Holding("ETH", D(12), D(26200), "bin"),
        Holding("SOL", D(5), D(500), "bin"),
        Holding("BTC", D("0.01"), D(650), "cold"),
    ],
    disposals=[sale("bin", "BTC", "999", T0 + HOUR), sale("bin", "BTC", "17990", D1 + HOUR)],
    income=[
        IncomeLine("st0", "BTC", D("0.01"), T0, D(600), "staking", "cold"),
        IncomeLine("st1", "BTC", D("0.01"), D1 + 2 * HOUR, D(650), "staking", "cold"),
    ],
    warnings=["fee f has no value"],
)  # fmt: skip
OPEN = {"BTC": D(60000), "ETH": D(3000), "SOL": D(150)}
CLOSE = {"BTC": D(66000), "ETH": D(3100), "SOL": D(160)}


def flows(sol: D | None = D(800)) -> list[Flow]:
    out = None if sol is None else -sol
    return [
        Flow(D1 + HOUR, "bin", "BTC", D(-33000), "sell", False),
        Flow(D1 + HOUR, "bin", "BTC", D(10), "sell", False),  # its USD fee
        Flow(D1 + 2 * HOUR, "bin", "ETH", D(6200), "buy", False),
        Flow(D1 + 3 * HOUR, "cold", "SOL", out, "move", True),
        Flow(D1 + 3 * HOUR, "bin", "SOL", sol, "move", True),
    ]


def build(close: dict[str, D | None] | None = None, sol: D | None = D(800)) -> pnl_report.PnlReport:
    return pnl_report.build(
        "acme", date(2024, 6, 2), opening=OPENING, closing=CLOSING, open_prices=OPEN,
        close_prices=CLOSE if close is None else close, day_flows=flows(sol),
    )  # fmt: skip


def test_worked_day() -> None:
    r = build()
    got = [(x.account, x.asset, x.amount, x.market_value, x.day_pnl, x.realized, x.income,
            x.unrealized) for x in r.rows]  # fmt: skip
    assert got == [
        # Held 1 BTC at 60000, sold 0.5 at 66000 less a 10 USD fee, 0.5 left at 66000.
        ("bin", "BTC", D("0.5"), D(33000), D(5990), D(17990), D(0), D(18000)),
        # 10 ETH up 100 each; 2 bought at the close price add nothing.
        ("bin", "ETH", D(12), D(37200), D(1000), D(0), D(0), D(11000)),
        # SOL arrived by transfer at the close price: no PnL on this side ...
        ("bin", "SOL", D(5), D(800), D(0), D(0), D(0), D(300)),
        # ... the 10-dollar rise of the 5 SOL belongs to the account that held them.
        ("cold", "BTC", D("0.01"), D(660), D(660), D(0), D(650), D(10)),
        ("cold", "SOL", D(0), D(0), D(50), D(0), D(0), D(0)),
    ]
    assert [x.price for x in r.rows] == [D(66000), D(3100), D(160), D(66000), D(160)]
    # Total: 71660 at the close, 90750 at the open, 26790 taken out net: 7700.
    assert r.total == pnl_report.PnlTotal(
        market_value=D(71660), day_pnl=D(7700), realized=D(17990), income=D(650),
        unrealized=D(29310), complete=True,
    )  # fmt: skip
    assert r.missing_prices == []
    assert r.notes == ["fee f has no value"]


def test_missing_close_price_leaves_figures_unknown() -> None:
    r = build({**CLOSE, "SOL": None}, sol=None)
    rows = {(x.account, x.asset): x for x in r.rows}
    bin_sol, cold_sol = rows[("bin", "SOL")], rows[("cold", "SOL")]
    assert (bin_sol.price, bin_sol.market_value, bin_sol.day_pnl, bin_sol.unrealized) == (None,) * 4
    assert (cold_sol.market_value, cold_sol.day_pnl) == (D(0), None)  # nothing left; flow unknown
    assert r.missing_prices == [pnl_report.MissingPrice("SOL", date(2024, 6, 2))]
    assert r.total.complete is False
    assert r.total.day_pnl == D(5990 + 1000 + 660)
    assert r.notes[-1] == "flows without a value (no price): move"


def test_missing_opening_price_is_reported_on_its_day() -> None:
    r = pnl_report.build(
        "acme", date(2024, 6, 2), opening=OPENING, closing=OPENING, open_prices={},
        close_prices=CLOSE, day_flows=[],
    )  # fmt: skip
    assert [(m.asset, m.day) for m in r.missing_prices] == [
        ("BTC", date(2024, 6, 1)), ("ETH", date(2024, 6, 1)), ("SOL", date(2024, 6, 1)),
    ]  # fmt: skip
    assert all(x.day_pnl is None and x.market_value is not None for x in r.rows)


def test_universal_results_report_per_asset() -> None:
    pooled = [
        CostBasisResult("uk", "USD", False, holdings=[Holding("SOL", D(5), D(500))]),
        CostBasisResult("uk", "USD", False, holdings=[Holding("SOL", D(5), D(500))]),
    ]
    r = pnl_report.build(
        "acme", date(2024, 6, 2), opening=pooled[0], closing=pooled[1], open_prices=OPEN,
        close_prices=CLOSE, day_flows=flows()[3:],  # the transfer nets out within the asset
    )  # fmt: skip
    assert [(x.account, x.asset, x.day_pnl) for x in r.rows] == [("*", "SOL", D(50))]


def test_table_and_summary() -> None:
    r = build()
    rows = pnl_report.table(r)
    assert rows[0] == list(pnl_report.COLUMNS)
    assert rows[1] == ["bin", "BTC", D("0.5"), D(66000), D(33000), D(5990), D(17990), D(0),
                       D(18000)]  # fmt: skip
    assert rows[-1] == ["TOTAL", "", None, None, D(71660), D(7700), D(17990), D(650), D(29310)]
    assert pnl_report.summary_lines(r) == [
        "Tenant acme, 2024-06-02 (UTC), values in USD, cost basis fifo.",
        "fee f has no value",
    ]
    incomplete = pnl_report.summary_lines(build({**CLOSE, "SOL": None}, sol=None))
    assert incomplete[1:3] == [
        "Incomplete: the totals leave out positions whose figures are unknown.",
        "Price missing: SOL at the close of 2024-06-02",
    ]
