"""CoinGecko's public REST API (v3) as a reference price source, over aiohttp.

Endpoints (https://docs.coingecko.com/reference/introduction): ``/ping``,
``/coins/list`` (ids, symbols, names), ``/simple/price`` (latest prices with
``last_updated_at`` in epoch seconds) and ``/coins/{id}/market_chart`` with
``interval=daily`` (``[epoch ms, value]`` pairs at 00:00 UTC, plus a last pair
at the time of the request).

Keyless and demo keys use https://api.coingecko.com/api/v3 (demo key in the
``x-cg-demo-api-key`` header); pro keys https://pro-api.coingecko.com/api/v3
with ``x-cg-pro-api-key``. A key sent to the other plan's root URL is refused
with HTTP 400 and error code 10010 or 10011
(https://docs.coingecko.com/docs/errors-and-rate-limits).

Every request passes an ``ExchangeGuard`` named ``coingecko``: the leaky-bucket
limiter at CoinGecko's published rate (shared through Redis like an
exchange's), a 429's Retry-After pausing every caller, retries with backoff,
and the circuit breaker. JSON is parsed with ``parse_float=Decimal`` so a
price is exactly the text CoinGecko sent. A malformed entry is logged,
counted in ``cryptodesk_exchange_bad_payloads_total{exchange="coingecko"}``
and skipped.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping, Sequence
from decimal import Decimal
from typing import Any, Literal
from urllib.parse import quote

import aiohttp
import structlog
from prometheus_client import CollectorRegistry

from cryptodesk.adapters.exchanges.ccxt_metrics import CcxtMetrics
from cryptodesk.adapters.exchanges.guard import ExchangeGuard, UpstreamHTTPError
from cryptodesk.adapters.prices import (
    ChartPoint,
    CoinListing,
    SpotPrice,
    SpotPrices,
    UnknownCoinError,
)
from cryptodesk.domain.timeutil import MAX_TS_MS, MIN_TS_MS

__all__ = [
    "CALLS_PER_MINUTE",
    "PRO_BASE_URL",
    "PUBLIC_BASE_URL",
    "SOURCE",
    "CoinGeckoAuthError",
    "CoinGeckoClient",
    "CoinGeckoError",
    "CoinGeckoHTTPError",
    "KeyType",
    "MalformedPayloadError",
    "UnknownCoinError",
    "coingecko_guard",
]

log = structlog.get_logger(__name__)

SOURCE = "coingecko"
PUBLIC_BASE_URL = "https://api.coingecko.com/api/v3"
PRO_BASE_URL = "https://pro-api.coingecko.com/api/v3"
KeyType = Literal["demo", "pro"]
Plan = Literal["public", "demo", "pro"]
# Published limits: keyless and demo about 30 calls a minute (keyless is per IP
# and shared with whoever else calls from it); pro plans from 500 a minute.
CALLS_PER_MINUTE: dict[Plan, float] = {"public": 30.0, "demo": 30.0, "pro": 500.0}
MAX_IDS_PER_CALL = 100  # keeps the query string well under URL length limits
DAY_MS = 86_400_000
_KEY_HEADER: dict[KeyType, str] = {"demo": "x-cg-demo-api-key", "pro": "x-cg-pro-api-key"}
_WRONG_ROOT_URL = (10010, 10011)  # a pro key on the demo host, a demo key on the pro host
_PLAN_LIMITS = (10005, 10012)  # an endpoint, or a history range, beyond the plan


class CoinGeckoError(Exception):
    """Something CoinGecko answered that the caller cannot use."""


class CoinGeckoHTTPError(UpstreamHTTPError, CoinGeckoError):
    """An HTTP error status; the guard reads ``status`` and Retry-After from it."""

    def __init__(
        self, status: int, headers: Mapping[str, str], message: str, *, error_code: int | None
    ) -> None:
        super().__init__(status, headers, message)
        self.error_code = error_code


class CoinGeckoAuthError(CoinGeckoHTTPError):
    """The API key is missing, wrong, or of the other plan: retrying cannot help."""


class MalformedPayloadError(CoinGeckoError):
    """A whole answer could not be read (already logged and counted)."""


class _Malformed(ValueError):
    """One entry of an answer could not be read."""


def coingecko_guard(
    *,
    plan: Plan = "public",
    calls_per_minute: float | None = None,
    redis_url: str | None = None,
    key_prefix: str = "cryptodesk:",
    metrics_registry: CollectorRegistry | None = None,
    **options: Any,
) -> ExchangeGuard:
    """The ``coingecko`` guard at the plan's published rate (or ``calls_per_minute``)."""
    rate = calls_per_minute or CALLS_PER_MINUTE[plan]
    if not rate > 0:
        raise ValueError("calls_per_minute must be positive")
    return ExchangeGuard(
        SOURCE,
        rate_limit_ms=60_000.0 / rate,
        redis_url=redis_url,
        key_prefix=key_prefix,
        metrics_registry=metrics_registry,
        **options,
    )


