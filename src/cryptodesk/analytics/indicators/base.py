"""What every indicator provides, so the registry, the CLI, the signal runner
and the backtester can use any of them without knowing which.

An indicator exists twice with identical results:

- ``vectorised``: a function over numpy float64 arrays (the ``inputs``, in
  that order, then the parameters in ``params`` order) returning one array, or
  a tuple of arrays in ``outputs`` order, each as long as the input, NaN where
  TA-Lib's output is NaN (the warm-up);
- ``streaming``: a class built with the parameters (same order) whose
  ``update(*inputs)`` takes one closed candle's input values as floats and
  returns the newest output (a float, or a tuple of floats in ``outputs``
  order), NaN during the warm-up, in O(1) time and memory per call.

Inputs are named from ``INPUTS``: ``ts`` (open time, epoch ms, as a float),
``open``, ``high``, ``low``, ``close``, ``volume``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt

from cryptodesk.domain.errors import DomainError

FloatArray = npt.NDArray[np.float64]
INPUTS = ("ts", "open", "high", "low", "close", "volume")


class IndicatorError(DomainError):
    """An unknown indicator or a bad parameter; the message is one line naming it."""


class Streaming(Protocol):
    """``update(*inputs)``: one closed candle's inputs -> the newest output(s);
    NaN while warming up. Each class takes its own inputs (``update(close)``,
    ``update(high, low, close)``...), so the method is typed loosely here."""

    @property
    def update(self) -> Callable[..., Any]: ...


@dataclass(frozen=True, slots=True)
class Param:
    """One parameter: ``kind`` int or float, inclusive bounds."""

    name: str
    kind: type
    minimum: float
    maximum: float = 100_000


@dataclass(frozen=True, slots=True)
class IndicatorDef:
    """One indicator: ``name`` as written in a spec (``macd``), its parameters in
    spec order (``macd:12:26:9``), its outputs (one name for single-output
    indicators, used only internally), its inputs, and both implementations.

    ``check`` validates parameters together (``fast < slow``) and returns the
    problem as text, or None.
    """

    name: str
    params: tuple[Param, ...]
    outputs: tuple[str, ...]
    inputs: tuple[str, ...]
    vectorised: Callable[..., Any]
    streaming: Callable[..., Streaming]
    check: Callable[[Sequence[float]], str | None] | None = None
    defaults: tuple[float, ...] = field(default=())

    @property
    def multi(self) -> bool:
        return len(self.outputs) > 1
