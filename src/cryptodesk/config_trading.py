"""Trading settings (a mixin of ``config.Settings``; see docs/configuration.md)."""

from __future__ import annotations

from decimal import Decimal
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator
from pydantic_settings import BaseSettings


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

    def paper_venue_exchanges(self) -> list[str]:
        """The exchanges whose paper venue is offered."""
        text = self.paper_exchanges.strip()
        if text == "all":
            return list(getattr(self, "exchanges", []))
        if text == "none":
            return []
        return [part.strip() for part in text.split(",") if part.strip()]
