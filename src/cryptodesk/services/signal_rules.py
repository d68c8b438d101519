"""The signal rule set: its configuration form, and where the effective one lives.

Rules start in the settings file (``signal_rules``, one table per rule)::

    [[signal_rules]]
    id = "btc-golden"
    type = "ma_cross"          # ma_cross | ema_cross | rsi_levels | macd_cross | bb_break
    fast = 50
    slow = 200
    symbols = ["BTC/USDT"]     # empty or left out: every configured symbol
    intervals = ["1h", "4h"]   # empty or left out: every configured interval

``PUT /api/v1/signal-rules`` replaces the whole set in the database table
``signal_rules``; from then on the stored set wins over the file, for every
process (compute processes poll its revision). Parameters and defaults per
type are in ``analytics.signals.PARAMS``.

This module imports no numpy at import time: ``config.py`` uses the models.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, field_validator, model_validator

from cryptodesk.domain.errors import DomainError
from cryptodesk.domain.interval import Interval
from cryptodesk.domain.symbol import Symbol

if TYPE_CHECKING:
    from cryptodesk.adapters.db.signal_store import SqlSignalStore
    from cryptodesk.analytics.signals import Rule

RULE_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$"
MAX_RULES = 200


def _period(default: int) -> Any:
    # The indicator's own bounds apply too (checked through the registry).
    return Field(default, ge=1, le=100_000, description="Candles.")


class _RuleConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    id: str = Field(
        pattern=RULE_ID_PATTERN,
        description="Unique in the rule set; names the rule in its signals.",
        examples=["btc-golden"],
    )
    type: str
    exchanges: list[str] = Field(
        default_factory=list, description="Only these exchanges; empty: every one served."
    )
    symbols: list[str] = Field(
        default_factory=list, description="Only these symbols (BASE/QUOTE); empty: every one."
    )
    intervals: list[str] = Field(
        default_factory=list, description="Only these candle intervals; empty: every one."
    )

    @field_validator("symbols")
    @classmethod
    def _symbols(cls, value: list[str]) -> list[str]:
        try:
            return [str(Symbol.parse(s)) for s in value]
        except DomainError as exc:
            raise ValueError(str(exc)) from None

    @field_validator("intervals")
    @classmethod
    def _intervals(cls, value: list[str]) -> list[str]:
        try:
            return [Interval.parse(i).name for i in value]
        except DomainError as exc:
            raise ValueError(str(exc)) from None

    @field_validator("exchanges")
    @classmethod
    def _exchanges(cls, value: list[str]) -> list[str]:
        return [e.strip().lower() for e in value]

    @model_validator(mode="after")
    def _parameters(self) -> _RuleConfig:
        from cryptodesk.analytics.signals import RuleError

        try:
            self.rule()
        except RuleError as exc:
            raise ValueError(str(exc)) from None
        return self

    def parameters(self) -> dict[str, float]:
        return self.model_dump(exclude={"id", "type", "exchanges", "symbols", "intervals"})

    def rule(self) -> Rule:
        """The pure rule this configures."""
        from cryptodesk.analytics.signals import Rule

        return Rule.of(self.id, self.type, **self.parameters())

    def applies(self, exchange: str, symbol: str, interval: str) -> bool:
        return (
            (not self.exchanges or exchange in self.exchanges)
            and (not self.symbols or symbol in self.symbols)
            and (not self.intervals or interval in self.intervals)
        )


class MaCrossRule(_RuleConfig):
    """Golden cross / death cross: SMA ``fast`` crossing SMA ``slow``."""

    type: Literal["ma_cross"]
    fast: int = _period(50)
    slow: int = _period(200)


class EmaCrossRule(_RuleConfig):
    """EMA ``fast`` crossing EMA ``slow``."""

    type: Literal["ema_cross"]
    fast: int = _period(12)
    slow: int = _period(26)


class RsiLevelsRule(_RuleConfig):
    """RSI crossing up through ``upper`` (overbought) or down through ``lower`` (oversold)."""

    type: Literal["rsi_levels"]
    period: int = _period(14)
    upper: float = Field(70.0, gt=0, lt=100)
    lower: float = Field(30.0, gt=0, lt=100)


class MacdCrossRule(_RuleConfig):
    """MACD line crossing its signal line."""

    type: Literal["macd_cross"]
    fast: int = _period(12)
    slow: int = _period(26)
    signal: int = Field(9, ge=1, le=100_000)


class BbBreakRule(_RuleConfig):
    """Close breaking out of the Bollinger Bands (``period``, ``k`` deviations)."""

    type: Literal["bb_break"]
    period: int = _period(20)
    k: float = Field(2.0, gt=0, le=100)


SignalRuleConfig = Annotated[
    MaCrossRule | EmaCrossRule | RsiLevelsRule | MacdCrossRule | BbBreakRule,
    Field(discriminator="type"),
]


class SignalRuleSet(BaseModel):
    """A whole rule set, as PUT takes it."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    rules: list[SignalRuleConfig] = Field(max_length=MAX_RULES)

    @field_validator("rules")
    @classmethod
    def _unique(cls, value: list[SignalRuleConfig]) -> list[SignalRuleConfig]:
        seen: set[str] = set()
        for rule in value:
            if rule.id in seen:
                raise ValueError(f"rule id {rule.id!r} is used twice")
            seen.add(rule.id)
        return value


_RULES = TypeAdapter(list[SignalRuleConfig])


def dump_rules(rules: Sequence[SignalRuleConfig]) -> str:
    return _RULES.dump_json(list(rules)).decode()


def load_rules(text: str) -> list[SignalRuleConfig]:
    return _RULES.validate_json(text)


def rules_for(
    rules: Sequence[SignalRuleConfig], exchange: str, symbol: str, interval: str
) -> list[Rule]:
    return [r.rule() for r in rules if r.applies(exchange, symbol, interval)]


@dataclass(frozen=True, slots=True)
class EffectiveRules:
    """The rules in force: from the database (``revision`` set) or the settings."""

    rules: list[SignalRuleConfig]
    revision: int | None
    updated_at: int | None

    @property
    def source(self) -> Literal["settings", "database"]:
        return "settings" if self.revision is None else "database"


class RuleBook:
    """Reads and replaces the effective rule set; shared by compute and the API."""

    def __init__(self, store: SqlSignalStore, defaults: Sequence[SignalRuleConfig]) -> None:
        self._store = store
        self._defaults = list(defaults)

    async def current(self) -> EffectiveRules:
        stored = await self._store.rules()
        if stored is None:
            return EffectiveRules(self._defaults, None, None)
        return EffectiveRules(load_rules(stored.rules), stored.revision, stored.updated_at)

    async def revision(self) -> int | None:
        return await self._store.rules_revision()

    async def replace(self, rules: Sequence[SignalRuleConfig], *, at: int) -> EffectiveRules:
        await self._store.replace_rules(dump_rules(rules), at)
        return await self.current()
