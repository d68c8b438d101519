import pytest

from cryptodesk.config import Settings, SettingsError, load_settings, mask_url

pytestmark = pytest.mark.usefixtures("clean_env")


def test_embedded_defaults():
    s = load_settings()
    assert str(s.data_dir) == ".cryptodesk"
    assert s.database_url == "sqlite+aiosqlite:///.cryptodesk/cryptodesk.db"
    assert s.is_embedded_db
    assert s.cache_url == "memory://"
    assert s.bus_url == "memory://"
    assert s.exchanges == ["sim"]
    assert s.symbols == ["BTC/USDT", "ETH/USDT", "SOL/USDT"]
    assert s.intervals == ["1m", "5m", "15m", "1h", "4h", "1d"]
    assert s.sim_speed == 1.0
    assert (s.host, s.port) == ("127.0.0.1", 8000)
    assert s.log_format == "auto"


def test_environment_overrides(monkeypatch):
    monkeypatch.setenv("CRYPTODESK_SYMBOLS", "btc/usdt, eth-usdt")
    monkeypatch.setenv("CRYPTODESK_INTERVALS", "1h,1m")
    monkeypatch.setenv("CRYPTODESK_DATA_DIR", "/tmp/x")
    monkeypatch.setenv("CRYPTODESK_SIM_SPEED", "60")
    s = load_settings()
    assert s.symbols == ["BTC/USDT", "ETH/USDT"]
    assert s.intervals == ["1m", "1h"]
    assert s.database_url == "sqlite+aiosqlite:////tmp/x/cryptodesk.db"
    assert s.sim_speed == 60


def test_toml_file_is_read_and_env_wins(monkeypatch, tmp_path):
    (tmp_path / "cryptodesk.toml").write_text('port = 9001\nsymbols = ["SOL/USDT"]\n')
    assert load_settings().port == 9001
    assert load_settings().symbols == ["SOL/USDT"]
    monkeypatch.setenv("CRYPTODESK_PORT", "9002")
    assert load_settings().port == 9002
    other = tmp_path / "other.toml"
    other.write_text("sim_seed = 7\n")
    monkeypatch.setenv("CRYPTODESK_CONFIG", str(other))
    assert load_settings().sim_seed == 7


@pytest.mark.parametrize(
    ("name", "value", "fragment"),
    [
        ("PORT", "abc", "CRYPTODESK_PORT"),
        ("PORT", "70000", "CRYPTODESK_PORT"),
        ("SIM_SPEED", "0", "CRYPTODESK_SIM_SPEED"),
        ("SYMBOLS", "BTCUSDT", "CRYPTODESK_SYMBOLS: symbol 'BTCUSDT'"),
        ("SYMBOLS", "BTC/USDT,btc/usdt", "duplicate symbol"),
        ("INTERVALS", "1m,7m", "CRYPTODESK_INTERVALS: unknown interval '7m'"),
        ("EXCHANGES", "Bin ance", "CRYPTODESK_EXCHANGES"),
        ("EXCHANGES", "", "CRYPTODESK_EXCHANGES"),
        ("CACHE_URL", "memcached://x", "CRYPTODESK_CACHE_URL: scheme must be one of"),
        ("BUS_URL", "nats://x", "CRYPTODESK_BUS_URL"),
        ("DATABASE_URL", "mysql://x", "CRYPTODESK_DATABASE_URL"),
        ("LOG_FORMAT", "xml", "CRYPTODESK_LOG_FORMAT"),
    ],
)
def test_invalid_values_name_the_setting(monkeypatch, name, value, fragment):
    monkeypatch.setenv(f"CRYPTODESK_{name}", value)
    with pytest.raises(SettingsError) as info:
        load_settings()
    message = str(info.value)
    assert fragment in message
    assert "\n" not in message


def test_malformed_toml_is_one_line(tmp_path):
    (tmp_path / "cryptodesk.toml").write_text("port = = 1\n")
    with pytest.raises(SettingsError, match="cannot read configuration"):
        load_settings()


