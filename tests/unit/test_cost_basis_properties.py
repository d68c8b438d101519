"""Properties of every cost basis method over random valid ledgers.

Ledgers mix buys, sells (sometimes of more than is held), crypto-to-crypto
trades, transfers with network fees, deposits, withdrawals, income, spends and
fees over two assets and two accounts, with equal timestamps and gaps long
enough to cross the long-term boundary.
"""

from collections import defaultdict
from decimal import Context, Decimal, localcontext

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cryptodesk.portfolio.cost_basis import compute
from cryptodesk.portfolio.ledger import LedgerEntry
from cryptodesk.portfolio.tax_events import Acquire, Dispose, to_events
from cryptodesk.portfolio.tax_lots import CostBasisResult

T0 = 1_704_067_200_000  # 2024-01-01
GAPS = (0, 3_600_000, 200 * 86_400_000)
ASSETS = ("BTC", "ETH")
ACCOUNTS = ("a", "b")
KINDS = ("buy", "buy", "sell", "swap", "transfer", "deposit", "withdrawal", "income", "spend",
         "fee")  # fmt: skip
WIDE = Context(prec=200)  # the test's own sums must not round

op = st.tuples(
    st.sampled_from(KINDS),
    st.integers(0, 1),  # asset
    st.integers(0, 1),  # account
    st.integers(1, 300_000_000),  # amount, 1e-8 units
    st.integers(1, 5_000_000),  # value, cents
    st.sampled_from(GAPS),
    st.integers(0, 2),  # fee: none, in USD, in the asset
)


def build(ops: list[tuple[str, int, int, int, int, int, int]]) -> list[LedgerEntry]:
    entries: list[LedgerEntry] = []
    ts = T0
    for i, (kind, a, acc, units, cents, gap, fee) in enumerate(ops):
        ts += gap
        asset, account = ASSETS[a], ACCOUNTS[acc]
        amount = Decimal(units).scaleb(-8)
        value = Decimal(cents).scaleb(-2)
        eid = f"e{i}"
        usd_fee = {"fee_asset": "USD", "fee_amount": Decimal("0.5")} if fee == 1 else {}
        asset_fee: dict[str, object] = {}
        if fee == 2 and units >= 1000:
            asset_fee = {"fee_asset": asset, "fee_amount": Decimal(units // 1000).scaleb(-8),
                         "fee_value": Decimal("0.01")}  # fmt: skip
        if kind in ("buy", "sell"):
            extra = usd_fee or asset_fee
            entries.append(LedgerEntry(eid, ts, kind, account, asset, amount, "USD", value,
                                       **extra))  # type: ignore[arg-type]  # fmt: skip
        elif kind == "swap":
            entries.append(LedgerEntry(eid, ts, "buy", account, asset, amount, ASSETS[1 - a],
                                       amount / 3, value=value))  # fmt: skip
        elif kind == "transfer":
            entries.append(LedgerEntry(eid, ts, kind, account, asset, amount,
                                       to_account=ACCOUNTS[1 - acc], **asset_fee))  # type: ignore[arg-type]  # fmt: skip
        elif kind == "income":
            entries.append(LedgerEntry(eid, ts, kind, account, asset, amount, value=value,
                                       subkind="staking"))  # fmt: skip
        elif kind == "withdrawal":
            entries.append(LedgerEntry(eid, ts, kind, account, asset, amount))
        else:  # deposit, spend, fee
            entries.append(LedgerEntry(eid, ts, kind, account, asset, amount, value=value))
    return entries


ledgers = st.lists(op, min_size=1, max_size=40).map(build)
SETTINGS = settings(max_examples=150, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow])  # fmt: skip
QUANTITY_METHODS = ("fifo", "lifo", "hifo", "average", "specific")


def key(asset: str, account: str | None, per_wallet: bool) -> tuple[str, str | None]:
    return (asset, account if per_wallet else None)


def check_one(entries: list[LedgerEntry], r: CostBasisResult) -> None:
    events = to_events(entries, "USD").events
    acquired: dict[str, Decimal] = defaultdict(Decimal)
    cost_in = Decimal(0)
    proceeds_in = Decimal(0)
    disposed_in: dict[str, Decimal] = defaultdict(Decimal)
    for e in events:
        if isinstance(e, Acquire):
            acquired[e.asset] += e.amount
            cost_in += e.cost
        elif isinstance(e, Dispose):
            proceeds_in += e.proceeds
            disposed_in[e.entry_id] += e.amount
    lots: dict[tuple[str, str | None], list[Decimal]] = defaultdict(lambda: [Decimal(0)] * 2)
    for lot in r.lots:
        assert lot.amount > 0
        assert lot.cost_basis >= 0
        lots[key(lot.asset, lot.account, r.per_wallet)][0] += lot.amount
        lots[key(lot.asset, lot.account, r.per_wallet)][1] += lot.cost_basis
    # Lots add up to holdings, per asset (per account and asset per wallet).
    assert {key(h.asset, h.account, True): [h.amount, h.cost_basis] for h in r.holdings} == dict(
        lots
    )
    # Every line: gain == proceeds - cost basis.
    for line in r.disposals:
        assert line.gain == line.proceeds - line.cost_basis
        assert line.amount > 0
        assert line.cost_basis >= 0
    # Lines and missing acquisitions account for every disposal, amount and proceeds.
    disposed_out: dict[str, Decimal] = defaultdict(Decimal)
    for item in [*r.disposals, *r.missing_acquisitions]:
        disposed_out[item.disposal_id] += item.amount
    assert disposed_out == disposed_in
    proceeds_out = sum((x.proceeds for x in [*r.disposals, *r.missing_acquisitions]), Decimal(0))
    assert proceeds_out == proceeds_in
    # Quantity: held == acquired - disposed (matched) - removed, per asset.
    held: dict[str, Decimal] = defaultdict(Decimal)
    for h in r.holdings:
        held[h.asset] += h.amount
    for asset, amount in acquired.items():
        matched = sum((x.amount for x in r.disposals if x.asset == asset), Decimal(0))
        removed = sum((x.amount for x in r.removals if x.asset == asset), Decimal(0))
        assert held[asset] == amount - matched - removed
    # Cost: acquired == disposed + still open + removed.
    cost_out = (
        sum((x.cost_basis for x in r.disposals), Decimal(0))
        + sum((x.cost_basis for x in r.lots), Decimal(0))
        + sum((x.cost_basis for x in r.removals), Decimal(0))
    )
    assert cost_out == cost_in


