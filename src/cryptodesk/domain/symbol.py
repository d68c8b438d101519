"""Market symbols in ccxt's unified ``BASE/QUOTE`` form."""

from __future__ import annotations

import re
from dataclasses import dataclass

from cryptodesk.domain.errors import DomainError

_CODE = re.compile(r"^[A-Z0-9]{1,20}$")


@dataclass(frozen=True, slots=True)
class Symbol:
    """A spot market symbol such as ``BTC/USDT``; codes are upper case."""

    base: str
    quote: str

    def __post_init__(self) -> None:
        for name, code in (("base", self.base), ("quote", self.quote)):
            if not _CODE.match(code):
                raise DomainError(f"invalid {name} currency code {code!r}", field="symbol")
        if self.base == self.quote:
            raise DomainError("base and quote must differ", field="symbol")

    @classmethod
    def parse(cls, text: str) -> Symbol:
        """Parse ``BTC/USDT`` (case-insensitive); ``BTC-USDT`` is accepted too."""
        parts = text.strip().upper().replace("-", "/").split("/")
        if len(parts) != 2:
            raise DomainError(f"symbol {text!r} is not of the form BASE/QUOTE", field="symbol")
        return cls(parts[0], parts[1])

    def __str__(self) -> str:
        return f"{self.base}/{self.quote}"
