"""The one Settings object. Environment variables ``CRYPTODESK_*`` override
``cryptodesk.toml`` (or the file named by ``CRYPTODESK_CONFIG``), which overrides
the embedded defaults. Nothing else in the project reads the environment.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit, urlunsplit

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import (
    BaseSettings,
    NoDecode,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

from cryptodesk.config_api import ApiSettings
from cryptodesk.config_risk import RiskSettings
from cryptodesk.config_trading import TradingSettings
from cryptodesk.domain.errors import DomainError
from cryptodesk.domain.interval import Interval, parse_intervals
from cryptodesk.domain.symbol import Symbol
from cryptodesk.domain.timeutil import parse_time
from cryptodesk.services.signal_rules import SignalRuleConfig

ENV_PREFIX = "CRYPTODESK_"
_EXCHANGE_ID = re.compile(r"^[a-z][a-z0-9_]{1,31}$")
_URL_SCHEMES = {
    "database_url": ("sqlite+aiosqlite", "postgresql+asyncpg"),
    "database_read_url": ("sqlite+aiosqlite", "postgresql+asyncpg"),
    "cache_url": ("memory", "redis", "rediss"),
    "bus_url": ("memory", "redis", "rediss", "kafka"),
}
CommaList = Annotated[list[str], NoDecode]


def _split(value: Any) -> Any:
    if isinstance(value, str):
        return [part.strip() for part in value.split(",") if part.strip()]
    return value


class ExchangeConfig(BaseModel):
    """Per-exchange access: API keys and, for testnets or proxies, other hosts.

    Set in ``cryptodesk.toml`` under ``[exchange_config.binance]`` or in the
    environment as ``CRYPTODESK_EXCHANGE_CONFIG__BINANCE__API_KEY``. Keys are
    never printed (``config show`` masks them).
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    api_key: SecretStr = Field(SecretStr(""), description="ccxt apiKey.")
    secret: SecretStr = Field(SecretStr(""), description="ccxt secret.")
    password: SecretStr = Field(
        SecretStr(""), description="ccxt password: the API passphrase some exchanges use."
    )
    uid: str = Field("", description="ccxt uid (account id), where the exchange needs one.")
    http_url: str = Field(
        "", description="Replaces scheme and host of every REST URL (testnet, proxy)."
    )
    ws_url: str = Field("", description="Replaces scheme and host of every websocket URL.")

    @field_validator("http_url", "ws_url")
    @classmethod
    def _base(cls, value: str, info: Any) -> str:
        schemes = ("http", "https") if info.field_name == "http_url" else ("ws", "wss")
        if value and (urlsplit(value).scheme not in schemes or not urlsplit(value).netloc):
            raise ValueError(f"{info.field_name} must look like {schemes[-1]}://host[:port]")
        return value

    def ccxt(self) -> dict[str, str]:
        """The credentials ccxt takes, only those set."""
        out = {
            "apiKey": self.api_key.get_secret_value(),
            "secret": self.secret.get_secret_value(),
            "password": self.password.get_secret_value(),
            "uid": self.uid,
        }
        return {key: value for key, value in out.items() if value}

    def api_overrides(self) -> dict[str, str] | None:
        out = {"http": self.http_url, "ws": self.ws_url}
        return {key: value for key, value in out.items() if value} or None


