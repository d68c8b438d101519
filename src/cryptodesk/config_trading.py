"""Trading settings (a mixin of ``config.Settings``; see docs/configuration.md)."""

from __future__ import annotations

import re
from decimal import Decimal
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator
from pydantic_settings import BaseSettings

from cryptodesk.domain.symbol import Symbol
from cryptodesk.trading.instruments import Fees
from cryptodesk.trading.pretrade import RiskLimits


class TradingStrategy(BaseModel):
    """One rule's signals traded (``[[trading_strategies]]`` in the settings): on paper, or
    live with ``mode = "live"`` and a ``live:EXCHANGE`` venue."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    rule: str = Field(min_length=1, max_length=64, description="The signal rule's id.")
    tenant: str = Field(min_length=1, max_length=64)
    account: str = Field(min_length=1, max_length=64)
    quantity: Decimal = Field(gt=0, description="Base quantity of each order.")
    mode: Literal["paper", "live"] = Field(
        "paper", description="live: real orders; required with a live:EXCHANGE venue."
    )
    venue: str = Field(
        "internal",
        pattern=r"^(internal|best|paper:[a-z0-9][a-z0-9_.-]*|live:[a-z0-9][a-z0-9_.-]*)$",
        description="internal (the matching engine between accounts), paper:EXCHANGE "
        "(fills against that exchange's live books), best (the best net price), or "
        "live:EXCHANGE (real orders on the tenant's ledger account named by account).",
    )

    @model_validator(mode="after")
    def _live_is_explicit(self) -> TradingStrategy:
        if self.venue.startswith("live:") != (self.mode == "live"):
            raise ValueError(
                'a live:EXCHANGE venue needs mode = "live" (and mode live needs one): '
                "real orders are never placed by accident"
            )
        return self


class VenueFees(BaseModel):
    """One exchange's fee rates (``[venue_fees.EXCHANGE]``)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    taker: Decimal = Field(ge=0, lt=1, allow_inf_nan=False)
    maker: Decimal = Field(gt=-1, lt=1, allow_inf_nan=False, description="< 0: a rebate.")


class OrderLimits(BaseModel):
    """Pre-trade risk limits (``[order_limits]``, ``[symbol_order_limits."BTC/USDT"]``);
    a limit left out is off. See ``trading/pretrade.py`` for each rule."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    price_band: Decimal | None = Field(
        None, gt=0, lt=1, allow_inf_nan=False,
        description="A limit price at most this fraction away from the last trade (fat "
        "fingers); it also caps what a market order may pay (its protection price).",
    )  # fmt: skip
    max_order_quantity: Decimal | None = Field(None, gt=0, allow_inf_nan=False)
    max_order_notional: Decimal | None = Field(
        None, gt=0, allow_inf_nan=False, description="In the quote asset."
    )
    max_open_orders: int | None = Field(None, ge=1, description="Per account and symbol.")
    max_position: Decimal | None = Field(
        None, gt=0, allow_inf_nan=False, description="Absolute base quantity per account."
    )
    submit_rate: Decimal | None = Field(
        None, gt=0, allow_inf_nan=False,
        description="Orders per second per account, across symbols (set it on the default).",
    )  # fmt: skip
    submit_burst: int | None = Field(
        None, ge=1, description="The rate's bucket size (default: the rate, at least 1)."
    )
    market_slippage: Decimal = Field(
        Decimal("0.05"), gt=0, lt=1, allow_inf_nan=False,
        description="Without a price band: how far from the last trade a market order may fill.",
    )  # fmt: skip

    def risk_limits(self) -> RiskLimits:
        return RiskLimits(**self.model_dump())


class InstrumentGrid(BaseModel):
    """One internal market's grid and fees (``[instruments."BTC/USDT"]``); what is left
    out keeps the default (tick 0.01, lot 0.00001, min notional 1, fees 0.1 %)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    tick_size: Decimal | None = Field(None, gt=0, allow_inf_nan=False)
    lot_size: Decimal | None = Field(None, gt=0, allow_inf_nan=False)
    min_quantity: Decimal | None = Field(None, ge=0, allow_inf_nan=False)
    min_notional: Decimal | None = Field(None, ge=0, allow_inf_nan=False)
    taker_fee: Decimal | None = Field(None, ge=0, lt=1, allow_inf_nan=False)
    maker_fee: Decimal | None = Field(None, gt=-1, lt=1, allow_inf_nan=False)

    def fields(self) -> dict[str, Decimal]:
        return {k: v for k, v in self.model_dump().items() if v is not None}