def quantities(r: CostBasisResult) -> tuple[object, ...]:
    by_disposal: dict[str, Decimal] = defaultdict(Decimal)
    for line in r.disposals:
        by_disposal[line.disposal_id] += line.amount
    by_removal: dict[str, Decimal] = defaultdict(Decimal)
    for removed in r.removals:
        by_removal[removed.entry_id] += removed.amount
    return (
        [(h.asset, h.account, h.amount) for h in r.holdings],
        dict(by_disposal),
        [(m.disposal_id, m.amount) for m in r.missing_acquisitions],
        dict(by_removal),
    )


@SETTINGS
@given(ledgers, st.booleans())
def test_every_method_conserves_quantity_cost_and_proceeds(
    entries: list[LedgerEntry], per_wallet: bool
) -> None:
    with localcontext(WIDE):
        for method in QUANTITY_METHODS:
            check_one(entries, compute(entries, method=method, per_wallet=per_wallet))


@SETTINGS
@given(ledgers, st.booleans())
def test_the_method_changes_gains_never_quantities(
    entries: list[LedgerEntry], per_wallet: bool
) -> None:
    results = [compute(entries, method=m, per_wallet=per_wallet) for m in QUANTITY_METHODS]
    with localcontext(WIDE):
        first = quantities(results[0])
        for r in results[1:]:
            assert quantities(r) == first, r.method


@SETTINGS
@given(ledgers)
def test_universal_holdings_are_the_wallets_added_up_when_nothing_is_missing(
    entries: list[LedgerEntry],
) -> None:
    universal = compute(entries, method="fifo")
    wallets = compute(entries, method="fifo", per_wallet=True)
    if universal.missing_acquisitions or wallets.missing_acquisitions:
        return
    if universal.warnings or wallets.warnings:
        return
    added: dict[str, Decimal] = defaultdict(Decimal)
    with localcontext(WIDE):
        for h in wallets.holdings:
            added[h.asset] += h.amount
    assert {h.asset: h.amount for h in universal.holdings} == dict(added)


SMALL = build([
    ("buy", 0, 0, 150_000_000, 1_000_000, 0, 1),
    ("buy", 0, 0, 50_000_000, 3_000_000, 0, 2),
    ("sell", 0, 0, 120_000_000, 2_000_000, GAPS[2], 1),
    ("withdrawal", 0, 0, 10_000_000, 1, GAPS[1], 0),
])  # fmt: skip


def test_the_callers_decimal_context_changes_nothing() -> None:
    expected = compute(SMALL, method="fifo")
    with localcontext(Context(prec=6, rounding="ROUND_UP")):
        assert compute(SMALL, method="fifo") == expected


def test_the_garbage_collector_is_left_as_it_was() -> None:
    import gc

    assert gc.isenabled()
    compute(SMALL, method="hifo")
    assert gc.isenabled()
    gc.disable()
    try:
        compute(SMALL, method="hifo")
        assert not gc.isenabled()
    finally:
        gc.enable()


def test_result_records_are_ordinary_frozen_dataclasses() -> None:
    import dataclasses

    import pytest

    from cryptodesk.portfolio.tax_lots import DisposalLine, IncomeLine, RemovedLot

    r = compute([*SMALL, LedgerEntry("i", T0, "income", "a", "BTC", Decimal(1), value=Decimal(5),
                                     subkind="airdrop")], method="fifo")  # fmt: skip
    records = [r.disposals[0], r.removals[0], r.income[0]]
    assert [type(x) for x in records] == [DisposalLine, RemovedLot, IncomeLine]
    for record in records:
        copy = type(record)(**dataclasses.asdict(record))
        assert copy == record
        assert hash(copy) == hash(record)
        with pytest.raises(dataclasses.FrozenInstanceError):
            record.amount = Decimal(0)  # type: ignore[misc]


def test_overlapping_runs_in_threads_leave_the_collector_on() -> None:
    """Two requests computing at once: the one that started first finishing
    first must not switch the collector back on under the other, nor may the
    last one leave it off."""
    import gc
    import threading

    from cryptodesk.portfolio.cost_basis import _gc_paused

    inside, release = threading.Event(), threading.Event()

    def slow() -> None:
        with _gc_paused():
            inside.set()
            release.wait(10)

    worker = threading.Thread(target=slow)
    worker.start()
    assert inside.wait(10)
    compute(SMALL, method="fifo")  # starts and ends inside the other's pause
    assert not gc.isenabled()
    release.set()
    worker.join(10)
    assert gc.isenabled()
