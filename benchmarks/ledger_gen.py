"""A deterministic generator of realistic ledger entries for benchmarks.

``generate(n, seed=...)`` returns ``n`` validated ``LedgerEntry`` objects in
time order: buys and sells against USD, crypto-to-crypto trades, transfers
between own accounts (with a network fee in the moved asset), staking and
other income, deposits, withdrawals, spends, standalone fees and a few
reversals. It follows the holdings it creates, so a sell, transfer or
withdrawal stays within what the account holds, except for a small share
(``OVERSELL``) that deliberately disposes of more than is held, the way real
imports with a missing history do. Prices follow a random walk per asset;
timestamps rise by up to ``2 * MEAN_GAP_MS`` so 1,000,000 entries span about
five years (a mix of short- and long-term holdings).

    python -m benchmarks.ledger_gen 10  # prints ten entries
"""

from __future__ import annotations

import math
import random
import sys
from decimal import ROUND_DOWN, Decimal

from cryptodesk.portfolio.ledger import LedgerEntry

T0 = 1_546_300_800_000  # 2019-01-01T00:00:00Z
MEAN_GAP_MS = 157_680  # 1,000,000 entries ~ 5 years
ASSETS = ("BTC", "ETH", "SOL", "ADA")
START_PRICES = (3_800.0, 140.0, 2.0, 0.04)
EXCHANGES = ("binance", "coinbase", "kraken")
WALLET = "cold-wallet"
INCOME_SUBKINDS = ("staking", "interest", "airdrop", "mining")
# Kind weights, per 1,000 entries.
WEIGHTS = {
    "buy": 360, "sell": 280, "swap": 40, "transfer": 80, "income": 100,
    "deposit": 30, "withdrawal": 40, "spend": 40, "fee": 20, "reversal": 10,
}  # fmt: skip
OVERSELL = 0.005
_Q8 = Decimal("0.00000001")
_Q2 = Decimal("0.01")
_ZERO = Decimal(0)


def _d8(x: float) -> Decimal:
    return Decimal(f"{x:.8f}")


def _d2(x: float) -> Decimal:
    return Decimal(f"{x:.2f}")


class _Market:
    """Prices (USD per unit) on a multiplicative random walk, one per asset."""

    def __init__(self, rng: random.Random) -> None:
        self.rng = rng
        self.prices = list(START_PRICES)

    def step(self) -> None:
        gauss = self.rng.gauss
        self.prices = [p * math.exp(gauss(0.0, 0.002)) for p in self.prices]

    def price(self, i: int) -> float:
        return self.prices[i]


