"""The API's security settings: tokens, public reads, rate limits, HTTP hygiene.

A part of ``config.Settings`` (which inherits these fields; same
``CRYPTODESK_`` environment prefix), kept apart so the one Settings module
stays readable. docs/configuration.md lists them with the others.
"""

from __future__ import annotations

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings

DEFAULT_RATE_LIMITS = "ip=50/s:100,user=20/s:40,key=50/s:100,login=5/m:5"


class ApiSettings(BaseSettings):
    jwt_secret: SecretStr = Field(
        SecretStr(""),
        description="Signs access tokens (at least 32 characters); empty: a random secret "
        "kept in DATA_DIR/jwt-secret (set it when API processes run on several hosts).",
    )
    access_token_seconds: int = Field(900, ge=60, le=86_400, description="Access token life.")
    refresh_token_seconds: int = Field(
        30 * 86_400, ge=300, le=365 * 86_400, description="Refresh token life."
    )
    public_market_data: bool = Field(
        True, description="Market data reads need no credentials (tenant data always does)."
    )
    bootstrap_admin_email: str = Field(
        "admin@cryptodesk.local",
        description="First run (no user at all): this admin of tenant `default` is created "
        "and its one-time password printed.",
    )
    rate_limit_tiers: str = Field(
        DEFAULT_RATE_LIMITS,
        description="API rate limits NAME=COUNT/PERIOD[:BURST], comma-separated; NAME is ip, "
        "user, key or login; tiers left out keep their defaults (docs/rate-limits.md).",
    )
    trusted_proxies: str = Field(
        "",
        description="Proxies (addresses or CIDR blocks, comma-separated) whose "
        "X-Forwarded-For is believed; empty: the header is ignored.",
    )

    cors_origins: str = Field(
        "",
        description="Origins browsers may call the API from: comma-separated "
        "scheme://host[:port], or *; empty: CORS off (docs/http.md).",
    )
    max_body_bytes: int = Field(
        1_048_576, ge=1024, le=1_073_741_824,
        description="Largest request body; larger is a 413 (ledger imports have their own limit).",
    )  # fmt: skip
    hsts_seconds: int = Field(
        0, ge=0, le=63_072_000,
        description="Strict-Transport-Security max-age; 0: not sent (set it only behind HTTPS).",
    )  # fmt: skip

    websocket_queue_size: int = Field(
        1024, ge=16, le=100_000, description="WebSocket: messages queued per client before "
        "ticker/book updates coalesce and a client still behind is closed (4008).",
    )  # fmt: skip
    websocket_heartbeat_seconds: float = Field(15.0, gt=0, description="WebSocket ping period.")
    websocket_idle_timeout_seconds: float = Field(
        45.0, gt=0, description="WebSocket: a client silent this long is closed (4002)."
    )
    websocket_auth_timeout_seconds: float = Field(
        10.0, gt=0, description="WebSocket: time to send the auth message when one is needed."
    )
    websocket_ticker_poll_seconds: float = Field(
        1.0, gt=0, description="WebSocket: tickers are re-read at least this often."
    )
    websocket_portfolio_poll_seconds: float = Field(
        5.0, gt=0, description="WebSocket: a subscribed tenant's portfolio is revalued this often."
    )
    websocket_book_depth: int = Field(20, ge=1, le=100, description="WebSocket book levels.")
    websocket_snapshot_candles: int = Field(
        100, ge=1, le=1000, description="WebSocket: candles in a candles channel's snapshot."
    )

    @field_validator("cors_origins")
    @classmethod
    def _cors_origins(cls, value: str) -> str:
        from cryptodesk.api.http_hygiene import cors_options

        cors_options(value)  # ValueError of one line
        return value.strip()

    @field_validator("jwt_secret")
    @classmethod
    def _jwt_secret(cls, value: SecretStr) -> SecretStr:
        if value.get_secret_value() and len(value.get_secret_value().encode()) < 32:
            raise ValueError("must be at least 32 characters (e.g. `openssl rand -hex 32`)")
        return value

    @field_validator("rate_limit_tiers")
    @classmethod
    def _rate_limit_tiers(cls, value: str) -> str:
        from cryptodesk.api.ratelimit import parse_tiers

        parse_tiers(value)  # ValueError of one line
        return value.strip()

    @field_validator("trusted_proxies")
    @classmethod
    def _trusted_proxies(cls, value: str) -> str:
        from cryptodesk.api.ratelimit import parse_trusted_proxies

        parse_trusted_proxies(value)
        return value.strip()