def test_unknown_toml_key_is_rejected(tmp_path):
    (tmp_path / "cryptodesk.toml").write_text("prot = 1\n")
    with pytest.raises(SettingsError, match="CRYPTODESK_PROT"):
        load_settings()


def test_masking_hides_passwords_only():
    assert mask_url("postgresql+asyncpg://app:s3cret@db:5432/x") == (
        "postgresql+asyncpg://app:***@db:5432/x"
    )
    assert mask_url("redis://cache:6379/0") == "redis://cache:6379/0"
    s = Settings(database_url="postgresql+asyncpg://app:s3cret@db/x", cache_url="redis://:pw@c/0")
    shown = s.masked()
    assert "s3cret" not in str(shown)
    assert shown["cache_url"] == "redis://:***@c/0"


@pytest.mark.parametrize(
    ("name", "value", "fragment"),
    [
        ("BUS_URL", "kafka://", "expected kafka://host:port"),
        ("BUS_URL", "kafka://h1:9092,h2", "'h2'"),
        ("BUS_URL", "kafka://h1:99999", "'h1:99999'"),
        ("CACHE_URL", "redis://localhost:notaport/0", "invalid port"),
        ("CACHE_URL", "redis://:pw@/0", "no host"),
        ("DATABASE_URL", "postgresql+asyncpg://u:secret@db:0/x", "invalid port"),
        ("DATABASE_READ_URL", "mysql://replica/x", "CRYPTODESK_DATABASE_READ_URL"),
    ],
)
def test_malformed_urls_are_rejected_without_leaking_secrets(monkeypatch, name, value, fragment):
    monkeypatch.setenv(f"CRYPTODESK_{name}", value)
    with pytest.raises(SettingsError) as info:
        load_settings()
    assert fragment in str(info.value)
    assert f"CRYPTODESK_{name}" in str(info.value)
    assert "secret" not in str(info.value)


def test_production_urls_are_accepted(monkeypatch):
    monkeypatch.setenv("CRYPTODESK_BUS_URL", "kafka://k1:9092,k2.internal:9093")
    monkeypatch.setenv("CRYPTODESK_CACHE_URL", "redis://:pw@cache:6379/1")
    monkeypatch.setenv("CRYPTODESK_DATABASE_URL", "postgresql+asyncpg://app:pw@db:5432/desk")
    monkeypatch.setenv("CRYPTODESK_DATABASE_READ_URL", "postgresql+asyncpg://app:pw@replica/desk")
    s = load_settings()
    assert s.bus_url == "kafka://k1:9092,k2.internal:9093"
    assert not s.is_embedded_db


def test_kafka_url_options_are_allowed(monkeypatch):
    monkeypatch.setenv("CRYPTODESK_BUS_URL", "kafka://k1:9092?idempotent=false")
    assert load_settings().bus_url == "kafka://k1:9092?idempotent=false"


def test_exchange_keys_from_the_environment_and_the_file(monkeypatch, tmp_path):
    (tmp_path / "cryptodesk.toml").write_text(
        '[exchange_config.kraken]\napi_key = "k-file"\nsecret = "s-file"\n'
    )
    monkeypatch.setenv("CRYPTODESK_EXCHANGE_CONFIG__BINANCE__API_KEY", "k-env")
    monkeypatch.setenv("CRYPTODESK_EXCHANGE_CONFIG__BINANCE__SECRET", "s-env")
    monkeypatch.setenv("CRYPTODESK_EXCHANGE_CONFIG__BINANCE__HTTP_URL", "http://127.0.0.1:9")
    s = load_settings()
    # Tables of the file and the environment merge, exchange by exchange.
    assert set(s.exchange_config) == {"binance", "kraken"}
    binance = s.exchange_config["binance"]
    assert binance.ccxt() == {"apiKey": "k-env", "secret": "s-env"}
    assert binance.api_overrides() == {"http": "http://127.0.0.1:9"}
    shown = s.masked()["exchange_config"]["binance"]
    assert shown["api_key"] == shown["secret"] == "**********"
    assert "k-env" not in repr(s)
    assert "s-env" not in str(s.masked())
    monkeypatch.delenv("CRYPTODESK_EXCHANGE_CONFIG__BINANCE__API_KEY")
    monkeypatch.delenv("CRYPTODESK_EXCHANGE_CONFIG__BINANCE__SECRET")
    monkeypatch.delenv("CRYPTODESK_EXCHANGE_CONFIG__BINANCE__HTTP_URL")
    kraken = load_settings().exchange_config["kraken"]
    assert kraken.ccxt() == {"apiKey": "k-file", "secret": "s-file"}
    assert kraken.api_overrides() is None


