"""A fake CoinGecko API v3 in CoinGecko's documented wire format, for the real
``CoinGeckoClient`` (aiohttp) to talk to.

Endpoints, under ``/api/v3`` as on both root URLs:

- ``/ping`` -> ``{"gecko_says": "(V3) To the Moon!"}``
  (https://docs.coingecko.com/reference/ping-server);
- ``/coins/list`` -> ``[{"id": "bitcoin", "symbol": "btc", "name": "Bitcoin"}, ...]``
  (https://docs.coingecko.com/reference/coins-list);
- ``/simple/price?ids=&vs_currencies=&include_last_updated_at=true`` ->
  ``{"bitcoin": {"usd": 67187.3358936566, "last_updated_at": 1711356300}}``,
  ``last_updated_at`` in epoch seconds; an unknown id is left out of the answer
  (https://docs.coingecko.com/reference/simple-price);
- ``/coins/{id}/market_chart?vs_currency=&days=&interval=daily`` ->
  ``{"prices": [[ms, price], ...], "market_caps": [...], "total_volumes": [...]}``:
  one point per day at 00:00 UTC, then one at the time of the request; an
  unknown id is HTTP 404 ``{"error": "coin not found"}``
  (https://docs.coingecko.com/reference/coins-id-market-chart).

Keys and errors (https://docs.coingecko.com/docs/errors-and-rate-limits,
https://docs.coingecko.com/reference/authentication): demo keys in the
``x-cg-demo-api-key`` header on the public host, pro keys in
``x-cg-pro-api-key`` on the pro host (``host="pro"``); a key sent to the other
plan's host is HTTP 400 with error code 10010 (pro key on the public host) or
10011 (demo key on the pro host); a missing or wrong key where one is needed is
HTTP 401 with error code 10002, as ``{"status": {"error_code": ..., "error_message": ...}}``.
A 429 (``rate_limit_next``) carries the same ``status`` object and a Retry-After.

Numbers are written from their ``Decimal`` text as is, so a test can check
that every digit arrives. ``answer_next`` sends any text (malformed payloads).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, Literal

from aiohttp import web

from tests.fakes.http import FakeServer, Handler

API = "/api/v3"
DAY_MS = 86_400_000
NOW_S = 1_711_983_682  # 2024-04-01T15:01:22Z, the documented chart example's last point
RATE_LIMITED = (
    "You've exceeded the Rate Limit. Please visit https://www.coingecko.com/en/api/pricing "
    "to subscribe to our API plans for higher rate limits."
)
WRONG_ROOT = (
    "If you are using {} API key, please change your root URL from "
    "{}.coingecko.com to {}.coingecko.com"
)
VS_CURRENCIES = frozenset({"usd", "eur", "btc", "eth"})


@dataclass(frozen=True)
class Coin:
    id: str
    symbol: str
    name: str


DEFAULT_COINS = (
    Coin("bitcoin", "btc", "Bitcoin"),
    Coin("ethereum", "eth", "Ethereum"),
    Coin("ethereum-wormhole", "eth", "Ethereum (Wormhole)"),
    Coin("cosmos", "atom", "Cosmos Hub"),
    Coin("shiba-inu", "shib", "Shiba Inu"),
)


def dumps(value: Any) -> str:
    """JSON with every ``Decimal`` written as its exact number text."""
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, dict):
        return "{" + ",".join(f"{json.dumps(str(k))}:{dumps(v)}" for k, v in value.items()) + "}"
    if isinstance(value, list | tuple):
        return "[" + ",".join(dumps(v) for v in value) + "]"
    return json.dumps(value)


def _answer(body: Any, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    return web.Response(
        text=dumps(body), status=status, headers=headers, content_type="application/json"
    )


def _status_error(http: int, code: int, message: str) -> web.Response:
    return _answer({"status": {"error_code": code, "error_message": message}}, http)


class FakeCoinGecko:
    def __init__(
        self,
        coins: Sequence[Coin] = DEFAULT_COINS,
        *,
        host: Literal["public", "pro"] = "public",
        keys: dict[str, Literal["demo", "pro"]] | None = None,
        now_s: int = NOW_S,
    ) -> None:
        self.server = FakeServer()
        self.coins = list(coins)
        self.host = host
        self.keys = dict(keys or {})
        self.now_s = now_s  # server clock, epoch seconds; tests move it
        self.prices: dict[tuple[str, str], tuple[Decimal, int]] = {}
        self.daily: dict[tuple[str, str], list[tuple[int, Decimal, Decimal, Decimal]]] = {}
        self.headers: list[dict[str, str]] = []  # of every request that reached a route
        self._raw: dict[str, list[tuple[int, str]]] = {}
        self.server.app.middlewares.append(self._middleware)
        s = self.server
        s.route("GET", f"{API}/ping", self._ping)
        s.route("GET", f"{API}/coins/list", self._coins_list)
        s.route("GET", f"{API}/simple/price", self._simple_price)
        s.route("GET", f"{API}/coins/{{id}}/market_chart", self._market_chart)

    # -- lifecycle ------------------------------------------------------------------
    async def start(self) -> None:
        await self.server.start()

    async def stop(self) -> None:
        await self.server.stop()

    @property
    def api_url(self) -> str:
        """The root URL a client uses in place of https://api.coingecko.com/api/v3."""
        return f"{self.server.base_url}{API}"

    def calls(self, path: str) -> list[dict[str, str]]:
        """Query strings of every request made to ``path`` (relative to ``/api/v3``)."""
        return [query for _, p, query in self.server.requests if p == API + path]

    # -- state the tests drive ------------------------------------------------------
    def set_price(self, coin_id: str, vs: str, price: str, *, updated_s: int) -> None:
        self.prices[(coin_id, vs)] = (Decimal(price), updated_s)

    def add_daily(self, coin_id: str, vs: str, rows: Sequence[tuple[int, str, str, str]]) -> None:
        """``(00:00 UTC epoch ms, price, market cap, volume)`` rows, oldest first."""
        self.daily.setdefault((coin_id, vs), []).extend(
            (ts, Decimal(p), Decimal(c), Decimal(v)) for ts, p, c, v in rows
        )

    def rate_limit_next(self, path: str, *, retry_after: str, times: int = 1) -> None:
        body = {"status": {"error_code": 429, "error_message": RATE_LIMITED}}
        self.server.fail_next(API + path, 429, body, {"Retry-After": retry_after}, times=times)

    def fail_next(self, path: str, status: int, body: Any = None, *, times: int = 1) -> None:
        self.server.fail_next(API + path, status, body, times=times)

    def answer_next(self, path: str, text: str, *, status: int = 200) -> None:
        """The next request to ``path`` gets ``text`` as its body, whatever it is."""
        self._raw.setdefault(API + path, []).append((status, text))

    # -- routes -----------------------------------------------------------------------
    @web.middleware
    async def _middleware(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        self.headers.append(dict(request.headers))
        refused = self._check_key(request)
        if refused is not None:
            return refused
        queued = self._raw.get(request.path)
        if queued:
            status, text = queued.pop(0)
            return web.Response(text=text, status=status, content_type="application/json")
        return await handler(request)

    def _check_key(self, request: web.Request) -> web.Response | None:
        demo = request.headers.get("x-cg-demo-api-key")
        pro = request.headers.get("x-cg-pro-api-key")
        if self.host == "public" and pro is not None:
            return _status_error(400, 10010, WRONG_ROOT.format("Pro", "api", "pro-api"))
        if self.host == "pro" and demo is not None:
            return _status_error(400, 10011, WRONG_ROOT.format("Demo", "pro-api", "api"))
        key = pro if self.host == "pro" else demo
        if key is None:
            return _status_error(401, 10002, "API Key Missing") if self.host == "pro" else None
        wanted = "pro" if self.host == "pro" else "demo"
        if self.keys.get(key) != wanted:
            return _status_error(401, 10002, "Invalid API Key")
        return None

    async def _ping(self, request: web.Request) -> web.StreamResponse:
        return _answer({"gecko_says": "(V3) To the Moon!"})

    async def _coins_list(self, request: web.Request) -> web.StreamResponse:
        return _answer([{"id": c.id, "symbol": c.symbol, "name": c.name} for c in self.coins])

    async def _simple_price(self, request: web.Request) -> web.StreamResponse:
        q = request.query
        if "vs_currencies" not in q:
            return _answer({"error": "Missing parameter vs_currencies"}, 400)
        ids = [i for i in q.get("ids", "").split(",") if i]
        vs_list = [v for v in q["vs_currencies"].split(",") if v]
        with_time = q.get("include_last_updated_at") == "true"
        known = {c.id for c in self.coins}
        out: dict[str, dict[str, Any]] = {}
        for coin_id in ids:
            if coin_id not in known:
                continue  # unknown ids are left out
            entry: dict[str, Any] = {}
            for vs in vs_list:
                if (coin_id, vs) in self.prices:
                    price, updated = self.prices[(coin_id, vs)]
                    entry[vs] = price
                    if with_time:
                        entry["last_updated_at"] = updated
            out[coin_id] = entry
        return _answer(out)

    async def _market_chart(self, request: web.Request) -> web.StreamResponse:
        coin_id = request.match_info["id"]
        q = request.query
        if coin_id not in {c.id for c in self.coins}:
            return _answer({"error": "coin not found"}, 404)
        vs = q.get("vs_currency", "")
        if vs not in VS_CURRENCIES:
            return _answer({"error": "invalid vs_currency"}, 400)
        days = q.get("days", "")
        if not (days == "max" or days.isdigit()):
            return _answer({"error": "invalid days"}, 400)
        rows = list(self.daily.get((coin_id, vs), []))
        now_ms = self.now_s * 1000
        if days != "max":
            rows = [r for r in rows if r[0] >= now_ms - int(days) * DAY_MS]
        if (coin_id, vs) in self.prices and rows:  # the point at the time of the request
            rows.append((now_ms, self.prices[(coin_id, vs)][0], rows[-1][2], rows[-1][3]))
        return _answer({
            "prices": [[ts, p] for ts, p, _, _ in rows],
            "market_caps": [[ts, c] for ts, _, c, _ in rows],
            "total_volumes": [[ts, v] for ts, _, _, v in rows],
        })  # fmt: skip
