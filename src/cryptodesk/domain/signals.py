"""Trading signals: what a signal rule saw on one closed candle, and its wire form.

A signal's natural key is ``(rule, exchange, symbol, interval, open_time)``:
a rule fires at most once per candle (its up and down crossings exclude each
other), so the key names the event, and every sink deduplicates on it.
``open_time`` is the candle's, ``detected_at`` when the rule ran (epoch ms),
so a consumer can tell event time from processing time.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, get_args

import msgspec

from cryptodesk.domain.errors import DomainError

SignalKind = Literal[
    "golden_cross",
    "death_cross",
    "ema_cross_up",
    "ema_cross_down",
    "rsi_overbought",
    "rsi_oversold",
    "macd_cross_up",
    "macd_cross_down",
    "bb_break_upper",
    "bb_break_lower",
]
SIGNAL_KINDS: tuple[str, ...] = get_args(SignalKind)

SignalKey = tuple[str, str, str, str, int]


@dataclass(frozen=True, slots=True)
class Signal:
    """One rule firing on one closed candle.

    ``values`` holds the rule's indicator values on that candle by column name
    (``sma_50``, ``macd_signal_12_26_9``); ``close`` is the candle's close.
    """

    rule: str
    kind: str
    exchange: str
    symbol: str
    interval: str
    open_time: int
    close: float
    values: Mapping[str, float] = field(default_factory=dict)
    detected_at: int = 0

    def __post_init__(self) -> None:
        if not self.rule:
            raise DomainError("rule must not be empty", field="rule")
        if self.kind not in SIGNAL_KINDS:
            raise DomainError(f"unknown signal kind {self.kind!r}", field="kind")
        if self.open_time < 0:
            raise DomainError(f"open_time must be epoch ms >= 0, got {self.open_time}")
        if not (self.close > 0 and math.isfinite(self.close)):
            raise DomainError(f"close must be a positive finite number, got {self.close!r}")

    @property
    def key(self) -> SignalKey:
        return (self.rule, self.exchange, self.symbol, self.interval, self.open_time)


_encode = msgspec.json.Encoder().encode
_decode = msgspec.json.Decoder().decode


def signal_to_dict(s: Signal) -> dict[str, Any]:
    # Warm-up NaNs never reach a fired signal, but JSON has no NaN: send null.
    values = {k: (v if math.isfinite(v) else None) for k, v in s.values.items()}
    return {
        "r": s.rule,
        "k": s.kind,
        "e": s.exchange,
        "s": s.symbol,
        "iv": s.interval,
        "t": s.open_time,
        "c": s.close,
        "v": values,
        "d": s.detected_at,
    }


def signal_from_dict(d: Mapping[str, Any]) -> Signal:
    values = {k: (math.nan if v is None else float(v)) for k, v in d["v"].items()}
    return Signal(d["r"], d["k"], d["e"], d["s"], d["iv"], d["t"], d["c"], values, d["d"])


def encode_signal(s: Signal) -> bytes:
    """The bus and cache form: compact msgspec JSON, like the market-data events."""
    return _encode(signal_to_dict(s))


def decode_signal(raw: bytes) -> Signal:
    return signal_from_dict(_decode(raw))


def encode_values(values: Mapping[str, float]) -> str:
    """Indicator values as the JSON text stored beside a signal."""
    return _encode({k: (v if math.isfinite(v) else None) for k, v in values.items()}).decode()


def decode_values(text: str) -> dict[str, float]:
    return {k: (math.nan if v is None else float(v)) for k, v in _decode(text).items()}