@pytest.mark.parametrize(
    ("name", "value", "fragment"),
    [
        ("CRYPTODESK_EXCHANGE_CONFIG__BINANCE__WS_URL", "http://x", "ws_url must look like wss://"),
        ("CRYPTODESK_EXCHANGE_CONFIG__BINANCE__NOPE", "1", "Extra inputs are not permitted"),
    ],
)
def test_bad_exchange_config_names_the_nested_setting(monkeypatch, name, value, fragment):
    monkeypatch.setenv(name, value)
    with pytest.raises(SettingsError) as err:
        load_settings()
    assert str(err.value).startswith(f"invalid setting {name}: ")
    assert fragment in str(err.value)


def test_coingecko_settings(monkeypatch):
    monkeypatch.setenv("CRYPTODESK_COINGECKO_ASSETS", "atom, XMR=monero")
    monkeypatch.setenv("CRYPTODESK_COINGECKO_API_KEY", "CG-secret")
    s = load_settings()
    assert s.coingecko_assets == ["atom", "XMR=monero"]
    assert s.coingecko_api_key.get_secret_value() == "CG-secret"
    assert "CG-secret" not in str(s.masked())
    monkeypatch.setenv("CRYPTODESK_COINGECKO_ASSETS", "XMR=Monero!")
    with pytest.raises(SettingsError, match=r"^invalid setting CRYPTODESK_COINGECKO_ASSETS: "):
        load_settings()
    monkeypatch.setenv("CRYPTODESK_COINGECKO_ASSETS", "XMR")
    monkeypatch.setenv("CRYPTODESK_COINGECKO_BASE_URL", "ftp://x")
    with pytest.raises(SettingsError, match=r"^invalid setting CRYPTODESK_COINGECKO_BASE_URL: "):
        load_settings()


def test_portfolio_settings_are_checked(monkeypatch):
    monkeypatch.setenv("CRYPTODESK_PAR_ASSETS", "usdt, usdc")
    monkeypatch.setenv("CRYPTODESK_PNL_REPORT_FORMATS", "csv,html")
    settings = load_settings()
    assert settings.par_assets == ["USDT", "USDC"]
    assert settings.pnl_report_formats == ["csv", "html"]
    assert settings.reports_dir == settings.data_dir / "reports"
    for name, value, message in [
        ("PAR_ASSETS", "US DT", "is not an asset code"),
        ("PNL_REPORT_TIME", "25:00", "is not a UTC time HH:MM"),
        ("PNL_REPORT_FORMATS", "pdf", "formats are csv, xlsx, html"),
        ("REPORT_CURRENCY", "usd$", "is not an asset code"),
    ]:
        monkeypatch.setenv(f"CRYPTODESK_{name}", value)
        with pytest.raises(SettingsError, match=message):
            load_settings()
        monkeypatch.delenv(f"CRYPTODESK_{name}")


def test_paper_exchanges_default_to_every_ingested_exchange(monkeypatch):
    monkeypatch.setenv("CRYPTODESK_EXCHANGES", "sim,binance")
    assert load_settings().paper_venue_exchanges() == ["sim", "binance"]
    monkeypatch.setenv("CRYPTODESK_PAPER_EXCHANGES", "none")
    assert load_settings().paper_venue_exchanges() == []
    monkeypatch.setenv("CRYPTODESK_PAPER_EXCHANGES", " binance ")
    assert load_settings().paper_venue_exchanges() == ["binance"]
    monkeypatch.setenv("CRYPTODESK_PAPER_EXCHANGES", "binance,kraken")
    with pytest.raises(SettingsError) as err:
        load_settings()
    assert "kraken, which is not ingested (exchanges: sim, binance)" in str(err.value)


