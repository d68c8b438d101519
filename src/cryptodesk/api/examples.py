"""Worked examples the OpenAPI document shows for market, auth, admin, signal
and backtest bodies: values exactly as this API sends and accepts them
(decimal strings for money, ISO 8601 UTC times with milliseconds).

Each is a model's ``json_schema_extra`` example, so it is checked against the
model's own schema (tests/unit/test_openapi_examples.py).
"""

from __future__ import annotations

from typing import Any, Final

# ---- market -----------------------------------------------------------------------------

MARKET: Final[dict[str, Any]] = {
    "exchange": "sim", "symbol": "BTC/USDT", "base": "BTC", "quote": "USDT",
    "price_increment": "0.01", "amount_increment": "0.00001", "min_amount": "0.00001",
    "min_notional": "5", "active": True, "stale": False, "age_seconds": None,
}  # fmt: skip
TICKER: Final[dict[str, Any]] = {
    "exchange": "sim", "symbol": "BTC/USDT", "time": "2024-05-01T12:00:00.000Z",
    "last": "67012.35", "bid": "67012.3", "ask": "67012.4", "open_24h": "66000",
    "high_24h": "67500", "low_24h": "65800.5", "volume_24h": "1234.5678",
    "quote_volume_24h": "82000000.12", "change_24h": "0.0153", "stale": False,
    "age_seconds": 1.25,
}  # fmt: skip
CANDLE: Final[dict[str, Any]] = {
    "open_time": "2024-05-01T12:00:00.000Z", "open_time_ms": 1714564800000, "open": "67000.1",
    "high": "67100", "low": "66950.25", "close": "67012.35", "volume": "12.345",
    "quote_volume": "827312.5", "trades": 421, "closed": True,
}  # fmt: skip
_CANDLE_IN_PROGRESS: Final[dict[str, Any]] = {
    "open_time": "2024-05-01T12:01:00.000Z", "open_time_ms": 1714564860000, "open": "67012.35",
    "high": "67020", "low": "67001.5", "close": "67015.8", "volume": "3.2105",
    "quote_volume": "215154.01", "trades": 97, "closed": False,
}  # fmt: skip
CANDLES: Final[dict[str, Any]] = {
    "exchange": "sim", "symbol": "BTC/USDT", "interval": "1m",
    "candles": [CANDLE, _CANDLE_IN_PROGRESS], "next_cursor": None, "stale": False,
    "age_seconds": 2.5,
}  # fmt: skip
ORDER_BOOK: Final[dict[str, Any]] = {
    "exchange": "sim", "symbol": "BTC/USDT", "time": "2024-05-01T12:00:00.000Z",
    "sequence": 1234, "bids": [["67012.3", "0.42"], ["67012.2", "1.5"]],
    "asks": [["67012.4", "0.3"], ["67012.5", "2"]], "stale": False, "age_seconds": 0.35,
}  # fmt: skip
READINESS: Final[dict[str, Any]] = {
    "status": "ready",
    "components": [
        {"name": "database", "status": "up", "latency_ms": 0.42, "error": None, "required": True},
        {"name": "cache", "status": "up", "latency_ms": 0.08, "error": None, "required": False},
    ],
}  # fmt: skip

# ---- auth -------------------------------------------------------------------------------

USER_ID: Final = "6a1d9e0c2b3f4a5e8d7c6b5a4f3e2d1c"
LOGIN: Final[dict[str, Any]] = {
    "email": "ana@acme.test",
    "password": "correct horse battery staple",
}
NEW_USER: Final[dict[str, Any]] = {
    "email": "bo@acme.test", "password": "tr0ub4dor&3-lasting", "role": "trader",
}  # fmt: skip
API_KEY_IN: Final[dict[str, Any]] = {
    "name": "grafana", "scopes": ["market:read", "portfolio:read"],
    "expires_at": "2025-05-01T00:00:00Z",
}  # fmt: skip
# A refresh token is ``<token id>.<secret>``; an API key ``cdk_<id>_<secret>``.
REFRESH_TOKEN: Final = (
    "9b2f6c0e4d1a4f3c8e7b5a6d2c1f0e9a.Xq3v8H1cR0kYp2mW7tLs5Nb9Jd4Fg6Ae-Uo_zCiQrVw"
)
TOKENS: Final[dict[str, Any]] = {
    "access_token": "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiI2YTFkIiwidGVuIjoiYWNtZSJ9"
    ".3kq1oV6Zl8mXb0dE2sYw7PcTfNhRjGuA9iLzK4eQxHs",
    "refresh_token": REFRESH_TOKEN, "token_type": "bearer", "expires_in": 900,
}  # fmt: skip
ME: Final[dict[str, Any]] = {
    "tenant": "acme", "user_id": USER_ID, "email": "ana@acme.test", "role": "viewer",
    "kind": "user", "scopes": None,
    "permissions": [
        "accounts:read", "backtests:read", "ledger:read", "market:read", "orders:read",
        "portfolio:read", "profile:read", "public", "reports:read", "risk:read", "signals:read",
    ],
}  # fmt: skip
API_KEY: Final[dict[str, Any]] = {
    "id": "3f9a1c2b7d4e5f60", "name": "grafana", "prefix": "cdk_3f9a1c2b7d4e5f60",
    "scopes": ["market:read", "portfolio:read"], "created_at": "2024-05-01T12:00:00.000Z",
    "expires_at": "2025-05-01T00:00:00.000Z", "last_used_at": "2024-05-02T08:15:30.250Z",
    "revoked_at": None, "user_id": USER_ID,
}  # fmt: skip
NEW_API_KEY: Final[dict[str, Any]] = {
    **API_KEY, "last_used_at": None,
    "key": "cdk_3f9a1c2b7d4e5f60_Xq3v8H1cR0kYp2mW7tLs5Nb9Jd4Fg6Ae-Uo_zCiQrVw",
}  # fmt: skip
USER: Final[dict[str, Any]] = {
    "id": USER_ID, "email": "ana@acme.test", "role": "manager",
    "created_at": "2024-05-01T12:00:00.000Z", "disabled": False,
}  # fmt: skip
AUDIT_EVENT: Final[dict[str, Any]] = {
    "seq": 17, "ts": "2024-05-01T12:00:00.000Z", "event": "login", "actor": "ana@acme.test",
    "subject": None, "ip": "203.0.113.7", "detail": {},
    "hash": "5c1e0a8f3b2d4c6e9f7a1b3c5d7e9f0a2b4c6d8e0f1a3b5c7d9e1f3a5b7c9d0e",
}  # fmt: skip
AUDIT_PAGE: Final[dict[str, Any]] = {"events": [AUDIT_EVENT], "next_cursor": "17"}

