"""``/api/v1`` signals: the rule set, the signals it fired, indicator values on demand.

- ``GET /signal-rules``, ``PUT /signal-rules``: the rule set in force. PUT
  replaces it whole; compute processes pick it up within their refresh time.
- ``GET /signals``: stored signals, filtered, cursor-paginated like candles.
- ``GET /indicators``: the newest values of any indicators on a series,
  computed from stored candles.

Prices (``close``) are decimal strings as elsewhere in the API; indicator
values are JSON numbers (float64 analytics, not money), null while warming up.
"""

from __future__ import annotations

from typing import Annotated, Any, Final, Literal

from fastapi import APIRouter, Body, Query
from pydantic import BaseModel, ConfigDict, Field

from cryptodesk.api import examples as ex
from cryptodesk.api.routes.market import (
    Exchange,
    OptionalExchange,
    OptionalSymbol,
    Symbol,
    _time,
    problem_responses,
)
from cryptodesk.api.schemas import decimal_str
from cryptodesk.api.security import requires
from cryptodesk.domain.signals import Signal
from cryptodesk.domain.timeutil import to_iso
from cryptodesk.services.signal_queries import MAX_SIGNAL_LIMIT, SignalQueries
from cryptodesk.services.signal_rules import EffectiveRules, SignalRuleConfig, SignalRuleSet

# The rule set's model lives in services; the document's PUT example lives here.
_RULE_SET_EXAMPLES: Final[dict[str, Any]] = {
    "cross_and_rsi": {
        "summary": "A golden cross on BTC hourly candles and RSI extremes everywhere",
        "value": {"rules": ex.SIGNAL_RULES},
    }
}


class _Model(BaseModel):
    model_config = ConfigDict(frozen=True)


class SignalOut(_Model):
    model_config = ConfigDict(json_schema_extra={"examples": [ex.SIGNAL]})

    rule: str = Field(examples=["btc-golden"])
    kind: str = Field(examples=["golden_cross"])
    exchange: str = Field(examples=["sim"])
    symbol: str = Field(examples=["BTC/USDT"])
    interval: str = Field(examples=["1h"])
    open_time: str = Field(examples=["2024-05-01T12:00:00.000Z"], description="The candle's.")
    open_time_ms: int = Field(examples=[1714564800000])
    close: str = Field(examples=["67012.35"], description="The candle's close.")
    values: dict[str, float | None] = Field(
        examples=[{"sma_50": 66950.2, "sma_200": 66940.8}],
        description="The indicator values the rule read on that candle.",
    )
    detected_at: str = Field(examples=["2024-05-01T13:00:02.120Z"], description="When it ran.")

    @classmethod
    def of(cls, s: Signal) -> SignalOut:
        return cls(
            rule=s.rule,
            kind=s.kind,
            exchange=s.exchange,
            symbol=s.symbol,
            interval=s.interval,
            open_time=to_iso(s.open_time),
            open_time_ms=s.open_time,
            close=decimal_str(s.close),
            values={k: (v if v == v else None) for k, v in s.values.items()},
            detected_at=to_iso(s.detected_at),
        )


class SignalsResponse(_Model):
    model_config = ConfigDict(
        json_schema_extra={"examples": [{"signals": [ex.SIGNAL], "next_cursor": "1714564800000"}]}
    )

    signals: list[SignalOut] = Field(description="Oldest first.")
    next_cursor: str | None = Field(
        examples=[None], description="Pass as `cursor` (same filters) for the next page."
    )


class SignalRulesResponse(_Model):
    model_config = ConfigDict(json_schema_extra={"examples": [ex.RULES_RESPONSE]})

    source: Literal["settings", "database"] = Field(
        description="settings: the configuration file's `signal_rules` (never PUT yet); "
        "database: the set last PUT."
    )
    revision: int | None = Field(examples=[3], description="Counts PUTs; null for settings.")
    updated_at: str | None = Field(examples=["2024-05-01T12:00:00.000Z"])
    rules: list[SignalRuleConfig]

    @classmethod
    def of(cls, e: EffectiveRules) -> SignalRulesResponse:
        return cls(
            source=e.source,
            revision=e.revision,
            updated_at=None if e.updated_at is None else to_iso(e.updated_at),
            rules=e.rules,
        )