def test_venue_fees_from_the_file_and_the_environment(monkeypatch, tmp_path):
    from decimal import Decimal as D

    from cryptodesk.trading.instruments import Fees

    assert load_settings().fee_schedule() == {}
    (tmp_path / "cryptodesk.toml").write_text(
        '[venue_fees.kraken]\ntaker = "0.0026"\nmaker = "0.0016"\n'
        "[venue_fees.binance]\ntaker = 0.001\nmaker = -0.0001\n"
    )
    s = load_settings()
    assert s.fee_schedule() == {"kraken": Fees(D("0.0026"), D("0.0016")),
                                "binance": Fees(D("0.001"), D("-0.0001"))}  # fmt: skip
    # The arbitrage watch takes the taker rates unless its own setting names the exchange.
    assert s.arbitrage_fees() == {"kraken": D("0.0026"), "binance": D("0.001")}
    monkeypatch.setenv("CRYPTODESK_ARBITRAGE_TAKER_FEES", "kraken=0.004")
    assert load_settings().arbitrage_fees() == {"kraken": D("0.004"), "binance": D("0.001")}
    # The environment adds to (and overrides) the file's tables, as JSON or one by one.
    monkeypatch.setenv("CRYPTODESK_VENUE_FEES", '{"sim": {"taker": "0.0005", "maker": "0"}}')
    monkeypatch.setenv("CRYPTODESK_VENUE_FEES__KRAKEN__TAKER", "0.003")
    assert load_settings().fee_schedule() == {"kraken": Fees(D("0.003"), D("0.0016")),
                                              "binance": Fees(D("0.001"), D("-0.0001")),
                                              "sim": Fees(D("0.0005"), D(0))}  # fmt: skip


@pytest.mark.parametrize(
    ("value", "fragment"),
    [
        (
            '{"kraken": {"taker": "-0.001", "maker": "0"}}',
            "_FEES__KRAKEN__TAKER: Input should be gr",
        ),
        (
            '{"kraken": {"taker": "0.001", "maker": "1"}}',
            "_FEES__KRAKEN__MAKER: Input should be le",
        ),
        ('{"kraken": {"taker": "NaN", "maker": "0"}}', "_FEES__KRAKEN__TAKER: Input should be a f"),
        ('{"kraken": {"taker": "0.001"}}', "CRYPTODESK_VENUE_FEES__KRAKEN__MAKER: Field required"),
        ('{"kraken": {"taker": "0.001", "maker": "0", "fee": 1}}', "_KRAKEN__FEE: Extra inputs"),
        ('{"Kraken Pro": {"taker": "0.001", "maker": "0"}}', "'Kraken Pro', which is not an ex"),
    ],
)
def test_bad_venue_fees_name_the_setting(monkeypatch, value, fragment):
    monkeypatch.setenv("CRYPTODESK_VENUE_FEES", value)
    with pytest.raises(SettingsError, match=fragment):
        load_settings()


def test_order_limits_default_off_and_per_symbol_tables_override_what_they_set(
    monkeypatch, tmp_path
):
    from decimal import Decimal as D

    from cryptodesk.trading.pretrade import RiskLimits

    assert load_settings().risk_limits() == dict.fromkeys(
        ["BTC/USDT", "ETH/USDT", "SOL/USDT"], RiskLimits()
    )
    (tmp_path / "cryptodesk.toml").write_text(
        '[order_limits]\nprice_band = "0.05"\nmax_order_quantity = "100"\nsubmit_rate = 5\n'
        '[symbol_order_limits."btc-usdt"]\nmax_order_quantity = "2"\nmax_open_orders = 10\n'
    )
    limits = load_settings().risk_limits()
    base = RiskLimits(price_band=D("0.05"), max_order_quantity=D(100), submit_rate=D(5))
    assert limits["ETH/USDT"] == limits["SOL/USDT"] == base
    assert limits["BTC/USDT"] == RiskLimits(price_band=D("0.05"), max_order_quantity=D(2),
                                            max_open_orders=10, submit_rate=D(5))  # fmt: skip
    # The environment: one limit at a time, or a symbol's table as JSON (null turns one off).
    monkeypatch.setenv("CRYPTODESK_ORDER_LIMITS__MAX_ORDER_NOTIONAL", "250000")
    monkeypatch.setenv("CRYPTODESK_SYMBOL_ORDER_LIMITS", '{"SOL/USDT": {"price_band": null}}')
    limits = load_settings().risk_limits()
    assert limits["ETH/USDT"].max_order_notional == D(250_000)
    assert (limits["SOL/USDT"].price_band, limits["SOL/USDT"].max_order_notional) == (
        None, D(250_000))  # fmt: skip


