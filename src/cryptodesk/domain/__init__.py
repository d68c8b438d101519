"""Value types and rules shared by every part of cryptodesk. Imports nothing else of ours."""

from cryptodesk.domain.errors import DomainError
from cryptodesk.domain.interval import Interval, parse_intervals
from cryptodesk.domain.market import Candle, Market, OrderBook, Side, Ticker, Trade, stream_key
from cryptodesk.domain.symbol import Symbol

__all__ = [
    "Candle",
    "DomainError",
    "Interval",
    "Market",
    "OrderBook",
    "Side",
    "Symbol",
    "Ticker",
    "Trade",
    "parse_intervals",
    "stream_key",
]