def generate(n: int, *, seed: int = 1, currency: str = "USD") -> list[LedgerEntry]:
    """``n`` entries in time order; the same ``n`` and ``seed`` give the same ledger."""
    rng = random.Random(seed)
    market = _Market(rng)
    held: dict[tuple[str, str], Decimal] = {}
    kinds = list(WEIGHTS)
    weights = list(WEIGHTS.values())
    out: list[LedgerEntry] = []
    reversed_ids: set[str] = set()
    ts = T0
    i = 0
    while len(out) < n:
        ts += rng.randint(1, 2 * MEAN_GAP_MS)
        if i % 16 == 0:
            market.step()
        i += 1
        kind = rng.choices(kinds, weights)[0]
        eid = f"e{len(out):07d}"
        a = rng.randrange(len(ASSETS))
        asset = ASSETS[a]
        price = market.price(a)
        account = rng.choice(EXCHANGES)
        have = held.get((account, asset), _ZERO)
        entry: LedgerEntry | None = None
        if kind == "buy" or (kind in ("sell", "withdrawal", "spend", "fee") and have <= _ZERO):
            usd = rng.uniform(20.0, 5_000.0)
            amount = _d8(usd / price)
            cost = _d2(usd)
            fee: tuple[str, Decimal] | None = None
            r = rng.random()
            if r < 0.7:
                fee = (currency, _d2(usd * 0.001) or _Q2)
            elif r < 0.9 and amount > _Q8 * 1000:
                fee = (asset, (amount * Decimal("0.001")).quantize(_Q8))
            entry = LedgerEntry(
                eid, ts, "buy", account, asset, amount, currency, cost,
                fee_asset=fee[0] if fee else None, fee_amount=fee[1] if fee else None,
            )  # fmt: skip
            received = amount - (fee[1] if fee and fee[0] == asset else _ZERO)
            held[(account, asset)] = have + received
        elif kind in ("sell", "withdrawal", "spend", "fee"):
            oversell = rng.random() < OVERSELL
            share = Decimal(str(round(rng.uniform(0.05, 1.0), 4)))
            amount = (have * share).quantize(_Q8, ROUND_DOWN)
            if oversell:
                amount = (have * Decimal("1.5")).quantize(_Q8, ROUND_DOWN)
            if amount <= _ZERO:
                continue
            value = _d2(float(amount) * price)
            if kind == "sell":
                if value <= _ZERO:
                    continue
                entry = LedgerEntry(
                    eid, ts, "sell", account, asset, amount, currency, value,
                    fee_asset=currency, fee_amount=_d2(float(value) * 0.001) or _Q2,
                )  # fmt: skip
            elif kind == "withdrawal":
                entry = LedgerEntry(eid, ts, "withdrawal", account, asset, amount)
            else:
                entry = LedgerEntry(eid, ts, kind, account, asset, amount, value=value)
            held[(account, asset)] = max(have - amount, _ZERO)
        elif kind == "swap":
            b = (a + 1 + rng.randrange(len(ASSETS) - 1)) % len(ASSETS)
            if have <= _ZERO:
                continue
            amount = (have * Decimal(str(round(rng.uniform(0.1, 0.9), 4)))).quantize(_Q8)
            if amount <= _ZERO:
                continue
            usd = float(amount) * price
            got = _d8(usd / market.price(b))
            if got <= _ZERO or _d2(usd) <= _ZERO:
                continue
            entry = LedgerEntry(
                eid, ts, "buy", account, ASSETS[b], got, asset, amount, value=_d2(usd)
            )
            held[(account, asset)] = have - amount
            key = (account, ASSETS[b])
            held[key] = held.get(key, _ZERO) + got
        elif kind == "transfer":
            to_account = rng.choice([x for x in (*EXCHANGES, WALLET) if x != account])
            if have <= _ZERO:
                continue
            if rng.random() < 0.3:  # from the wallet back to an exchange
                account, to_account = WALLET, account
                have = held.get((account, asset), _ZERO)
            fee_amount = (have * Decimal("0.0005")).quantize(_Q8, ROUND_DOWN)
            amount = (have * Decimal("0.5")).quantize(_Q8, ROUND_DOWN)
            if amount <= _ZERO or fee_amount <= _ZERO:
                continue
            entry = LedgerEntry(
                eid, ts, "transfer", account, asset, amount, to_account=to_account,
                fee_asset=asset, fee_amount=fee_amount,
                fee_value=_d2(float(fee_amount) * price) or _Q2,
            )  # fmt: skip
            held[(account, asset)] = have - amount - fee_amount
            key = (to_account, asset)
            held[key] = held.get(key, _ZERO) + amount
        elif kind in ("income", "deposit"):
            amount = _d8(rng.uniform(1.0, 300.0) / price)
            value = _d2(float(amount) * price) or _Q2
            if kind == "income":
                entry = LedgerEntry(
                    eid, ts, "income", account, asset, amount, value=value,
                    subkind=rng.choice(INCOME_SUBKINDS),
                )  # fmt: skip
            else:
                entry = LedgerEntry(eid, ts, "deposit", account, asset, amount, value=value)
            held[(account, asset)] = have + amount
        elif kind == "reversal" and out:
            # Corrects a recent income entry (reversing a trade would break the
            # holdings the generator follows).
            target = out[rng.randrange(max(0, len(out) - 50), len(out))]
            if target.kind != "income" or target.reverses or target.id in reversed_ids:
                continue
            reversed_ids.add(target.id)
            entry = LedgerEntry(
                eid, ts, "income", target.account, target.asset, target.amount,
                value=target.value, subkind=target.subkind, reverses=target.id,
            )  # fmt: skip
            key = (target.account, target.asset)
            held[key] = max(held.get(key, _ZERO) - target.amount, _ZERO)
        if entry is not None:
            out.append(entry)
    return out


if __name__ == "__main__":
    for e in generate(int(sys.argv[1]) if len(sys.argv) > 1 else 10):
        print(e)
