"""One exchange account's private data through ccxt: balances, own trades,
deposits and withdrawals, as ledger entries exact to the last digit.

ccxt turns the exchange's decimal strings into floats; every amount here is
taken from the exchange's own fields (``info``) where they hold the text
(``RAW_TRADE``, ``RAW_TRANSFER``, ``_raw_balances``), and from ccxt's number
(shortest repr, which is exact for what a float can hold) otherwise.

Each exchange pages its history its own way (``TRADE_PAGING``,
``TRANSFER_WINDOW_MS``): binance serves own trades per symbol, oldest first,
by ``startTime`` and then ``fromId``, and deposits/withdrawals in windows of
less than 90 days paged by ``offset``; kraken serves 50 trades a page, newest
first, by ``ofs`` within a fixed ``end``. Others walk ccxt's ``since``.

Every request goes through the exchange's guard (rate limit, Retry-After,
retries, circuit breaker) when one is given. Credentials go to ccxt and
nowhere else: they are never logged, and errors name the account, not the key.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Iterable, Sequence
from decimal import Decimal
from typing import Any, Final, Literal, Protocol, TypeVar

import ccxt.async_support as ccxt_async  # type: ignore[import-untyped]
import ccxt.pro as ccxt_pro  # type: ignore[import-untyped]
import structlog

from cryptodesk.adapters.exchanges.base import UnknownExchangeError
from cryptodesk.adapters.exchanges.ccxt_exchange import CallGuard, brief
from cryptodesk.adapters.exchanges.ccxt_quirks import OPTIONS, rebase
from cryptodesk.domain.errors import DomainError
from cryptodesk.domain.timeutil import now_ms
from cryptodesk.portfolio.ledger import LedgerEntry, to_decimal

T = TypeVar("T")
log = structlog.get_logger(__name__)
_ZERO = Decimal(0)
DAY_MS: Final = 86_400_000
TradePaging = Literal["from_id", "offset", "since"]

TRADE_PAGING: dict[str, TradePaging] = {"binance": "from_id", "kraken": "offset"}
# binance serves own trades one symbol at a time and numbers them per symbol
# (ids restart on every pair); kraken's txids are unique per account.
SYMBOL_REQUIRED: frozenset[str] = frozenset({"binance"})
IDS_PER_MARKET: frozenset[str] = frozenset({"binance"})
# Exact text of (amount, cost, fee) in a trade's ``info``.
RAW_TRADE: dict[str, tuple[str, str, str]] = {
    "binance": ("qty", "quoteQty", "commission"),
    "kraken": ("vol", "cost", "fee"),
}
# Exact text of (amount, fee) in a deposit's or withdrawal's ``info``.
RAW_TRANSFER: dict[str, tuple[str, str]] = {
    "binance": ("amount", "transactionFee"),
    "kraken": ("amount", "fee"),
}
# binance: deposit and withdrawal history take windows of less than 90 days.
TRANSFER_WINDOW_MS: dict[str, int] = {"binance": 90 * DAY_MS - 1}
PAGE: dict[str, int] = {"binance": 1000, "kraken": 50}
_AUTH_TEXT = ("invalid key", "invalid signature", "api-key", "signature for this request")


class AccountCredentials(Protocol):
    """What an exchange needs to sign requests (``portfolio.accounts.ExchangeCredentials``;
    a ``uid`` attribute, where present, is passed on too)."""

    @property
    def api_key(self) -> str: ...
    @property
    def secret(self) -> str: ...
    @property
    def password(self) -> str | None: ...


class ExchangeAuthError(DomainError):
    """The exchange refused the account's credentials (bad key, signature or permissions)."""


class RedactingLogger(logging.LoggerAdapter):  # type: ignore[type-arg]
    """ccxt's logger with the credentials blanked: at DEBUG ccxt logs every
    request's headers, and the API key travels in one."""

    def __init__(self, logger: logging.Logger, secrets: Iterable[str | None]) -> None:
        super().__init__(logger, {})
        self._secrets = sorted({s for s in secrets if s}, key=len, reverse=True)

    def log(self, level: int, msg: object, *args: object, **kwargs: Any) -> None:
        if self.isEnabledFor(level):
            text = str(msg) % args if args else str(msg)
            for secret in self._secrets:
                text = text.replace(secret, "<hidden>")
            self.logger.log(level, text, **kwargs)


def exact(raw: object, fallback: object, *, what: str) -> Decimal | None:
    """The exchange's decimal text when there is one, else ccxt's number (a float
    by its shortest repr); None if neither is there."""
    for value in (raw, fallback):
        if isinstance(value, float):
            return Decimal(repr(value))
        if value is not None and value != "":
            return to_decimal(value, field=what)
    return None