# ---- admin ------------------------------------------------------------------------------

JOB: Final[dict[str, Any]] = {
    "job": "candles:binance", "outcome": "ok", "last_started_at": "2024-05-01T12:00:00.000Z",
    "last_finished_at": "2024-05-01T12:00:02.345Z", "next_run_at": "2024-05-01T12:55:00.000Z",
    "last_ok_at": "2024-05-01T12:00:02.345Z", "error": None, "owner": "host-1:4242",
}  # fmt: skip

# ---- signals ----------------------------------------------------------------------------

SIGNAL: Final[dict[str, Any]] = {
    "rule": "btc-golden", "kind": "golden_cross", "exchange": "sim", "symbol": "BTC/USDT",
    "interval": "1h", "open_time": "2024-05-01T12:00:00.000Z", "open_time_ms": 1714564800000,
    "close": "67012.35", "values": {"sma_50": 66950.2, "sma_200": 66940.8},
    "detected_at": "2024-05-01T13:00:02.120Z",
}  # fmt: skip
SIGNAL_RULES: Final[list[dict[str, Any]]] = [
    {"id": "btc-golden", "type": "ma_cross", "fast": 50, "slow": 200, "symbols": ["BTC/USDT"],
     "intervals": ["1h"]},
    {"id": "rsi-extremes", "type": "rsi_levels", "period": 14, "upper": 70.0, "lower": 30.0},
]  # fmt: skip
RULES_RESPONSE: Final[dict[str, Any]] = {
    "source": "database", "revision": 3, "updated_at": "2024-05-01T12:00:00.000Z",
    "rules": SIGNAL_RULES,
}  # fmt: skip
INDICATORS: Final[dict[str, Any]] = {
    "exchange": "sim", "symbol": "BTC/USDT", "interval": "1h", "indicators": ["rsi:14", "ema:20"],
    "open_time": "2024-05-01T12:00:00.000Z", "open_time_ms": 1714564800000, "close": "67012.35",
    "candles": 421, "values": {"rsi_14": 55.12, "ema_20": 66990.4},
}  # fmt: skip

# ---- backtests --------------------------------------------------------------------------

BACKTEST_IN: Final[dict[str, Any]] = {
    "strategy": "ma_cross", "params": {"fast": 50, "slow": 200}, "exchange": "sim",
    "symbol": "BTC/USDT", "interval": "1h", "start": "2024-01-01T00:00:00Z",
    "end": "2024-06-01T00:00:00Z", "fee": 0.001, "slippage_bps": 2.0, "size": "fraction:1.0",
    "initial_cash": 10000.0,
}  # fmt: skip
BACKTEST_QUEUED: Final[dict[str, Any]] = {
    "id": "5f0c3a9e2b7d4c1f8a6e0d2b4c6f8a1e", "status": "queued", "strategy": "ma_cross",
    "params": {"fast": 50, "slow": 200}, "exchange": "sim", "symbol": "BTC/USDT",
    "interval": "1h", "created_at": "2024-05-01T12:00:00.000Z", "started_at": None,
    "finished_at": None, "error": None, "traceback": None, "report": None,
}  # fmt: skip
BACKTEST_DONE: Final[dict[str, Any]] = {
    **BACKTEST_QUEUED, "status": "done", "started_at": "2024-05-01T12:00:00.120Z",
    "finished_at": "2024-05-01T12:00:01.870Z",
    "report": {
        "strategy": {"name": "ma_cross", "params": {"fast": 50, "slow": 200}},
        "metrics": {
            "initial_cash": 10000.0, "final_equity": 11240.5, "total_return": 0.12405,
            "cagr": 0.2631, "sharpe": 1.42, "sortino": 2.05, "calmar": 2.31,
            "max_drawdown": 0.1139, "win_rate": 0.5, "profit_factor": 1.87, "exposure": 0.46,
            "trades": 2, "fees": 42.1, "years": 0.4959, "periods_per_year": 8760.0,
        },
        "trades": [
            {"side": "long", "qty": 0.1492, "entry_time": "2024-01-14T08:00:00.000Z",
             "entry_price": 67010.5, "exit_time": "2024-03-02T17:00:00.000Z",
             "exit_price": 71540.0, "fees": 20.67, "pnl": 655.12, "return": 0.0655,
             "exit_reason": "signal", "bars": 1161},
        ],
    },
}  # fmt: skip