class TradingSettings(BaseSettings):
    trading_strategies: list[TradingStrategy] = Field(
        default_factory=list,
        description="Signal rules that trade ([[trading_strategies]] tables; JSON in the "
        "environment): rule, tenant, account, quantity, venue, mode (docs/trading.md).",
    )
    paper_exchanges: str = Field(
        "all",
        description="Exchanges offered as paper venues paper:EXCHANGE (orders fill against "
        "their live books): all (every ingested exchange), none, or a comma list of "
        "ingested exchange ids.",
    )
    live_poll_seconds: float = Field(
        5.0, gt=0, le=3600,
        description="How often the compute role reconciles open live orders with their "
        "exchanges (their fills reach the log, the ledger and the orders channel).",
    )  # fmt: skip
    venue_fees: dict[str, VenueFees] = Field(
        default_factory=dict,
        description="Trading fee rates per exchange id, for its paper venue's fills, for "
        "routing (best net price) and for the arbitrage watch (unless ARBITRAGE_TAKER_FEES "
        "names the exchange): {taker, maker} fractions of the notional (0.001 = 0.1 %; a "
        "negative maker fee is a rebate). An exchange not named pays the instrument's "
        '(0.1 %). TOML [venue_fees.kraken] taker = "0.0026"; JSON in the environment.',
    )
    order_limits: OrderLimits = Field(
        default_factory=OrderLimits,
        description="Pre-trade risk limits of every symbol ([order_limits]; "
        "ORDER_LIMITS__PRICE_BAND=0.05 and so on in the environment); all off by default "
        "but market_slippage (0.05).",
    )
    symbol_order_limits: dict[str, OrderLimits] = Field(
        default_factory=dict,
        description='Per symbol, what differs from order_limits ([symbol_order_limits."BTC/'
        "USDT\"]; JSON in the environment); a limit it leaves out is order_limits' one.",
    )
    self_trade_prevention: Literal["cancel_incoming", "cancel_resting"] = Field(
        "cancel_incoming",
        description="An order that would trade with its own account's resting order: "
        "cancel_incoming (its remainder expires, reason self_trade) or cancel_resting "
        "(the resting order is cancelled and matching goes on).",
    )
    instruments: dict[str, InstrumentGrid] = Field(
        default_factory=dict,
        description='The internal venue\'s grid per symbol ([instruments."SOL/USDT"] '
        'tick_size = "0.001"; JSON in the environment): tick_size, lot_size, min_quantity, '
        "min_notional, taker_fee, maker_fee; defaults tick 0.01, lot 0.00001, min notional 1, "
        "fees 0.1 %. Orders already logged must stay on the grid (a new tick or lot must "
        "divide the old one).",
    )
    paper_book_max_age_ms: int = Field(
        10_000, ge=1, description="A paper order that must take needs a book this fresh."
    )

    @model_validator(mode="after")
    def _paper_exchanges_are_ingested(self) -> Any:
        ingested = list(getattr(self, "exchanges", []))
        unknown = [e for e in self.paper_venue_exchanges() if e not in ingested]
        if unknown:
            raise ValueError(
                f"paper_exchanges names {', '.join(unknown)}, which is not ingested "
                f"(exchanges: {', '.join(ingested)}): a paper venue needs its live books"
            )
        return self

    @model_validator(mode="after")
    def _venue_fees_name_exchanges(self) -> Any:
        for name in self.venue_fees:
            if not re.fullmatch(r"[a-z0-9][a-z0-9_.-]*", name):
                raise ValueError(f"venue_fees names {name!r}, which is not an exchange id")
        return self

    @model_validator(mode="after")
    def _tables_name_traded_symbols(self) -> Any:
        traded: list[str] = list(getattr(self, "symbols", []))
        for setting in ("symbol_order_limits", "instruments"):
            named: dict[str, Any] = {}
            for name, table in getattr(self, setting).items():
                symbol = str(Symbol.parse(name))  # DomainError (a ValueError) naming the form
                if symbol not in traded:
                    raise ValueError(f"{setting} names {symbol}, which is not traded "
                                     f"(symbols: {', '.join(traded)})")  # fmt: skip
                named[symbol] = table
            object.__setattr__(self, setting, named)  # the settings are frozen
        return self

    def instrument_grids(self) -> dict[str, dict[str, Decimal]]:
        """What ``instruments`` sets, by symbol (``default_instruments``' ``grids``)."""
        return {symbol: grid.fields() for symbol, grid in self.instruments.items()}

    def risk_limits(self) -> dict[str, RiskLimits]:
        """Every traded symbol's pre-trade limits: ``order_limits`` with what
        ``symbol_order_limits`` sets for it."""
        default = self.order_limits
        out: dict[str, RiskLimits] = {}
        for symbol in getattr(self, "symbols", []):
            own = self.symbol_order_limits.get(symbol)
            merged = (
                default
                if own is None
                else default.model_copy(
                    update={name: getattr(own, name) for name in own.model_fields_set}
                )
            )
            out[symbol] = merged.risk_limits()
        return out

    def fee_schedule(self) -> dict[str, Fees]:
        """``venue_fees`` as the trading core's ``Fees``, by exchange id."""
        return {name: Fees(f.taker, f.maker) for name, f in self.venue_fees.items()}

    def arbitrage_fees(self) -> dict[str, Decimal]:
        """The arbitrage watch's taker fee per exchange: ``arbitrage_taker_fees`` where it
        names the exchange, else ``venue_fees``' taker rate."""
        own: dict[str, Decimal] = getattr(self, "arbitrage_taker_fees", {})
        return {**{name: f.taker for name, f in self.venue_fees.items()}, **own}

    def paper_venue_exchanges(self) -> list[str]:
        """The exchanges whose paper venue is offered."""
        text = self.paper_exchanges.strip()
        if text == "all":
            return list(getattr(self, "exchanges", []))
        if text == "none":
            return []
        return [part.strip() for part in text.split(",") if part.strip()]