class PrivateCcxt:
    """A ccxt async client of one exchange account: credentials, our per-exchange
    options, a logger that never prints a secret, ``http_url`` / ``ws_url`` (tests
    point them at fakes) and the call ``guard`` (an ``ExchangeGuard``, or a factory
    taking the ccxt exchange, whose guard is then closed with the client). ``pro``
    makes it a ccxt.pro client (websockets as well as REST)."""

    def __init__(
        self,
        exchange_id: str,
        credentials: AccountCredentials,
        *,
        http_url: str | None,
        config: dict[str, Any] | None,
        guard: CallGuard | Callable[[Any], CallGuard] | None,
        options: dict[str, Any] | None = None,
        ws_url: str | None = None,
        pro: bool = False,
    ) -> None:
        module = ccxt_pro if pro else ccxt_async
        if exchange_id not in module.exchanges:
            raise UnknownExchangeError(f"unknown exchange {exchange_id!r}: ccxt has no such id")
        settings: dict[str, Any] = {"enableRateLimit": True, "timeout": 10_000, **(config or {})}
        settings["options"] = {**OPTIONS.get(exchange_id, {}), **(options or {}),
                               **(settings.get("options") or {})}  # fmt: skip
        settings.update(apiKey=credentials.api_key, secret=credentials.secret)
        if credentials.password:
            settings["password"] = credentials.password
        uid = getattr(credentials, "uid", None)
        if uid:
            settings["uid"] = uid
        hidden = (credentials.api_key, credentials.secret, credentials.password, uid)
        settings["logger"] = RedactingLogger(logging.getLogger("ccxt.base.exchange"), hidden)
        self._exchange: Any = getattr(module, exchange_id)(settings)
        bases = {k: url for k, url in (("http", http_url), ("ws", ws_url)) if url}
        if bases:
            self._exchange.urls["api"] = rebase(self._exchange.urls["api"], bases)
        self.exchange_id = exchange_id
        self._owns_guard = guard is not None and not isinstance(guard, CallGuard)
        self._guard: CallGuard | None = None
        if guard is not None and not isinstance(guard, CallGuard):
            self._guard = guard(self._exchange)
        elif guard is not None:
            self._guard = guard
            install = getattr(guard, "install", None)
            if callable(install):
                install(self._exchange)

    async def close(self) -> None:
        await self._exchange.close()
        if self._owns_guard and self._guard is not None:
            closing = getattr(self._guard, "close", None)
            if closing is not None:
                await closing()


