"""Trading settings (a mixin of ``config.Settings``; see docs/configuration.md)."""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import BaseSettings

from cryptodesk.services.signal_trader import TradingStrategy


class TradingSettings(BaseSettings):
    trading_strategies: list[TradingStrategy] = Field(
        default_factory=list,
        description="Signal rules traded on paper ([[trading_strategies]] tables; JSON in the "
        "environment): rule, tenant, account, quantity (docs/trading.md).",
    )
