"""A pure, deterministic model of a crypto spot market: prices, trades and L2 books.

Conventions, and why these numbers:

- Time moves in fixed steps (100 ms by default). The latent mid is constant
  within a step and every trade of step k executes against step k's book, so a
  buy prints at one of that book's ask levels and a sell at one of its bid
  levels: books and trades can never disagree.
- Returns follow a one-factor model: ``shock_i = beta_i * market + sqrt(1 -
  beta_i**2) * own_i``, so the correlation of two assets is ``beta_i * beta_j``
  (BTC 0.95, ETH 0.84, SOL 0.74 give BTC-ETH 0.80, BTC-SOL 0.70, ETH-SOL 0.62,
  close to what daily crypto returns show). Jumps load on the same factor, so
  they keep that correlation instead of inflating it.
- Volatility switches between a calm and a volatile regime (a Markov chain
  with mean spells of 8 h and 45 min). Calm diffusive vol is BTC 55 %, ETH 70 %,
  SOL 95 % a year (365-day years: crypto never closes); with jumps BTC's calm
  vol is ~61 % and its long-run vol ~70 %, in line with realised BTC vol.
- Jumps are compound Poisson: ~3 a day when calm, 4x that when volatile, each
  with a standard deviation of 1.5 % of the asset's annual vol (BTC ~0.8 %).
- Trades are a Poisson process per symbol (BTC 8/s, ETH 6/s, SOL 4/s: the
  order of magnitude of Binance's busiest spot books). Notionals are
  log-normal around $250 with rare Pareto-tailed whales, the shape of real
  retail-dominated flow; they are never below the market's min notional.
- Increments are powers of ten (as on most venues): prices carry six
  significant digits but never finer than needed above a cent (BTC 0.01,
  ETH 0.01, SOL 0.001); one amount increment is worth at most about $1
  (BTC 0.00001, ETH 0.0001, SOL 0.001), with whole coins for cheap ones.

Randomness comes from numpy's PCG64 seeded by ``SeedSequence(seed)``; prices,
trades and books draw from separate child streams, in fixed blocks of steps,
so the output depends only on (seed, start_ms, symbols, step_ms, rates) and
never on how or when it is read. Which trades happen, their ids,
times, sizes and sides do not depend on ``book_interval_ms``; only the price a
rare book-sweeping trade reaches can (it is priced against the published book
when its step publishes one).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from itertools import repeat
from typing import NamedTuple

import numpy as np
from numpy.typing import NDArray

from cryptodesk.adapters.exchanges.sim_assets import (
    ASSETS,
    DEFAULT_ASSET,
    QUOTE_USD,
    AssetProfile,
    market_for,
    start_price,
)
from cryptodesk.domain.market import OrderBook, Trade
from cryptodesk.domain.symbol import Symbol

YEAR_MS = 365 * 86_400_000
DEPTH = 20  # L2 levels per side, like the common "top 20" websocket channels
_BLOCK_STEPS = 256  # steps generated per vectorised block (part of the stream's definition)

_CALM, _VOLATILE = 0, 1
_REGIME_MEAN_MS = (8 * 3_600_000, 45 * 60_000)
_REGIME_VOL_MULT = np.array([1.0, 2.0])
_JUMPS_PER_DAY = 3.0
_REGIME_JUMP_MULT = np.array([1.0, 4.0])
_JUMP_SD_PER_VOL = 0.015
_REGIME_SIZE_MULT = np.array([1.0, 1.5])  # volatile markets trade bigger tickets
_REGIME_SPREAD_EXTRA = np.array([0.5, 2.0])  # mean extra spread ticks beyond one

_MEDIAN_NOTIONAL_USD = 250.0
_NOTIONAL_LOG_SD = 1.6
_WHALE_PROB = 0.002
_WHALE_PARETO_ALPHA = 1.3
_LEVEL_SIZE_LOG_SD = 0.7
_LEVEL_GAP_P = 0.6  # geometric gaps: most levels one tick apart, some holes
# Deeper levels hold a little more, as resting liquidity does away from the touch.
_LEVEL_SHAPE = 1.0 + 0.08 * np.arange(DEPTH)
_LEVEL_CUM_SHAPE = np.cumsum(_LEVEL_SHAPE)


class LatentPath(NamedTuple):
    """``n`` steps of the latent process: the mid in force during each step."""

    log_mid: NDArray[np.float64]  # (n, symbols)
    regime: NDArray[np.int8]  # (n,) 0 calm, 1 volatile
    jumps: NDArray[np.int64]  # (n,) jump events at the end of each step


class LatentProcess:
    """Correlated log-mids with a calm/volatile Markov regime and compound-Poisson jumps."""

    def __init__(
        self,
        profiles: Sequence[AssetProfile],
        start_prices: Sequence[float],
        *,
        step_ms: int,
        regime_rng: np.random.Generator,
        return_rng: np.random.Generator,
    ) -> None:
        self._dt = step_ms / YEAR_MS
        self._vol = np.array([p.annual_vol for p in profiles])
        self._beta = np.array([p.beta for p in profiles])
        self._idio = np.sqrt(1.0 - self._beta**2)
        self._log_mid = np.log(np.asarray(start_prices, dtype=np.float64))
        self._switch_p = [-math.expm1(-step_ms / mean) for mean in _REGIME_MEAN_MS]
        self._jump_lam = _JUMPS_PER_DAY * step_ms / 86_400_000
        self._regime_rng = regime_rng
        self._rng = return_rng
        self.regime = _CALM
        self._left = int(regime_rng.geometric(self._switch_p[_CALM]))

    def _regimes(self, n: int) -> NDArray[np.int8]:
        # Draw whole spells (geometric lengths) rather than a coin per step.
        out = np.empty(n, dtype=np.int8)
        j = 0
        while j < n:
            take = min(self._left, n - j)
            out[j : j + take] = self.regime
            self._left -= take
            j += take
            if self._left == 0:
                self.regime = 1 - self.regime
                self._left = int(self._regime_rng.geometric(self._switch_p[self.regime]))
        return out

    def advance(self, n: int) -> LatentPath:
        regime = self._regimes(n)
        m = self._vol.size
        sig = self._vol[None, :] * _REGIME_VOL_MULT[regime][:, None] * math.sqrt(self._dt)
        shock = self._beta * self._rng.standard_normal(n)[:, None]
        shock = shock + self._idio * self._rng.standard_normal((n, m))
        returns = sig * shock - 0.5 * sig * sig  # Ito drift: the mid itself is a martingale
        jumps = self._rng.poisson(self._jump_lam * _REGIME_JUMP_MULT[regime])
        hit = np.flatnonzero(jumps)
        if hit.size:
            scale = np.sqrt(jumps[hit])[:, None]
            common = self._rng.standard_normal(hit.size)[:, None] * self._beta
            own = self._rng.standard_normal((hit.size, m)) * self._idio
            returns[hit] += (common + own) * scale * (_JUMP_SD_PER_VOL * self._vol)
        path = np.cumsum(returns, axis=0)
        log_mid = self._log_mid + np.vstack([np.zeros((1, m)), path[:-1]])
        self._log_mid = self._log_mid + path[-1]
        return LatentPath(log_mid, regime, jumps)


class SimModel:
    """The whole simulated venue, advanced one step of simulated time at a time.

    Trade ids are ``start_ms * 1000 + n`` (n counts the symbol's trades), so a
    restart from a later ``start_ms`` never reuses an id as long as a symbol
    prints fewer than 1000 trades per simulated millisecond. Book ``sequence``
    numbers follow the same rule.
    """

    def __init__(
        self,
        symbols: Sequence[str],
        *,
        seed: int,
        start_ms: int,
        step_ms: int = 100,
        book_interval_ms: int = 1000,
        exchange: str = "sim",
        trade_rates: Mapping[str, float] | None = None,
    ) -> None:
        names = list(dict.fromkeys(str(Symbol.parse(s)) for s in symbols))
        if not names:
            raise ValueError("symbols must not be empty: give at least one BASE/QUOTE")
        if seed < 0:
            raise ValueError(f"seed must be >= 0, got {seed}")
        if start_ms < 0:
            raise ValueError(f"start_ms must be epoch ms >= 0, got {start_ms}")
        if step_ms < 1 or book_interval_ms < 1:
            raise ValueError("step_ms and book_interval_ms must be >= 1")
        rates = {str(Symbol.parse(k)): v for k, v in (trade_rates or {}).items()}
        for name, rate in rates.items():
            if name not in names:
                raise ValueError(f"trade rate given for {name}, which is not simulated")
            if not (rate >= 0 and math.isfinite(rate)):
                raise ValueError(f"trade rate of {name} must be >= 0 trades/s, got {rate}")
        self.symbols = names
        self.exchange = exchange
        self.start_ms = start_ms
        self.step_ms = min(step_ms, book_interval_ms)  # at most one book per step
        self.book_interval_ms = book_interval_ms
        self.markets = {s: market_for(s, exchange=exchange) for s in names}
        profiles = [ASSETS.get(Symbol.parse(s).base, DEFAULT_ASSET) for s in names]
        quote_usd = np.array([QUOTE_USD.get(Symbol.parse(s).quote, 1.0) for s in names])
        per_second = [
            rates.get(s, p.trades_per_second) for s, p in zip(names, profiles, strict=True)
        ]
        self._rate_dt = np.array(per_second) * self.step_ms / 1000
        self._level_quote = np.array([p.level_notional_usd for p in profiles]) / quote_usd
        self._notional_mu = math.log(_MEDIAN_NOTIONAL_USD) - np.log(quote_usd)
        self._min_notional = np.array([self.markets[s].min_notional for s in names])
        self._tick = np.array([self.markets[s].price_increment for s in names])
        self._lot = np.array([self.markets[s].amount_increment for s in names])
        # Increments are 10**-d with d >= 0, so ``units / 10**d`` is the exact
        # nearest float of the decimal value (``units * increment`` is not).
        self._pdiv = 10.0 ** np.rint(-np.log10(self._tick))
        self._adiv = 10.0 ** np.rint(-np.log10(self._lot))
        self._names = np.array(names, dtype=object)
        regime_ss, return_ss, trade_ss, spread_ss, book_ss = np.random.SeedSequence(seed).spawn(5)
        self.latent = LatentProcess(
            profiles,
            [start_price(s) for s in names],
            step_ms=self.step_ms,
            regime_rng=np.random.Generator(np.random.PCG64(regime_ss)),
            return_rng=np.random.Generator(np.random.PCG64(return_ss)),
        )
        self._trade_rng = np.random.Generator(np.random.PCG64(trade_ss))
        self._spread_rng = np.random.Generator(np.random.PCG64(spread_ss))
        self._book_rng = np.random.Generator(np.random.PCG64(book_ss))
        self._trade_seq = np.zeros(len(names), dtype=np.int64)
        self._book_seq = 0
        self._step = 0  # index of the next step
        self._block: _Block | None = None
        self._jumps_before_block = 0

    @property
    def now_ms(self) -> int:
        """Start of the next step: everything before it has been returned."""
        return self.start_ms + self._step * self.step_ms

    @property
    def mids(self) -> dict[str, float]:
        """Latent mid of each symbol during the last step returned."""
        block = self._block
        if block is None or block.next == 0:
            return {s: start_price(s) for s in self.symbols}
        return dict(zip(self.symbols, block.mids[block.next - 1].tolist(), strict=True))

    @property
    def regime(self) -> str:
        """``calm`` or ``volatile``: the volatility regime of the last step returned."""
        block = self._block
        volatile = block is not None and block.next > 0 and block.regime[block.next - 1]
        return "volatile" if volatile else "calm"

    @property
    def jump_count(self) -> int:
        """Jump events so far (diagnostics: jumps are not visible in any one event)."""
        block = self._block
        if block is None or block.next == 0:
            return self._jumps_before_block
        return self._jumps_before_block + int(block.jumps[: block.next].sum())

    def _advance(self) -> _Block:
        block = self._block
        if block is None or block.next == _BLOCK_STEPS:
            if block is not None:
                self._jumps_before_block += int(block.jumps.sum())
            block = self._block = self._generate()
        block.next += 1
        self._step += 1
        return block

    def step(self) -> tuple[dict[str, list[Trade]], list[OrderBook]]:
        """Advance one step: that step's trades per symbol and any book snapshots."""
        block = self._advance()
        k = block.next - 1
        bounds, batch = block.bounds, block.trades
        g = k * len(self.symbols)
        trades = {s: batch[bounds[g + i] : bounds[g + i + 1]] for i, s in enumerate(self.symbols)}
        return trades, block.books.get(k, [])

    def step_combined(self) -> tuple[list[Trade], list[OrderBook]]:
        """Advance one step: all symbols' trades in timestamp order, and its books."""
        block = self._advance()
        k = block.next - 1
        if block.by_time is None:
            order = np.lexsort((block.ts, block.step))
            block.by_time = [block.trades[j] for j in order.tolist()]
        bounds, m = block.bounds, len(self.symbols)
        return block.by_time[bounds[k * m] : bounds[k * m + m]], block.books.get(k, [])

    def run_until(self, ts_ms: int) -> tuple[dict[str, list[Trade]], list[OrderBook]]:
        """Every step that ends at or before ``ts_ms``, merged per symbol."""
        trades: dict[str, list[Trade]] = {s: [] for s in self.symbols}
        books: list[OrderBook] = []
        while self.now_ms + self.step_ms <= ts_ms:
            step_trades, step_books = self.step()
            for s, batch in step_trades.items():
                trades[s].extend(batch)
            books.extend(step_books)
        return trades, books

    def _generate(self) -> _Block:
        """Vectorised generation of the next ``_BLOCK_STEPS`` steps for all symbols."""
        n, m, step_ms = _BLOCK_STEPS, len(self.symbols), self.step_ms
        k0 = self._step
        path = self.latent.advance(n)
        mid = np.exp(path.log_mid)  # (n, m)
        brng = self._book_rng
        extra = np.broadcast_to(_REGIME_SPREAD_EXTRA[path.regime][:, None], (n, m))
        spread = 1 + self._spread_rng.poisson(extra)
        bid0 = np.floor(mid / self._tick - spread / 2 + 0.5).astype(np.int64)
        ask0 = bid0 + spread
        t = (k0 + np.arange(n)) * step_ms
        bi = self.book_interval_ms
        emit = np.flatnonzero((t % bi == 0) | (t // bi != (t + step_ms - 1) // bi))
        # Full books are drawn only when a snapshot is published (a tenth of the steps).
        gaps = brng.geometric(_LEVEL_GAP_P, (emit.size, m, 2, DEPTH - 1))
        depth = np.concatenate(
            [np.zeros((emit.size, m, 2, 1), np.int64), np.cumsum(gaps, axis=3)], axis=3
        )
        bid_ticks = bid0[emit][:, :, None] - depth[:, :, 0]
        ask_ticks = ask0[emit][:, :, None] + depth[:, :, 1]
        size = brng.lognormal(0.0, _LEVEL_SIZE_LOG_SD, (emit.size, m, 2, DEPTH)) * _LEVEL_SHAPE
        unit = mid * self._lot  # quote value of one amount increment, (n, m)
        level_lots = self._level_quote / unit  # typical lots at one level
        lots = np.rint(size * level_lots[emit][:, :, None, None])
        lots = np.maximum(lots, 1).astype(np.int64)

        rng = self._trade_rng
        counts = rng.poisson(np.broadcast_to(self._rate_dt, (n, m))).ravel()
        total = int(counts.sum())
        group = np.repeat(np.arange(n * m), counts)
        step, sym = np.divmod(group, m)
        raw = rng.integers(0, step_ms, total)
        offset = np.sort(group * step_ms + raw) - group * step_ms  # sorted within each group
        ts = self.start_ms + (k0 + step) * step_ms + offset
        buy = rng.random(total) < 0.5
        log_notional = self._notional_mu[sym] + rng.normal(0.0, _NOTIONAL_LOG_SD, total)
        notional = np.exp(log_notional) * _REGIME_SIZE_MULT[path.regime[step]]
        whale = rng.random(total) < _WHALE_PROB
        notional[whale] *= 10.0 * (1.0 + rng.pareto(_WHALE_PARETO_ALPHA, int(whale.sum())))
        trade_unit = unit[step, sym]
        trade_lots = np.maximum(
            np.rint(notional / trade_unit), np.ceil(self._min_notional[sym] / trade_unit)
        ).astype(np.int64)
        # Sweep: a trade prints at the deepest level it reaches. In a published
        # step that is the published book; otherwise an unseen book drawn from
        # the same distribution (one depth factor and the holes it crosses).
        depth_factor = rng.lognormal(0.0, _LEVEL_SIZE_LOG_SD, total)
        reach = trade_lots / (level_lots[step, sym] * depth_factor)
        level = np.minimum(np.searchsorted(_LEVEL_CUM_SHAPE, reach), DEPTH - 1)
        holes = rng.negative_binomial(np.maximum(level, 1), _LEVEL_GAP_P) * (level > 0)
        away = level + holes
        ticks = np.where(buy, ask0[step, sym] + away, bid0[step, sym] - away)
        published = np.searchsorted(emit, step)
        seen = np.flatnonzero(published < emit.size)
        seen = seen[emit[published[seen]] == step[seen]]
        if seen.size:
            e, si, side = published[seen], sym[seen], buy[seen].astype(np.int64)
            cum = np.cumsum(lots, axis=3)[e, si, side]
            lv = np.minimum((cum < trade_lots[seen, None]).sum(axis=1), DEPTH - 1)
            ticks[seen] = np.where(buy[seen], ask_ticks[e, si, lv], bid_ticks[e, si, lv])
        price = np.maximum(ticks, 1) / self._pdiv[sym]
        amount = trade_lots / self._adiv[sym]

        starts = np.concatenate([[0], np.cumsum(counts)])
        sym_counts = counts.reshape(n, m)
        before = np.cumsum(sym_counts, axis=0) - sym_counts  # earlier trades in this block
        first = (self._trade_seq + before).ravel()  # seq of each group's first trade
        seq = np.repeat(first - starts[:-1], counts) + np.arange(total)
        self._trade_seq += sym_counts.sum(axis=0)
        ids = map(str, (seq + self.start_ms * 1000).tolist())
        sides = np.where(buy, "buy", "sell").tolist()
        trades = list(
            map(
                Trade,
                repeat(self.exchange),
                self._names[sym].tolist(),
                ids,
                ts.tolist(),
                price.tolist(),
                amount.tolist(),
                sides,
            )
        )
        books = self._snapshots(k0, emit, bid_ticks, ask_ticks, lots)
        return _Block(trades, starts.tolist(), books, mid, path.regime, path.jumps, ts, step)

    def _snapshots(
        self,
        k0: int,
        emit: NDArray[np.int64],
        bid_ticks: NDArray[np.int64],
        ask_ticks: NDArray[np.int64],
        lots: NDArray[np.int64],
    ) -> dict[int, list[OrderBook]]:
        """OrderBooks of the published steps, keyed by step index in the block."""
        out: dict[int, list[OrderBook]] = {}
        if not emit.size:
            return out
        # One conversion per block: per-book numpy calls would cost more than the books.
        pdiv, adiv = self._pdiv[None, :, None], self._adiv[None, :, None]
        bid_px = (np.maximum(bid_ticks, 0) / pdiv).tolist()
        ask_px = (ask_ticks / pdiv).tolist()
        bid_sz = (lots[:, :, 0] / adiv).tolist()
        ask_sz = (lots[:, :, 1] / adiv).tolist()
        collapsed = bool((bid_ticks <= 0).any())
        for e, k in enumerate(emit.tolist()):
            ts = self.start_ms + (k0 + k) * self.step_ms
            self._book_seq += 1
            seq = self.start_ms * 1000 + self._book_seq
            books = []
            for i, name in enumerate(self.symbols):
                bids = tuple(zip(bid_px[e][i], bid_sz[e][i], strict=True))
                if collapsed:  # a collapsed price cannot quote at or below zero
                    bids = tuple(level for level in bids if level[0] > 0)
                asks = tuple(zip(ask_px[e][i], ask_sz[e][i], strict=True))
                books.append(OrderBook(self.exchange, name, ts, bids, asks, seq))
            out[k] = books
        return out


@dataclass(slots=True)
class _Block:
    trades: list[Trade]  # grouped by (step, symbol), each group in ts order
    bounds: list[int]  # trades[bounds[g]:bounds[g + 1]] is group g = step * m + symbol
    books: dict[int, list[OrderBook]]
    mids: NDArray[np.float64]
    regime: NDArray[np.int8]
    jumps: NDArray[np.int64]
    ts: NDArray[np.int64]  # of each trade, for the time-ordered view
    step: NDArray[np.int64]
    next: int = 0  # steps of this block already returned
    by_time: list[Trade] | None = None  # built on first use by step_combined
