"""Technical indicators by name: parsed from specs, computed over whole arrays or
candle by candle with identical results.

A spec is an indicator's name followed by its parameters, each after a ``:``;
a spec list separates specs with commas::

    sma:200,ema:20,rsi:14,macd:12:26:9,bbands:20:2,atr:14,stoch:14:3:3,obv,
    adx:14,cci:20,mfi:14,wma:30,vwap

Output columns are named ``{name}_{params joined by _}``, and for indicators
with several outputs ``{name}_{output}_{params}``: ``sma_200``,
``macd_line_12_26_9``, ``bbands_upper_20_2``, ``stoch_k_14_3_3``, ``obv``.

Each family module (``averages``, ``momentum``, ``volatility``,
``oscillators``, ``trend``, ``volume``) documents the conventions of its
indicators; they follow TA-Lib's, which the tests use as the oracle.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from cryptodesk.analytics.indicators.averages import DEFS as AVERAGES
from cryptodesk.analytics.indicators.base import (
    INPUTS,
    FloatArray,
    IndicatorDef,
    IndicatorError,
    Param,
    Streaming,
)
from cryptodesk.analytics.indicators.momentum import DEFS as MOMENTUM
from cryptodesk.analytics.indicators.oscillators import DEFS as OSCILLATORS
from cryptodesk.analytics.indicators.trend import DEFS as TREND
from cryptodesk.analytics.indicators.volatility import DEFS as VOLATILITY
from cryptodesk.analytics.indicators.volume import DEFS as VOLUME

__all__ = [
    "INPUTS",
    "REGISTRY",
    "FloatArray",
    "IndicatorDef",
    "IndicatorError",
    "IndicatorSpec",
    "StreamingSet",
    "compute",
    "parse_spec",
    "parse_specs",
]

_INTEGER = re.compile(r"^[+-]?[0-9]+$")
_NUMBER = re.compile(r"^[+-]?(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?$")
_FIELD = "indicators"


def _collect(*families: Iterable[IndicatorDef]) -> dict[str, IndicatorDef]:
    found: dict[str, IndicatorDef] = {}
    for defs in families:
        for definition in defs:
            if definition.name in found:
                raise RuntimeError(f"indicator {definition.name!r} is defined twice")
            unknown = [name for name in definition.inputs if name not in INPUTS]
            if unknown:
                raise RuntimeError(f"indicator {definition.name!r} reads unknown {unknown}")
            found[definition.name] = definition
    return dict(sorted(found.items()))


REGISTRY: dict[str, IndicatorDef] = _collect(
    AVERAGES, MOMENTUM, VOLATILITY, OSCILLATORS, TREND, VOLUME
)


def _text(value: float) -> str:
    """A parameter as written in specs and column names: ``2``, not ``2.0``."""
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


@dataclass(frozen=True, slots=True)
class IndicatorSpec:
    """One indicator with concrete parameters (ints where the parameter is an int)."""

    definition: IndicatorDef
    params: tuple[float, ...]

    @property
    def name(self) -> str:
        return self.definition.name

    @property
    def text(self) -> str:
        """The spec as written: ``macd:12:26:9``."""
        return ":".join([self.name, *map(_text, self.params)])

    @property
    def columns(self) -> tuple[str, ...]:
        """Output column names, in ``definition.outputs`` order."""
        suffix = "".join(f"_{_text(p)}" for p in self.params)
        if not self.definition.multi:
            return (f"{self.name}{suffix}",)
        return tuple(f"{self.name}_{output}{suffix}" for output in self.definition.outputs)

    def vectorised(self, *inputs: FloatArray) -> tuple[FloatArray, ...]:
        """The outputs over whole input arrays (``definition.inputs`` order)."""
        result = self.definition.vectorised(*inputs, *self.params)
        return tuple(result) if self.definition.multi else (result,)

    def streaming(self) -> Streaming:
        """A new streaming instance with these parameters."""
        return self.definition.streaming(*self.params)


def _param(item: str, param: Param, text: str) -> float:
    if param.kind is int:
        if not _INTEGER.match(text):
            raise IndicatorError(
                f"{param.name} {text!r} in {item!r} is not an integer", field=_FIELD
            )
        value: float = int(text)
    else:
        if not _NUMBER.match(text):
            raise IndicatorError(f"{param.name} {text!r} in {item!r} is not a number", field=_FIELD)
        value = float(text)
    if not param.minimum <= value <= param.maximum:
        raise IndicatorError(
            f"{param.name} {text} in {item!r} is out of range "
            f"{_text(param.minimum)}..{_text(param.maximum)}",
            field=_FIELD,
        )
    return value


def _arity(definition: IndicatorDef) -> str:
    usage = ":".join([definition.name, *(p.name for p in definition.params)])
    most = len(definition.params)
    least = most - len(definition.defaults)
    if most == 0:
        return f"{definition.name} takes no parameters"
    count = f"{most}" if least == most else f"{least} to {most}"
    return f"{definition.name} takes {count} parameter{'s' if most > 1 else ''} ({usage})"


def parse_spec(item: str) -> IndicatorSpec:
    """One spec such as ``macd:12:26:9``; trailing parameters with defaults may be left out."""
    text = item.strip()
    name, *values = (part.strip() for part in text.split(":"))
    definition = REGISTRY.get(name.lower())
    if definition is None:
        raise IndicatorError(
            f"unknown indicator {name!r} in {text!r}; known: {', '.join(REGISTRY)}", field=_FIELD
        )
    given, most = len(values), len(definition.params)
    if not most - len(definition.defaults) <= given <= most:
        raise IndicatorError(f"{_arity(definition)}, got {given} in {text!r}", field=_FIELD)
    params = [_param(text, p, v) for p, v in zip(definition.params, values, strict=False)]
    if given < most:
        tail = definition.defaults[len(definition.defaults) - (most - given) :]
        params += [
            int(v) if p.kind is int else float(v)
            for p, v in zip(definition.params[given:], tail, strict=True)
        ]
    if definition.check is not None:
        problem = definition.check(params)
        if problem is not None:
            raise IndicatorError(f"{problem} in {text!r}", field=_FIELD)
    return IndicatorSpec(definition, tuple(params))


def parse_specs(text: str) -> list[IndicatorSpec]:
    """A comma-separated spec list; the first bad item raises ``IndicatorError`` naming it."""
    if not text.strip():
        raise IndicatorError("no indicators given", field=_FIELD)
    specs: list[IndicatorSpec] = []
    seen: dict[str, str] = {}
    for item in text.split(","):
        if not item.strip():
            raise IndicatorError(f"empty item in {text.strip()!r}", field=_FIELD)
        spec = parse_spec(item)
        first = seen.get(spec.columns[0])
        if first is not None:
            raise IndicatorError(f"{item.strip()!r} repeats {first!r} (same columns)", field=_FIELD)
        seen[spec.columns[0]] = item.strip()
        specs.append(spec)
    return specs


def compute(
    specs: Sequence[IndicatorSpec], arrays: Mapping[str, npt.ArrayLike]
) -> dict[str, FloatArray]:
    """Every spec's output columns over whole arrays.

    ``arrays`` maps input names (``INPUTS``: ``ts`` as epoch ms, ``open`` ...
    ``volume``) to equally long arrays; only the inputs the specs read are needed.
    """
    prepared: dict[str, FloatArray] = {}
    out: dict[str, FloatArray] = {}
    for spec in specs:
        inputs = []
        for name in spec.definition.inputs:
            if name not in prepared:
                if name not in arrays:
                    raise IndicatorError(f"{spec.text} needs the {name} input", field=_FIELD)
                prepared[name] = np.ascontiguousarray(arrays[name], dtype=np.float64)
            inputs.append(prepared[name])
        if len({len(a) for a in prepared.values()}) > 1:
            sizes = ", ".join(f"{n}={len(a)}" for n, a in prepared.items())
            raise IndicatorError(f"input arrays differ in length: {sizes}", field=_FIELD)
        out.update(zip(spec.columns, spec.vectorised(*inputs), strict=True))
    return out


Feed = Callable[[float, float, float, float, float, float], tuple[float, ...]]


class StreamingSet:
    """Every spec's streaming indicator, fed one closed candle at a time.

    ``update`` returns the newest values as a tuple in ``columns`` order (NaN
    while an indicator warms up); ``named`` pairs a tuple with the column names.
    A tuple rather than a dict because this runs once per candle per series,
    for every series a worker follows.
    """

    def __init__(self, specs: Sequence[IndicatorSpec]) -> None:
        self.specs = tuple(specs)
        self.columns = tuple(column for spec in self.specs for column in spec.columns)
        if len(set(self.columns)) != len(self.columns):
            raise IndicatorError("the same indicator is given twice", field=_FIELD)
        self.indicators = tuple(spec.streaming() for spec in self.specs)
        self._feed = _feeder(self.specs, self.indicators)

    def update(
        self, ts: float, open: float, high: float, low: float, close: float, volume: float
    ) -> tuple[float, ...]:
        """One closed candle (``ts`` = open time in epoch ms) -> every column's newest value."""
        return self._feed(ts, open, high, low, close, volume)

    def named(self, values: Sequence[float]) -> dict[str, float]:
        return dict(zip(self.columns, values, strict=True))


def _feeder(specs: Sequence[IndicatorSpec], indicators: Sequence[Streaming]) -> Feed:
    """One function calling every indicator's ``update`` with the inputs it reads.

    Generated as straight-line code, as ``dataclasses`` generates ``__init__``:
    looping over the indicators and picking their inputs per candle would cost
    about as much as the indicators themselves. Only names from ``INPUTS`` and
    generated identifiers enter the source, never text from a spec.
    """
    namespace: dict[str, Any] = {}
    body: list[str] = []
    results: list[str] = []
    for i, (spec, indicator) in enumerate(zip(specs, indicators, strict=True)):
        namespace[f"u{i}"] = indicator.update
        args = ", ".join(spec.definition.inputs)
        if spec.definition.multi:
            names = [f"r{i}_{k}" for k in range(len(spec.definition.outputs))]
            body.append(f"    {', '.join(names)} = u{i}({args})")
            results += names
        else:
            body.append(f"    r{i} = u{i}({args})")
            results.append(f"r{i}")
    source = "\n".join(
        [
            f"def feed({', '.join(INPUTS)}):",
            *body,
            f"    return ({''.join(f'{r}, ' for r in results)})",
        ]
    )
    exec(source, namespace)
    feed: Feed = namespace["feed"]
    return feed