@pytest.mark.parametrize(
    ("name", "value", "fragment"),
    [
        ("ORDER_LIMITS__PRICE_BAND", "1.5", "_ORDER_LIMITS__PRICE_BAND: Input should be less"),
        ("ORDER_LIMITS__MAX_OPEN_ORDERS", "0", "_LIMITS__MAX_OPEN_ORDERS: Input should be gr"),
        ("ORDER_LIMITS__SUBMIT_RATE", "-1", "_LIMITS__SUBMIT_RATE: Input should be greater"),
        ("ORDER_LIMITS__MAX_POSITON", "1", "CRYPTODESK_ORDER_LIMITS__MAX_POSITON: Extra inputs"),
        ("SYMBOL_ORDER_LIMITS", '{"ETH/USDT": {"price_band": "1"}}',
         "CRYPTODESK_SYMBOL_ORDER_LIMITS__ETH/USDT__PRICE_BAND: Input should be less"),
        ("SYMBOL_ORDER_LIMITS", '{"DOGE/USDT": {"max_order_quantity": "1"}}',
         "names DOGE/USDT, which is not traded \\(symbols: BTC/USDT, ETH/USDT, SOL/USDT\\)"),
        ("SYMBOL_ORDER_LIMITS", '{"BTCUSDT": {}}', "BTCUSDT"),
    ],
)  # fmt: skip
def test_bad_order_limits_name_the_setting(monkeypatch, name, value, fragment):
    monkeypatch.setenv(f"CRYPTODESK_{name}", value)
    with pytest.raises(SettingsError, match=fragment):
        load_settings()


def test_self_trade_prevention_is_one_of_two(monkeypatch):
    assert load_settings().self_trade_prevention == "cancel_incoming"
    monkeypatch.setenv("CRYPTODESK_SELF_TRADE_PREVENTION", "cancel_resting")
    assert load_settings().self_trade_prevention == "cancel_resting"
    monkeypatch.setenv("CRYPTODESK_SELF_TRADE_PREVENTION", "cancel_both")
    with pytest.raises(SettingsError, match="CRYPTODESK_SELF_TRADE_PREVENTION: Input should be"):
        load_settings()


def test_instrument_grids_per_traded_symbol(monkeypatch, tmp_path):
    from decimal import Decimal as D

    assert load_settings().instrument_grids() == {}
    (tmp_path / "cryptodesk.toml").write_text(
        '[instruments."sol-usdt"]\ntick_size = "0.001"\nlot_size = "0.01"\n'
        '[instruments."BTC/USDT"]\nmaker_fee = "-0.0001"\n'
    )
    assert load_settings().instrument_grids() == {
        "SOL/USDT": {"tick_size": D("0.001"), "lot_size": D("0.01")},
        "BTC/USDT": {"maker_fee": D("-0.0001")},
    }
    for value, fragment in (
        ('{"BTC/USDT": {"tick_size": "0"}}', "CRYPTODESK_INSTRUMENTS: Input should be greater"),
        ('{"BTC/USDT": {"tick": "1"}}', "CRYPTODESK_INSTRUMENTS: Extra inputs"),
        ('{"DOGE/USDT": {"tick_size": "1"}}', "instruments names DOGE/USDT, which is not traded"),
    ):
        monkeypatch.setenv("CRYPTODESK_INSTRUMENTS", value)
        with pytest.raises(SettingsError, match=fragment):
            load_settings()
