"""Market-risk settings: the volatility circuit breaker and the arbitrage watch.

A part of ``config.Settings`` (which inherits these fields; same
``CRYPTODESK_`` environment prefix), kept apart so the one Settings module
stays readable. docs/configuration.md lists them with the others.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Annotated, Any

from pydantic import Field, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode

from cryptodesk.analytics.vol_breaker import BreakerSettings
from cryptodesk.domain.interval import Interval


def parse_fees(value: Any) -> Any:
    """``binance=0.001,kraken=0.0026`` (the environment form) -> a mapping;
    a mapping (TOML table) passes through."""
    if not isinstance(value, str):
        return value
    fees: dict[str, str] = {}
    for part in value.split(","):
        if not part.strip():
            continue
        exchange, sep, fee = part.partition("=")
        if not sep or not exchange.strip() or not fee.strip():
            raise ValueError(f"{part.strip()!r} is not EXCHANGE=FEE (e.g. binance=0.001)")
        fees[exchange.strip()] = fee.strip()
    return fees


class RiskSettings(BaseSettings):
    circuit_breaker_enabled: bool = Field(
        True, description="Halt a market whose short-term volatility explodes (docs/risk.md)."
    )
    circuit_breaker_interval: str = Field(
        "",
        description="Candle interval the breaker watches (one of INTERVALS); empty means "
        "the shortest of INTERVALS.",
    )
    circuit_breaker_short_window: int = Field(
        15, ge=2, le=10_000, description="Circuit breaker: returns in the short window."
    )
    circuit_breaker_long_window: int = Field(
        240, ge=3, le=100_000,
        description="Circuit breaker: returns in the baseline window before the short one.",
    )  # fmt: skip
    circuit_breaker_multiple: float = Field(
        3.0, description="Circuit breaker: halt when short volatility > MULTIPLE x long (> 1)."
    )
    circuit_breaker_cooldown_seconds: int = Field(
        900, ge=0, le=7 * 86_400,
        description="Circuit breaker: candle time before a halted market is checked again.",
    )  # fmt: skip
    arbitrage_enabled: bool = Field(
        True, description="Watch the order books for cross-exchange arbitrage."
    )
    arbitrage_threshold: Decimal = Field(
        Decimal("0.002"), ge=0, le=1,
        description="Arbitrage: alert when the net spread after taker fees exceeds this.",
    )  # fmt: skip
    arbitrage_taker_fees: Annotated[dict[str, Decimal], NoDecode] = Field(
        default_factory=dict,
        description="Arbitrage: taker fee per exchange, EXCHANGE=FEE comma-separated; an "
        "exchange not listed pays ARBITRAGE_DEFAULT_TAKER_FEE.",
    )
    arbitrage_default_taker_fee: Decimal = Field(
        Decimal("0.001"), ge=0, lt=1, description="Arbitrage: taker fee of unlisted exchanges."
    )
    arbitrage_max_age_seconds: float = Field(
        10.0, gt=0, le=3600, description="Arbitrage: order books older than this are ignored."
    )

    @field_validator("circuit_breaker_interval")
    @classmethod
    def _interval(cls, value: str) -> str:
        if not value.strip():
            return ""
        return Interval.parse(value).name  # DomainError (a ValueError) naming the choices

    @field_validator("circuit_breaker_multiple")
    @classmethod
    def _multiple(cls, value: float) -> float:
        if not value > 1 or value == float("inf"):
            raise ValueError("must be a finite number above 1 (short volatility > N x long)")
        return value

    @field_validator("arbitrage_taker_fees", mode="before")
    @classmethod
    def _fees(cls, value: Any) -> Any:
        return parse_fees(value)

    @field_validator("arbitrage_taker_fees")
    @classmethod
    def _fee_range(cls, value: dict[str, Decimal]) -> dict[str, Decimal]:
        for exchange, fee in value.items():
            if not (0 <= fee < 1):
                raise ValueError(f"fee of {exchange} must be in [0, 1), got {fee}")
        return value

    @model_validator(mode="after")
    def _windows(self) -> RiskSettings:
        if self.circuit_breaker_short_window >= self.circuit_breaker_long_window:
            raise ValueError(
                f"circuit_breaker_short_window ({self.circuit_breaker_short_window}) must be "
                f"shorter than circuit_breaker_long_window ({self.circuit_breaker_long_window})"
            )
        return self

    def breaker_settings(self) -> BreakerSettings:
        return BreakerSettings(
            short_window=self.circuit_breaker_short_window,
            long_window=self.circuit_breaker_long_window,
            multiple=self.circuit_breaker_multiple,
            cooldown_ms=self.circuit_breaker_cooldown_seconds * 1000,
        )