class Settings(ApiSettings, RiskSettings, TradingSettings):
    """Effective configuration; see docs/configuration.md for every field."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        env_nested_delimiter="__",
        extra="forbid",
        validate_default=True,
        frozen=True,
    )

    data_dir: Path = Field(Path("./.cryptodesk"), description="Where embedded state lives.")
    database_url: str = Field(
        "", description="SQLAlchemy async URL; empty means SQLite in DATA_DIR."
    )
    database_read_url: str = Field(
        "", description="Optional replica URL for analytics reads; empty = DATABASE_URL."
    )
    db_pool_size: int = Field(10, ge=1, le=1000, description="Connections kept per process.")
    db_max_overflow: int = Field(10, ge=0, le=1000, description="Extra connections under load.")
    db_pool_timeout: float = Field(10.0, gt=0, le=600, description="Seconds to wait for one.")
    db_connect_timeout: float = Field(10.0, gt=0, le=600, description="Seconds to connect.")
    db_statement_timeout_ms: int = Field(
        30_000, ge=0, le=3_600_000, description="PostgreSQL statement_timeout (0 = none)."
    )
    cache_url: str = Field("memory://", description="memory:// or redis://host:port/db")
    cache_key_prefix: str = Field("cryptodesk:", description="Prefix of every Redis key.")
    bus_url: str = Field("memory://", description="memory://, redis://... or kafka://h1:9092,...")
    bus_topic_prefix: str = Field(
        "cryptodesk.", description="Prefix of Kafka topics / Redis streams."
    )
    bus_partitions: int = Field(6, ge=1, le=10_000, description="Kafka partitions per topic.")
    bus_replication: int = Field(1, ge=1, le=10, description="Kafka replication factor.")
    bus_compression: Literal["none", "gzip"] = Field(
        "none", description="Kafka producer compression (gzip needs no extra library)."
    )
    bus_session_timeout_ms: int = Field(
        10_000, ge=500, le=300_000, description="Kafka: a silent consumer leaves its group after."
    )
    bus_heartbeat_interval_ms: int = Field(
        3_000, ge=100, le=60_000, description="Kafka: consumer heartbeat interval."
    )
    bus_rebalance_timeout_ms: int = Field(
        60_000, ge=500, le=600_000, description="Kafka: how long a rebalance may wait for members."
    )
    bus_stream_maxlen: int = Field(
        1_000_000, ge=1000, description="Redis Streams: approximate MAXLEN per stream."
    )
    bus_claim_idle_ms: int = Field(
        30_000, ge=0, description="Redis Streams: reclaim a dead consumer's messages after this."
    )
    exchanges: CommaList = Field(
        ["sim"], description="Exchange ids: sim, ccxt ids, or replay:PATH (a candle/trade file)."
    )
    symbols: CommaList = Field(["BTC/USDT", "ETH/USDT", "SOL/USDT"], description="BASE/QUOTE")
    intervals: CommaList = Field(["1m", "5m", "15m", "1h", "4h", "1d"], description="Candles")
    sim_speed: float = Field(1.0, gt=0, description="Simulated seconds per real second.")
    sim_seed: int = Field(42, ge=0, description="Seed of the simulated exchange.")
    sim_start: str = Field(
        "",
        description="Fixed start of the simulated timeline (ISO 8601 or epoch ms); a restart "
        "then continues the same stream. Empty: a new timeline from now on every start.",
    )
    sim_book_interval_ms: int = Field(1000, ge=10, description="Sim time between book snapshots.")
    replay_path: str = Field(
        "", description="File the replay exchange plays (set by CRYPTODESK_EXCHANGES=replay:PATH)."
    )
    replay_speed: str = Field("1", description="Replay seconds per real second, or max.")
    replay_symbol: str = Field("", description="Symbol of the replayed file; empty: first SYMBOLS.")
    replay_interval: str = Field("", description="Interval of a candle file; empty: inferred.")
    candle_grace_ms: int = Field(
        2000, ge=0, le=600_000, description="Event-time wait after an interval before it closes."
    )
    ingest_batch_size: int = Field(2000, ge=1, le=100_000, description="Events per db batch.")
    cache_recent_candles: int = Field(
        1000, ge=0, le=100_000, description="Finalized candles per series kept in the cache."
    )
    host: str = Field("127.0.0.1", description="API bind address.")
    port: int = Field(8000, ge=0, le=65535, description="API port (0 picks a free one).")
    log_format: Literal["auto", "json", "console"] = Field(
        "auto", description="auto = console on a TTY, JSON otherwise."
    )
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    shutdown_timeout: float = Field(10.0, gt=0, le=300, description="Seconds to flush on stop.")
    wait_for_dependencies: bool = Field(
        False,
        description="serve: retry unreachable database/cache/bus with backoff instead of exit 2.",
    )
    feed_stale_seconds: float = Field(
        60.0, gt=0, le=86_400, description="A feed silent this long is down in /readyz."
    )
    exchange_config: dict[str, ExchangeConfig] = Field(
        default_factory=dict, description="Per-exchange API keys and hosts, by exchange id."
    )
    exchange_breaker_failures: int = Field(
        5, ge=1, le=1000, description="Consecutive failed calls that open an exchange's breaker."
    )
    exchange_breaker_cooldown_seconds: float = Field(
        30.0, gt=0, le=3600, description="Seconds an open breaker waits before a probe."
    )
    exchange_max_wait_seconds: float = Field(
        300.0, gt=0, le=3600, description="Longest Retry-After an exchange call waits out."
    )
    coingecko_assets: CommaList = Field(
        [],
        description="Assets priced through CoinGecko: SYMBOL or SYMBOL=coin-id (ATOM,XMR=monero).",
    )
    coingecko_api_key: SecretStr = Field(SecretStr(""), description="CoinGecko API key (optional).")
    coingecko_api_key_type: Literal["demo", "pro"] = Field(
        "demo", description="demo: public API host; pro: pro-api.coingecko.com."
    )
    coingecko_vs_currency: str = Field("usd", description="Currency CoinGecko prices are in.")
    coingecko_base_url: str = Field("", description="Replaces CoinGecko's root URL (a proxy).")
    coingecko_calls_per_minute: float = Field(
        0, ge=0, le=10_000, description="CoinGecko rate; 0: the plan's published limit."
    )
    coingecko_refresh_seconds: float = Field(
        60.0, ge=1, le=86_400, description="scheduler: CoinGecko prices refreshed this often."
    )
    prefetch_candles_seconds: float = Field(
        3300.0, gt=0, le=7 * 86_400, description="scheduler: candles refreshed this often."
    )
    prefetch_tickers_seconds: float = Field(
        5.0, gt=0, le=86_400, description="scheduler: tickers refreshed this often."
    )
    prefetch_markets_seconds: float = Field(
        86_400.0, gt=0, le=7 * 86_400, description="scheduler: markets refreshed this often."
    )
    prefetch_jitter: float = Field(
        0.1, ge=0, lt=1, description="Each run moves by up to this fraction of its interval."
    )
    prefetch_lookback_candles: int = Field(
        500, ge=1, le=100_000, description="Candles a series with nothing stored starts with."
    )
    prefetch_lock_ttl_seconds: float = Field(
        30.0, gt=0, le=3600, description="Lease of a job's cross-process lock (renewed)."
    )
    signal_rules: list[SignalRuleConfig] = Field(
        default_factory=list,
        description="Signal rules ([[signal_rules]] tables; JSON in the environment); "
        "PUT /api/v1/signal-rules replaces them for every process.",
    )
    signal_rules_refresh_seconds: float = Field(
        5.0, gt=0, le=3600, description="compute: the stored rule set is checked this often."
    )
    accounts_key: SecretStr = Field(
        SecretStr(""),
        description="Fernet key encrypting exchange account credentials at rest "
        "(`cryptodesk accounts keygen`); empty: no credentials can be stored.",
    )
    report_currency: str = Field("USD", description="Currency of cost basis, PnL and reports.")
    par_assets: CommaList = Field(
        [],
        description="Assets valued 1:1 with REPORT_CURRENCY where a ledger entry gives no "
        "value (e.g. USDT,USDC for USD); empty: such trades need their value.",
    )
    cost_basis_method: Literal["fifo", "lifo", "hifo", "specific", "average", "uk"] = Field(
        "fifo", description="Default cost basis method of reports and valuation."
    )
    cost_basis_per_wallet: bool = Field(
        False, description="Lots pooled per account (wallet) instead of per asset (universal)."
    )
    long_term_days: int = Field(
        365, ge=1, le=36_500, description="Held longer than this: a long-term gain."
    )
    pnl_report_time: str = Field(
        "00:05", description="scheduler: UTC time (HH:MM) of the daily PnL report; empty: off."
    )
    pnl_report_dir: Path | None = Field(
        None, description="Where daily PnL reports are written; empty: DATA_DIR/reports."
    )
    pnl_report_formats: CommaList = Field(
        ["csv", "xlsx", "html"], description="Daily PnL report files: csv, xlsx, html."
    )
    sheets_credentials_file: str = Field(
        "", description="Google service account JSON; with SHEETS_SPREADSHEET_KEY: deliver."
    )
    sheets_spreadsheet_key: str = Field(
        "", description="Spreadsheet the daily PnL report is written to (one sheet per day)."
    )
    portfolio_sync_seconds: float = Field(
        0,
        ge=0,
        le=7 * 86_400,
        description="scheduler: exchange accounts synced this often; 0: off.",
    )

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        toml_path = Path(os.environ.get(f"{ENV_PREFIX}CONFIG", "cryptodesk.toml"))
        toml = TomlConfigSettingsSource(settings_cls, toml_file=toml_path)
        return (init_settings, env_settings, toml)

    @field_validator("sim_start")
    @classmethod
    def _sim_start(cls, value: str) -> str:
        if value.strip():
            try:
                parse_time(value, field="sim_start")
            except DomainError as exc:
                raise ValueError(str(exc)) from None
        return value.strip()

    @model_validator(mode="before")
    @classmethod
    def _replay_path(cls, data: Any) -> Any:
        """``replay:PATH`` in EXCHANGES names the exchange ``replay`` and its file."""
        if not isinstance(data, dict) or "exchanges" not in data:
            return data
        items = _split(data["exchanges"])
        if not isinstance(items, list):
            return data
        ids = []
        for item in items:
            if isinstance(item, str) and item.startswith("replay:"):
                data = {**data, "replay_path": item.removeprefix("replay:")}
                item = "replay"
            ids.append(item)
        return {**data, "exchanges": ids}

    @field_validator("replay_speed")
    @classmethod
    def _replay_speed(cls, value: str) -> str:
        from cryptodesk.adapters.exchanges.replay import parse_speed

        try:
            parse_speed(value)
        except DomainError as exc:
            raise ValueError(str(exc)) from None
        return value.strip().lower()

    @field_validator("replay_symbol")
    @classmethod
    def _replay_symbol(cls, value: str) -> str:
        if not value.strip():
            return ""
        try:
            return str(Symbol.parse(value))
        except DomainError as exc:
            raise ValueError(str(exc)) from None

    @field_validator("replay_interval")
    @classmethod
    def _replay_interval(cls, value: str) -> str:
        if not value.strip():
            return ""
        try:
            return Interval.parse(value.strip()).name
        except DomainError as exc:
            raise ValueError(str(exc)) from None

    @field_validator("exchanges", mode="before")
    @classmethod
    def _exchanges(cls, value: Any) -> Any:
        value = _split(value)
        for item in value:
            if not _EXCHANGE_ID.match(item):
                raise ValueError(
                    f"{item!r} is not an exchange id (lower case, like sim or binance)"
                )
        if not value:
            raise ValueError("at least one exchange is required")
        return value

    @field_validator("coingecko_assets", mode="before")
    @classmethod
    def _coingecko_assets(cls, value: Any) -> Any:
        from cryptodesk.services.reference_prices import parse_asset_map

        items = _split(value)
        try:
            parse_asset_map(items)
        except DomainError as exc:
            raise ValueError(str(exc)) from None
        return items

    @field_validator("coingecko_base_url")
    @classmethod
    def _coingecko_base_url(cls, value: str) -> str:
        if value and (
            urlsplit(value).scheme not in ("http", "https") or not urlsplit(value).netloc
        ):
            raise ValueError("must look like https://host[:port][/path]")
        return value

    @field_validator("report_currency")
    @classmethod
    def _report_currency(cls, value: str) -> str:
        if not re.fullmatch(r"[A-Z0-9]{2,16}", value.strip()):
            raise ValueError(f"{value!r} is not an asset code like USD or EUR")
        return value.strip()

    @field_validator("par_assets", mode="before")
    @classmethod
    def _par_assets(cls, value: Any) -> Any:
        items = [item.upper() for item in _split(value)]
        bad = [item for item in items if not re.fullmatch(r"[A-Z0-9]{2,16}", item)]
        if bad:
            raise ValueError(f"{', '.join(bad)} is not an asset code like USDT")
        return items

    @field_validator("pnl_report_time")
    @classmethod
    def _pnl_report_time(cls, value: str) -> str:
        value = value.strip()
        if value and not re.fullmatch(r"([01][0-9]|2[0-3]):[0-5][0-9]", value):
            raise ValueError(f"{value!r} is not a UTC time HH:MM")
        return value

    @field_validator("pnl_report_formats", mode="before")
    @classmethod
    def _pnl_report_formats(cls, value: Any) -> Any:
        items = _split(value)
        bad = [item for item in items if item not in ("csv", "xlsx", "html")]
        if bad or not items:
            raise ValueError(f"formats are csv, xlsx, html; got {', '.join(bad) or 'none'}")
        return items

    @field_validator("symbols", mode="before")
    @classmethod
    def _symbols(cls, value: Any) -> Any:
        try:
            symbols = [str(Symbol.parse(item)) for item in _split(value)]
        except DomainError as exc:
            raise ValueError(str(exc)) from None
        if not symbols:
            raise ValueError("at least one symbol is required")
        if len(set(symbols)) != len(symbols):
            raise ValueError("duplicate symbol")
        return symbols

    @field_validator("intervals", mode="before")
    @classmethod
    def _intervals(cls, value: Any) -> Any:
        items = _split(value)
        try:
            return [i.name for i in parse_intervals(",".join(items))]
        except DomainError as exc:
            raise ValueError(str(exc)) from None

    @field_validator("database_url", "database_read_url", "cache_url", "bus_url")
    @classmethod
    def _url_scheme(cls, value: str, info: Any) -> str:
        if info.field_name in ("database_url", "database_read_url") and value == "":
            return value
        scheme = value.split("://", 1)[0] if "://" in value else ""
        allowed = _URL_SCHEMES[info.field_name]
        if scheme not in allowed:
            raise ValueError(f"scheme must be one of {', '.join(s + '://' for s in allowed)}")
        _check_url(scheme, value)
        return value

    @property
    def breaker_interval(self) -> Interval:
        """The candles the circuit breaker watches: its setting, else the shortest built."""
        if self.circuit_breaker_interval:
            return Interval.parse(self.circuit_breaker_interval)
        return min((Interval.parse(i) for i in self.intervals), key=lambda iv: iv.ms)

    @model_validator(mode="after")
    def _replay_needs_a_file(self) -> Settings:
        if "replay" in self.exchanges and not self.replay_path:
            raise ValueError(f"{ENV_PREFIX}EXCHANGES: replay needs a file: use replay:PATH")
        if self.circuit_breaker_interval and self.circuit_breaker_interval not in self.intervals:
            raise ValueError(
                f"{ENV_PREFIX}CIRCUIT_BREAKER_INTERVAL: {self.circuit_breaker_interval} is not one "
                f"of {ENV_PREFIX}INTERVALS"
            )
        if self.replay_symbol and self.replay_symbol not in self.symbols:
            raise ValueError(
                f"{ENV_PREFIX}REPLAY_SYMBOL: {self.replay_symbol} is not one of {ENV_PREFIX}SYMBOLS"
            )
        return self

    @model_validator(mode="after")
    def _default_database(self) -> Settings:
        if not self.database_url:
            url = f"sqlite+aiosqlite:///{self.data_dir / 'cryptodesk.db'}"
            object.__setattr__(self, "database_url", url)
        return self

    @property
    def reports_dir(self) -> Path:
        return self.pnl_report_dir or self.data_dir / "reports"

    @property
    def is_embedded_db(self) -> bool:
        return self.database_url.startswith("sqlite")

    def masked(self) -> dict[str, Any]:
        """Effective settings for display: passwords in URLs replaced by ***, API keys
        and secrets by ********** (pydantic's SecretStr)."""
        out: dict[str, Any] = {}
        for name, value in self.model_dump(mode="json").items():
            if isinstance(value, str) and "://" in value:
                value = mask_url(value)
            out[name] = value
        return out


_HOST_PORT = re.compile(r"^[A-Za-z0-9._-]+:[0-9]{1,5}$")


def _check_url(scheme: str, value: str) -> None:
    """Reject URLs that cannot be right before anything tries to connect."""
    rest = value.split("://", 1)[1]
    if scheme == "kafka":
        hosts = rest.split("?", 1)[0].rstrip("/").split(",")
        bad = [h for h in hosts if not _HOST_PORT.match(h) or not 0 < int(h.rsplit(":")[1]) < 65536]
        if bad:
            raise ValueError(f"expected kafka://host:port[,host:port...], got {', '.join(bad)!r}")
    elif scheme in ("redis", "rediss", "postgresql+asyncpg"):
        parts = urlsplit(value)
        try:
            port = parts.port
        except ValueError:
            raise ValueError(f"invalid port in {mask_url(value)!r}") from None
        if not parts.hostname:
            raise ValueError(f"no host in {mask_url(value)!r}")
        if port == 0:
            raise ValueError(f"invalid port in {mask_url(value)!r}")


def mask_url(url: str) -> str:
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.rsplit("@", 1)[1]
    user = parts.username or ""
    return urlunsplit(parts._replace(netloc=f"{user}:***@{netloc}"))


# Settings whose errors name the nested field (table, key, field): how deep.
_NESTED = {"exchange_config": 3, "venue_fees": 3, "symbol_order_limits": 3, "order_limits": 2}


class SettingsError(Exception):
    """Raised with one human line naming the bad setting."""


def load_settings(**overrides: Any) -> Settings:
    """Build Settings or raise SettingsError with one line naming the setting."""
    try:
        return Settings(**overrides)
    except ValidationError as exc:
        err = exc.errors()[0]
        msg = err["msg"].removeprefix("Value error, ")
        if not err["loc"]:  # a check across settings names them itself
            raise SettingsError(f"invalid setting {msg}") from None
        # A nested setting is named the way the environment spells it.
        depth = _NESTED.get(str(err["loc"][0]), 1)
        path = err["loc"][:depth]
        name = ENV_PREFIX + "__".join(str(part).upper() for part in path)
        raise SettingsError(f"invalid setting {name}: {msg}") from None
    except (OSError, ValueError) as exc:  # unreadable or malformed cryptodesk.toml
        raise SettingsError(f"cannot read configuration: {exc}") from None