class IndicatorsResponse(_Model):
    model_config = ConfigDict(json_schema_extra={"examples": [ex.INDICATORS]})

    exchange: str = Field(examples=["sim"])
    symbol: str = Field(examples=["BTC/USDT"])
    interval: str = Field(examples=["1h"])
    indicators: list[str] = Field(examples=[["rsi:14", "ema:20"]], description="As parsed.")
    open_time: str = Field(
        examples=["2024-05-01T12:00:00.000Z"], description="The newest stored candle's."
    )
    open_time_ms: int = Field(examples=[1714564800000])
    close: str = Field(examples=["67012.35"])
    candles: int = Field(examples=[421], description="Candles the values were computed over.")
    values: dict[str, float | None] = Field(
        examples=[{"rsi_14": 55.12, "ema_20": 66990.4}],
        description="By output column (`macd_line_12_26_9`); null while warming up.",
    )


Time = Annotated[
    str | None, Query(description="ISO 8601 or epoch ms.", examples=["2024-05-01T00:00Z"],
                      max_length=64),
]  # fmt: skip


def signals_router(queries: SignalQueries) -> APIRouter:
    router = APIRouter(prefix="/api/v1", tags=["signals"])

    @router.get(
        "/signal-rules",
        dependencies=[requires("signals:read")],
        response_model=SignalRulesResponse,
        responses=problem_responses(503),
        summary="The signal rule set in force",
    )
    async def get_rules() -> SignalRulesResponse:
        return SignalRulesResponse.of(await queries.rules())

    @router.put(
        "/signal-rules",
        dependencies=[requires("signals:write")],
        response_model=SignalRulesResponse,
        responses=problem_responses(400, 503),
        summary="Replace the signal rule set",
        description=(
            "Validates every rule (`errors` names the bad field, e.g. `rules.0.ma_cross.fast`), "
            "then stores the set for every process; compute processes apply it within "
            "CRYPTODESK_SIGNAL_RULES_REFRESH_SECONDS. A rule with new parameters starts "
            "from the next closed candle with its indicators rebuilt from stored candles."
        ),
    )
    async def put_rules(
        body: Annotated[SignalRuleSet, Body(openapi_examples=_RULE_SET_EXAMPLES)],
    ) -> SignalRulesResponse:
        return SignalRulesResponse.of(await queries.replace_rules(body))

    @router.get(
        "/signals",
        dependencies=[requires("signals:read")],
        response_model=SignalsResponse,
        responses=problem_responses(400, 404, 503),
        summary="Signals fired on closed candles, oldest first, cursor-paginated",
        description=(
            "Without `start`: the newest `limit` signals (before `end` if given); "
            "`next_cursor` walks back in time. With `start`: the first `limit` from "
            "`start`; `next_cursor` walks forward. Repeat the same filters with `cursor`."
        ),
    )
    async def list_signals(
        exchange: OptionalExchange = None,
        symbol: OptionalSymbol = None,
        interval: Annotated[str | None, Query(examples=["1h"], max_length=16)] = None,
        rule: Annotated[str | None, Query(examples=["btc-golden"], max_length=64)] = None,
        kind: Annotated[str | None, Query(examples=["golden_cross"], max_length=32)] = None,
        start: Time = None,
        end: Time = None,
        limit: Annotated[int, Query(ge=1, le=MAX_SIGNAL_LIMIT)] = 100,
        cursor: Annotated[
            str | None, Query(description="`next_cursor` of a previous page.", max_length=1024)
        ] = None,
    ) -> SignalsResponse:
        page = await queries.signals(
            exchange=exchange, symbol=symbol, interval=interval, rule=rule, kind=kind,
            start=_time(start, "start"), end=_time(end, "end"), limit=limit, cursor=cursor,
        )  # fmt: skip
        return SignalsResponse(
            signals=[SignalOut.of(s) for s in page.signals], next_cursor=page.next_cursor
        )

    @router.get(
        "/indicators",
        dependencies=[requires("market:read")],
        response_model=IndicatorsResponse,
        responses=problem_responses(400, 404, 503),
        summary="Newest indicator values of a series, from stored candles",
        description=(
            "`names` lists indicator specs as the CLI takes them (`rsi:14,ema:20,"
            "macd:12:26:9,bbands:20:2`). Values are on the newest stored closed candle."
        ),
    )
    async def indicators(
        exchange: Exchange,
        symbol: Symbol,
        interval: Annotated[str, Query(examples=["1h"], max_length=16)],
        names: Annotated[str, Query(examples=["rsi:14,ema:20"], max_length=512)],
    ) -> IndicatorsResponse:
        found = await queries.indicators(exchange, symbol, interval, names)
        return IndicatorsResponse(
            exchange=found.exchange,
            symbol=found.symbol,
            interval=found.interval,
            indicators=[spec.text for spec in found.specs],
            open_time=to_iso(found.open_time),
            open_time_ms=found.open_time,
            close=decimal_str(found.close),
            candles=found.candles,
            values=found.values,
        )

    return router