class CoinGeckoClient:
    """CoinGecko's REST API; see the module docstring. Nothing connects until a call.

    ``base_url`` replaces the plan's root URL (a proxy, or a local server in
    tests). Without ``guard`` one is built at the plan's published rate; a
    guard passed in is the caller's to close unless ``close_guard``.
    """

    def __init__(
        self,
        *,
        api_key: str | None = None,
        key_type: KeyType = "demo",
        base_url: str | None = None,
        guard: ExchangeGuard | None = None,
        metrics_registry: CollectorRegistry | None = None,
        timeout: float = 10.0,
        close_guard: bool | None = None,
    ) -> None:
        if key_type not in _KEY_HEADER:
            raise ValueError(f"key_type must be demo or pro, got {key_type!r}")
        self.plan: Plan = key_type if api_key else "public"
        default = PRO_BASE_URL if self.plan == "pro" else PUBLIC_BASE_URL
        self.base_url = (base_url or default).rstrip("/")
        self._headers = {"accept": "application/json"}
        if api_key:
            self._headers[_KEY_HEADER[key_type]] = api_key
        # ``close`` closes the guard it built, or one handed over with close_guard=True.
        self._owns_guard = guard is None if close_guard is None else close_guard
        self.guard = guard or coingecko_guard(plan=self.plan, metrics_registry=metrics_registry)
        self._metrics = CcxtMetrics.of(metrics_registry or CollectorRegistry())
        self._timeout = aiohttp.ClientTimeout(total=timeout)
        self._session: aiohttp.ClientSession | None = None

    @property
    def source(self) -> str:
        return SOURCE

    # ---- endpoints ------------------------------------------------------------------

    async def ping(self) -> str:
        """CoinGecko's status line (``(V3) To the Moon!``)."""
        body = await self._get("/ping", {}, endpoint="ping")
        if not isinstance(body, dict) or not isinstance(body.get("gecko_says"), str):
            raise self._unreadable("ping", body)
        return str(body["gecko_says"])

    async def coins_list(self) -> list[CoinListing]:
        """Every coin CoinGecko lists (about 15,000: fetch rarely and keep it)."""
        body = await self._get("/coins/list", {}, endpoint="coins/list")
        if not isinstance(body, list):
            raise self._unreadable("coins/list", body)
        listings: list[CoinListing] = []
        for row in body:
            fields = [row.get(k) for k in ("id", "symbol", "name")] if isinstance(row, dict) else []
            if len(fields) == 3 and all(isinstance(f, str) and f for f in fields):
                coin_id, symbol, name = (str(f) for f in fields)
                listings.append(CoinListing(coin_id, symbol.lower(), name))
            else:
                self._bad_payload("coins/list", f"unreadable coin {_brief(row)}")
        return listings

    async def simple_price(self, coin_ids: Sequence[str], vs_currency: str) -> SpotPrices:
        """Latest prices of ``coin_ids`` in ``vs_currency`` (one call per 100 ids)."""
        vs = vs_currency.lower()
        prices: dict[str, SpotPrice] = {}
        missing: set[str] = set()
        malformed: set[str] = set()
        for chunk in _chunks(list(dict.fromkeys(coin_ids)), MAX_IDS_PER_CALL):
            query = {"ids": ",".join(chunk), "vs_currencies": vs, "include_last_updated_at": "true"}
            try:
                body = await self._get("/simple/price", query, endpoint="simple/price")
            except MalformedPayloadError:
                malformed.update(chunk)
                continue
            if not isinstance(body, dict):
                self._bad_payload("simple/price", f"expected an object, got {_brief(body)}")
                malformed.update(chunk)
                continue
            for coin_id in chunk:
                entry = body.get(coin_id)
                # An unknown id is left out; a coin without a price in ``vs`` is
                # an entry without that key.
                if entry is None or (isinstance(entry, dict) and vs not in entry):
                    missing.add(coin_id)
                    continue
                try:
                    prices[coin_id] = _spot_price(coin_id, vs, entry)
                except _Malformed as exc:
                    self._bad_payload("simple/price", f"{coin_id}: {exc}")
                    malformed.add(coin_id)
        return SpotPrices(prices, frozenset(missing), frozenset(malformed))

    async def daily_chart(self, coin_id: str, vs_currency: str, days: int) -> list[ChartPoint]:
        """Daily points (00:00 UTC) of the last ``days`` days, oldest first.

        The last pair CoinGecko adds at the time of the request is not a
        daily point and is left out: ``simple_price`` is the latest price.
        """
        if days < 1:
            raise ValueError("days must be at least 1")
        path = f"/coins/{quote(coin_id, safe='')}/market_chart"
        query = {"vs_currency": vs_currency.lower(), "days": str(days), "interval": "daily"}
        endpoint = "coins/market_chart"
        try:
            body = await self._get(path, query, endpoint=endpoint)
        except CoinGeckoHTTPError as exc:
            if exc.status == 404:
                raise UnknownCoinError(SOURCE, coin_id) from None
            raise
        if not isinstance(body, dict) or not isinstance(body.get("prices"), list):
            raise self._unreadable(endpoint, body)
        prices = self._series(body["prices"], endpoint, nullable=False)
        caps = self._series(body.get("market_caps") or [], endpoint, nullable=True)
        volumes = self._series(body.get("total_volumes") or [], endpoint, nullable=True)
        return [
            ChartPoint(ts, price, caps.get(ts), volumes.get(ts))
            for ts, price in sorted(prices.items())
            if price is not None and ts % DAY_MS == 0
        ]

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None
        if self._owns_guard:
            await self.guard.close()

    # ---- transport --------------------------------------------------------------------

    async def _get(self, path: str, query: Mapping[str, str], *, endpoint: str) -> Any:
        """The decoded JSON of one GET, through the guard."""
        url = self.base_url + path

        async def once() -> bytes:
            session = self._session_now()
            async with session.get(url, params=query, headers=self._headers) as resp:
                body = await resp.read()
                if resp.status >= 400:
                    raise self._http_error(resp.status, resp.headers, body)
                return body

        raw = await self.guard.call(once, endpoint=endpoint)
        try:
            return json.loads(raw, parse_float=Decimal, parse_constant=_no_constant)
        except ValueError as exc:  # not JSON, not UTF-8, or NaN/Infinity
            raise self._unreadable(endpoint, raw[:120], reason=str(exc)) from None

    def _session_now(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(timeout=self._timeout)
        return self._session

    def _http_error(
        self, status: int, headers: Mapping[str, str], body: bytes
    ) -> CoinGeckoHTTPError:
        code, text = _error_detail(body)
        what = f"HTTP {status}" + (f", error code {code}" if code is not None else "")
        auth = status in (401, 403) or (status == 400 and code in _WRONG_ROOT_URL)
        if not auth:
            return CoinGeckoHTTPError(
                status, headers, f"CoinGecko answered {what}: {text}", error_code=code
            )
        if code in _PLAN_LIMITS:
            hint = f"not available on the {self.plan} plan"
        elif self.plan == "public":
            hint = "the keyless API refused the request; configure a demo or pro API key"
        else:
            hint = (
                f"check the {self.plan} API key: demo keys go to {PUBLIC_BASE_URL} in "
                f"x-cg-demo-api-key, pro keys to {PRO_BASE_URL} in x-cg-pro-api-key"
            )
        message = f"CoinGecko refused the request ({what}: {text}); {hint}"
        return CoinGeckoAuthError(status, headers, message, error_code=code)

    # ---- payloads -----------------------------------------------------------------------

    def _series(self, rows: Any, endpoint: str, *, nullable: bool) -> dict[int, Decimal | None]:
        """``[[epoch ms, value], ...]`` by time; unreadable rows are counted and skipped."""
        out: dict[int, Decimal | None] = {}
        if not isinstance(rows, list):
            self._bad_payload(endpoint, f"expected a list of points, got {_brief(rows)}")
            return out
        for row in rows:
            try:
                if not isinstance(row, list) or len(row) != 2:
                    raise _Malformed(f"expected [time, value], got {_brief(row)}")
                ts = _epoch_ms(row[0], scale=1)
                # Market caps and volumes may be null or 0 (no supply data); prices may not.
                out[ts] = None if nullable and row[1] is None else _amount(row[1], zero=nullable)
            except _Malformed as exc:
                self._bad_payload(endpoint, str(exc))
        return out

    def _unreadable(self, endpoint: str, body: Any, *, reason: str = "") -> MalformedPayloadError:
        detail = reason or f"unexpected answer {_brief(body)}"
        self._bad_payload(endpoint, detail)
        return MalformedPayloadError(f"CoinGecko {endpoint}: {detail}")

    def _bad_payload(self, endpoint: str, detail: str) -> None:
        self._metrics.bad_payloads.labels(SOURCE, endpoint).inc()
        log.warning("malformed CoinGecko payload skipped", endpoint=endpoint, error=detail)


def _spot_price(coin_id: str, vs: str, entry: Any) -> SpotPrice:
    if not isinstance(entry, dict):
        raise _Malformed(f"expected an object, got {_brief(entry)}")
    if "last_updated_at" not in entry:
        raise _Malformed("no last_updated_at")
    as_of = _epoch_ms(entry["last_updated_at"], scale=1000)
    return SpotPrice(coin_id, vs, _amount(entry[vs], zero=False), as_of)


def _amount(value: Any, *, zero: bool) -> Decimal:
    """A price (above zero), market cap or volume (``zero`` allowed): a JSON number, exact."""
    if isinstance(value, bool) or not isinstance(value, Decimal | int):
        raise _Malformed(f"expected a number, got {_brief(value)}")
    number = Decimal(value)
    if not (number >= 0 if zero else number > 0):
        kind = "non-negative" if zero else "positive"
        raise _Malformed(f"expected a {kind} number, got {number}")
    return number


def _epoch_ms(value: Any, *, scale: int) -> int:
    """An integral epoch time (seconds when ``scale`` is 1000) as milliseconds."""
    if isinstance(value, bool) or not isinstance(value, Decimal | int):
        raise _Malformed(f"expected an epoch time, got {_brief(value)}")
    if isinstance(value, Decimal) and value != value.to_integral_value():
        raise _Malformed(f"expected an integral epoch time, got {value}")
    ms = int(value) * scale
    if not MIN_TS_MS <= ms < MAX_TS_MS:
        raise _Malformed(f"epoch time {value} is out of range")
    return ms


def _error_detail(body: bytes) -> tuple[int | None, str]:
    """``(error_code, message)`` from CoinGecko's error shapes: ``{"status":
    {"error_code", "error_message"}}``, the same nested in ``"error"``, or
    ``{"error": "text"}``."""
    try:
        data = json.loads(body)
    except ValueError:
        return None, body[:200].decode("utf-8", "replace").strip() or "no details"
    if isinstance(data, dict) and isinstance(data.get("error"), dict):
        data = data["error"]
    if isinstance(data, dict) and isinstance(data.get("status"), dict):
        status = data["status"]
        code = status.get("error_code")
        code = code if isinstance(code, int) and not isinstance(code, bool) else None
        return code, str(status.get("error_message") or "no details")
    if isinstance(data, dict) and isinstance(data.get("error"), str):
        return None, data["error"]
    return None, _brief(data)


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a number")


def _chunks(items: list[str], size: int) -> Iterator[list[str]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def _brief(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 120 else text[:117] + "..."
