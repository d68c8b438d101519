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


def close_window(exchange: str, symbol: str, interval: str, length: int) -> str:
    """Capped list of one series' last ``length`` closes, oldest first, from which
    the signal rules' indicators resume (``...:BTC/USDT:1h:ma200``)."""
    return f"closes:{exchange}:{symbol}:{interval}:ma{length}"


def latest_signal(rule: str, exchange: str, symbol: str, interval: str) -> str:
    """The newest signal published for one rule on one series."""
    return f"signal:latest:{rule}:{exchange}:{symbol}:{interval}"