class CcxtAccountClient(PrivateCcxt):
    """Private REST of one exchange account. ``account`` names the ledger account
    the entries belong to (default: the exchange id). ``http_url`` replaces
    scheme and host of every API URL (tests point it at fakes). ``guard``: an
    ``ExchangeGuard`` or a factory taking the ccxt exchange (see ``CcxtExchange``).
    ``clock`` says when "now" is for the history windows."""

    def __init__(
        self,
        exchange_id: str,
        credentials: AccountCredentials,
        *,
        account: str | None = None,
        http_url: str | None = None,
        config: dict[str, Any] | None = None,
        guard: CallGuard | Callable[[Any], CallGuard] | None = None,
        clock: Callable[[], int] = now_ms,
    ) -> None:
        super().__init__(exchange_id, credentials, http_url=http_url, config=config, guard=guard)
        self.account = account or exchange_id
        self._clock = clock
        self._markets: dict[str, Any] | None = None

    def __repr__(self) -> str:
        return f"CcxtAccountClient({self.exchange_id!r}, account={self.account!r})"

    @property
    def needs_symbols(self) -> bool:
        """Own trades are served one symbol per request: ``fetch_trades`` needs the list."""
        return self.exchange_id in SYMBOL_REQUIRED

    async def __aenter__(self) -> CcxtAccountClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # -- requests ---------------------------------------------------------------------
    async def _call(self, endpoint: str, method: Callable[..., Awaitable[T]], *args: Any) -> T:
        def factory() -> Awaitable[T]:
            return method(*args)

        try:
            if self._guard is None:
                return await factory()
            # cost 0: ccxt's throttle, which is the guard's, charges each request its weight.
            return await self._guard.call(factory, cost=0.0, endpoint=endpoint)
        except (ccxt_async.AuthenticationError, ccxt_async.PermissionDenied) as exc:
            raise self._auth_error(exc) from None
        except ccxt_async.ExchangeError as exc:
            if any(text in str(exc).lower() for text in _AUTH_TEXT):
                raise self._auth_error(exc) from None
            raise

    def _auth_error(self, exc: Exception) -> ExchangeAuthError:
        log.warning("exchange refused the account's credentials", exchange=self.exchange_id,
                    account=self.account, error=brief(exc))  # fmt: skip
        return ExchangeAuthError(
            f"{self.exchange_id} refused the API credentials of account {self.account!r} "
            f"({brief(exc)}): check the key, its secret and its read permissions",
            field="credentials",
        )

    async def markets(self) -> dict[str, Any]:
        if self._markets is None:
            ex = self._exchange
            self._markets = await self._call("load_markets", ex.load_markets)
        assert self._markets is not None
        return self._markets

    async def symbols_for(self, assets: Iterable[str]) -> list[str]:
        """Spot symbols whose base and quote are both among ``assets`` (trading one
        means having held the other), delisted ones included."""
        wanted = set(assets)
        return sorted(
            symbol for symbol, m in (await self.markets()).items()
            if m.get("spot", True) and m.get("base") in wanted and m.get("quote") in wanted
        )  # fmt: skip

    # -- balances ---------------------------------------------------------------------
    async def fetch_balances(self) -> dict[str, Decimal]:
        """Total (free + held) per asset, zero balances dropped."""
        await self.markets()
        ex = self._exchange
        raw = await self._call("fetch_balance", ex.fetch_balance)
        amounts = _raw_balances(self.exchange_id, raw.get("info"), ex.safe_currency_code)
        if amounts is None:
            amounts = {}
            for code, total in (raw.get("total") or {}).items():
                value = exact(None, total, what=f"balance {code}")
                if value is not None:
                    amounts[code] = value
        return {code: v for code, v in sorted(amounts.items()) if v != _ZERO}

    # -- trades -----------------------------------------------------------------------
    async def fetch_trades(
        self, since_ms: int, symbols: Sequence[str] | None = None
    ) -> list[LedgerEntry]:
        """Own trades from ``since_ms`` on, oldest first. ``symbols`` is required
        where the exchange serves trades per symbol (``needs_symbols``)."""
        markets = await self.markets()
        paging = TRADE_PAGING.get(self.exchange_id, "since")
        raw: list[dict[str, Any]] = []
        if self.needs_symbols:
            for symbol in symbols or ():
                if symbol not in markets:
                    raise DomainError(f"{self.exchange_id} does not list {symbol}", field="symbols")
                raw += await self._trade_pages(paging, symbol, since_ms)
        else:
            raw = await self._trade_pages(paging, None, since_ms)
        entries = {e.id: e for e in (self._trade_entry(t, markets) for t in raw)}
        return sorted(entries.values(), key=lambda e: (e.timestamp, e.id))

    async def _trade_pages(
        self, paging: TradePaging, symbol: str | None, since: int
    ) -> list[dict[str, Any]]:
        fetch, size = self._exchange.fetch_my_trades, PAGE.get(self.exchange_id, 500)
        out: list[dict[str, Any]] = []
        if paging == "offset":  # newest first within a fixed end: new trades cannot shift pages
            params = {"start": str(since // 1000 - 1), "end": str(self._clock() // 1000 + 1)}
            while True:
                ofs = {**params, "ofs": len(out)}
                page = await self._call("fetch_my_trades", fetch, symbol, None, None, ofs)
                out += page
                if len(page) < size:
                    return out
        page = await self._call("fetch_my_trades", fetch, symbol, since, size)
        while True:
            out += page
            if len(page) < size:
                return out
            if paging == "from_id":
                after = {"fromId": max(int(t["id"]) for t in page) + 1}
                page = await self._call("fetch_my_trades", fetch, symbol, None, size, after)
            else:
                newest = max(int(t["timestamp"]) for t in page)
                if newest <= since:  # a full page of one millisecond: nothing more by time
                    return out
                since = newest
                page = await self._call("fetch_my_trades", fetch, symbol, since, size)

    def _trade_entry(self, trade: dict[str, Any], markets: dict[str, Any]) -> LedgerEntry:
        info = trade.get("info") or {}
        market = markets.get(trade.get("symbol") or "")
        if market is None:
            raise DomainError(f"{self.exchange_id} trade {trade.get('id')} is in an unknown market")
        keys = RAW_TRADE.get(self.exchange_id, ("", "", ""))
        what = f"{self.exchange_id} trade {trade.get('id')}"
        amount = exact(info.get(keys[0]), trade.get("amount"), what=f"{what} amount")
        cost = exact(info.get(keys[1]), trade.get("cost"), what=f"{what} cost")
        fee_asset, fee = _fee(trade, info.get(keys[2]), what)
        trade_id = str(trade["id"])
        external = f"{market['id']}:{trade_id}" if self.exchange_id in IDS_PER_MARKET else trade_id
        return LedgerEntry(
            id=f"{self.exchange_id}:trade:{external}", timestamp=int(trade["timestamp"]),
            kind="buy" if trade.get("side") == "buy" else "sell", account=self.account,
            asset=market["base"], amount=amount or _ZERO, counter_asset=market["quote"],
            counter_amount=cost, fee_asset=fee_asset, fee_amount=fee, external_id=external,
        )  # fmt: skip

    # -- deposits and withdrawals -----------------------------------------------------
    async def fetch_deposits(self, since_ms: int) -> list[LedgerEntry]:
        """Completed deposits from ``since_ms`` on (pending and failed ones are left out)."""
        return await self._transfers("deposit", since_ms)

    async def fetch_withdrawals(self, since_ms: int) -> list[LedgerEntry]:
        """Completed withdrawals from ``since_ms`` on; the fee is the withdrawal's ``fee``."""
        return await self._transfers("withdrawal", since_ms)

    async def _transfers(
        self, kind: Literal["deposit", "withdrawal"], since: int
    ) -> list[LedgerEntry]:
        await self.markets()
        ex = self._exchange
        fetch = ex.fetch_deposits if kind == "deposit" else ex.fetch_withdrawals
        endpoint = f"fetch_{kind}s"
        raw: list[dict[str, Any]] = []
        window, size = TRANSFER_WINDOW_MS.get(self.exchange_id), PAGE.get(self.exchange_id)
        if window is None:  # one request covers the range
            until = {"until": self._clock() + 1_000}
            raw = await self._call(endpoint, fetch, None, since, None, until)
        else:
            start, now = since, self._clock()
            while start <= now:
                params = {"endTime": start + window, "offset": 0}
                while True:
                    page = await self._call(endpoint, fetch, None, start, size, params)
                    raw += page
                    if size is None or len(page) < size:
                        break
                    params = {**params, "offset": params["offset"] + len(page)}
                start += window + 1
        entries = {}
        for record in raw:
            entry = self._transfer_entry(kind, record)
            if entry is not None:
                entries[entry.id] = entry
        return sorted(entries.values(), key=lambda e: (e.timestamp, e.id))

    def _transfer_entry(
        self, kind: Literal["deposit", "withdrawal"], record: dict[str, Any]
    ) -> LedgerEntry | None:
        if record.get("status") != "ok":
            return None
        info = record.get("info") or {}
        keys = RAW_TRANSFER.get(self.exchange_id, ("", ""))
        what = f"{self.exchange_id} {kind} {record.get('id')}"
        amount = exact(info.get(keys[0]), record.get("amount"), what=f"{what} amount")
        fee_info = record.get("fee") or {}
        fee = exact(info.get(keys[1]), fee_info.get("cost"), what=f"{what} fee")
        if amount is None or amount == _ZERO:
            log.warning("zero transfer skipped", exchange=self.exchange_id, kind=kind,
                        account=self.account, transfer=record.get("id"))  # fmt: skip
            return None
        external = str(record.get("id") or record.get("txid"))
        if kind == "deposit":
            external = str(record.get("txid") or record.get("id"))
        asset = record["currency"]
        has_fee = fee is not None and fee != _ZERO
        return LedgerEntry(
            id=f"{self.exchange_id}:{kind}:{external}", timestamp=int(record["timestamp"]),
            kind=kind, account=self.account, asset=asset, amount=amount,
            fee_asset=(fee_info.get("currency") or asset) if has_fee else None,
            fee_amount=fee if has_fee else None, external_id=external,
        )  # fmt: skip


def _fee(trade: dict[str, Any], raw: object, what: str) -> tuple[str | None, Decimal | None]:
    """The one fee of a trade: (asset, amount), or (None, None) when it cost nothing."""
    fees = [f for f in (trade.get("fees") or [trade.get("fee")]) if f and f.get("cost")]
    assets = {f.get("currency") for f in fees}
    if not fees:
        return None, None
    if len(assets) > 1 or None in assets:
        named = sorted(map(str, assets))
        raise DomainError(f"{what} has fees in several or unknown assets: {named}")
    if len(fees) == 1:
        amount = exact(raw, fees[0]["cost"], what=f"{what} fee")
    else:
        amount = sum((exact(None, f["cost"], what=f"{what} fee") or _ZERO for f in fees), _ZERO)
    if amount is None or amount == _ZERO:
        return None, None
    return str(fees[0]["currency"]), amount


def _raw_balances(
    exchange_id: str, info: Any, code_of: Callable[[str], str]
) -> dict[str, Decimal] | None:
    """Totals from the exchange's own answer, where its shape is known."""
    totals: dict[str, Decimal] = {}
    if exchange_id == "binance" and isinstance(info, dict):
        for row in info.get("balances") or ():
            code = code_of(row["asset"])
            totals[code] = totals.get(code, _ZERO) + Decimal(row["free"]) + Decimal(row["locked"])
        return totals
    if exchange_id == "kraken" and isinstance(info, dict) and isinstance(info.get("result"), dict):
        for asset_id, row in info["result"].items():
            text = row.get("balance") if isinstance(row, dict) else row
            code = code_of(asset_id)
            totals[code] = totals.get(code, _ZERO) + Decimal(str(text))
        return totals
    return None
