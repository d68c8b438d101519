"""Cache key layout shared by the writers (compute) and the readers (API)."""


def ticker(exchange: str, symbol: str) -> str:
    return f"ticker:{exchange}:{symbol}"


def book(exchange: str, symbol: str) -> str:
    return f"book:{exchange}:{symbol}"


def open_candle(exchange: str, symbol: str, interval: str) -> str:
    """The in-progress candle (``closed`` false) of one series."""
    return f"candle:open:{exchange}:{symbol}:{interval}"


def recent_candles(exchange: str, symbol: str, interval: str) -> str:
    """Capped list of the newest finalized candles of one series, oldest first."""
    return f"candles:{exchange}:{symbol}:{interval}"


def markets(exchange: str) -> str:
    return f"markets:{exchange}"
