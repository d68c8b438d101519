"""The private (SIGNED, USER_DATA) side of the fake Binance: balances, own
trades, deposit and withdrawal history, mounted on a ``FakeBinance`` server.

Request security (https://developers.binance.com/docs/binance-spot-api-docs/rest-api/request-security
and .../rest-api/endpoint-security-type): the key in the ``X-MBX-APIKEY``
header; ``timestamp`` (ms) within ``recvWindow`` (default 5000) of the
server's clock; ``signature`` = hex HMAC SHA256, keyed with the secret, of the
query string before it (then the body). A wrong signature is HTTP 400
``{"code": -1022, "msg": "Signature for this request is not valid."}``, an
unknown key HTTP 401 ``{"code": -2015, "msg": "Invalid API-key, IP, or
permissions for action."}`` (https://developers.binance.com/docs/binance-spot-api-docs/errors).

Endpoints:
- ``GET /api/v3/account`` (https://developers.binance.com/docs/binance-spot-api-docs/rest-api/account-endpoints#account-information-user_data):
  ``balances`` as ``{"asset", "free", "locked"}`` strings; ``omitZeroBalances``.
- ``GET /api/v3/myTrades`` (same page, "Account trade list"): one ``symbol``
  per call, oldest first; ``fromId`` (trades with id >= it), ``startTime``
  alone (trades from then on), both times (at most 24 hours apart, else
  -1127), or neither (the newest); ``limit`` default 500, max 1000. Trade ids
  count per symbol.
- ``GET /sapi/v1/capital/deposit/hisrec`` (https://developers.binance.com/docs/wallet/capital/deposite-history)
  and ``GET /sapi/v1/capital/withdraw/history`` (https://developers.binance.com/docs/wallet/capital/withdraw-history):
  ``startTime``/``endTime`` less than 90 days apart (default: the last 90
  days), ``offset`` and ``limit`` (default and max 1000), newest first.
  Deposit status 1 is success (0 pending, 6 credited but locked); withdrawal
  status 6 is completed (1 cancelled, 3 rejected, 4 processing, 5 failure).
  A withdrawal's ``amount`` is what left for the address; ``transactionFee``
  was taken besides it.

The balances move with what is recorded, as the exchange's would:
``add_trade``, ``add_deposit``, ``add_withdrawal``; ``set_balance`` changes a
balance with no history behind it (an unexplained difference).
"""

from __future__ import annotations

import hashlib
import hmac
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from decimal import ROUND_DOWN, Decimal
from typing import Any

from aiohttp import web

from tests.fakes.binance import FakeBinance

DAY = 86_400_000
_ZERO = Decimal(0)
Route = Callable[[web.Request], Awaitable[web.StreamResponse]]


def _error(status: int, code: int, msg: str) -> web.Response:
    return web.json_response({"code": code, "msg": msg}, status=status)


def _fmt(value: Decimal) -> str:
    return f"{value:.8f}"


def sign(secret: str, payload: str) -> str:
    return hmac.new(secret.encode(), payload.encode(), hashlib.sha256).hexdigest()


class FakeBinanceAccount:
    def __init__(
        self,
        exchange: FakeBinance,
        *,
        api_key: str,
        secret: str,
        clock: Callable[[], int] = lambda: int(time.time() * 1000),
    ) -> None:
        self.exchange = exchange
        self.api_key = api_key
        self.secret = secret
        self.clock = clock  # the server's clock for ``timestamp`` checks (ms)
        self.balances: dict[str, list[Decimal]] = {}  # asset -> [free, locked]
        self.trades: dict[str, list[dict[str, Any]]] = {}
        self.deposits: list[dict[str, Any]] = []
        self.withdrawals: list[dict[str, Any]] = []
        self._next_trade_id: dict[str, int] = {}
        self._next_order_id = 900_000
        s = exchange.server
        for path, handler in (
            ("/api/v3/account", self._account),
            ("/api/v3/myTrades", self._my_trades),
            ("/sapi/v1/capital/deposit/hisrec", self._deposits),
            ("/sapi/v1/capital/withdraw/history", self._withdrawals),
        ):
            s.route("GET", path, self._signed(handler))

    def calls(self, path: str) -> list[dict[str, str]]:
        return self.exchange.rest_calls(path)

    # -- state the tests drive --------------------------------------------------------
    def set_balance(self, asset: str, free: str, locked: str = "0") -> None:
        self.balances[asset] = [Decimal(free), Decimal(locked)]

    def _move(self, asset: str, delta: Decimal) -> None:
        self.balances.setdefault(asset, [_ZERO, _ZERO])[0] += delta

    def add_trade(
        self,
        symbol_id: str,
        *,
        side: str,
        price: str,
        qty: str,
        commission: str,
        commission_asset: str,
        time: int,
        maker: bool = False,
    ) -> dict[str, Any]:
        listing = self.exchange.listings[symbol_id]
        tid = self._next_trade_id.get(symbol_id, 28_457)
        self._next_trade_id[symbol_id] = tid + 1
        self._next_order_id += 1
        # The quote quantity at the quote asset's 8 decimals, as Binance books it.
        quote_qty = (Decimal(price) * Decimal(qty)).quantize(Decimal("1E-8"), ROUND_DOWN)
        trade = {
            "symbol": symbol_id, "id": tid, "orderId": self._next_order_id, "orderListId": -1,
            "price": price, "qty": qty, "quoteQty": str(quote_qty),
            "commission": commission, "commissionAsset": commission_asset, "time": time,
            "isBuyer": side == "buy", "isMaker": maker, "isBestMatch": True,
        }  # fmt: skip
        self.trades.setdefault(symbol_id, []).append(trade)
        sign_ = 1 if side == "buy" else -1
        self._move(listing.base, sign_ * Decimal(qty))
        self._move(listing.quote, -sign_ * quote_qty)
        self._move(commission_asset, -Decimal(commission))
        return trade

    def add_deposit(
        self, coin: str, amount: str, *, time: int, tx_id: str, status: int = 1,
        network: str | None = None, deposit_id: str | None = None,
    ) -> dict[str, Any]:  # fmt: skip
        record = {
            "id": deposit_id or str(769_800_519_366_885_376 + len(self.deposits)),
            "amount": amount, "coin": coin, "network": network or coin, "status": status,
            "address": "bnb136ns6lfw4zs5hg4n85vdthaad7hq5m4gtkgf23", "addressTag": "",
            "txId": tx_id, "insertTime": time, "completeTime": time, "transferType": 0,
            "confirmTimes": "1/1", "unlockConfirm": 0, "walletType": 0,
        }  # fmt: skip
        self.deposits.append(record)
        if status in (1, 6):
            self._move(coin, Decimal(amount))
        return record

    def add_withdrawal(
        self, coin: str, amount: str, fee: str, *, time: int, status: int = 6,
        withdrawal_id: str | None = None, tx_id: str = "",
    ) -> dict[str, Any]:  # fmt: skip
        stamp = datetime.fromtimestamp(time / 1000, UTC).strftime("%Y-%m-%d %H:%M:%S")
        record = {
            "id": withdrawal_id or f"b6ae22b3aa844210a7041aee7589{len(self.withdrawals):04d}",
            "amount": amount, "transactionFee": fee, "coin": coin, "status": status,
            "address": "0x94df8b352de7f46f64b01d3666bf6e936e44ce60", "txId": tx_id,
            "applyTime": stamp, "network": coin, "transferType": 0, "info": "",
            "confirmNo": 3, "walletType": 0, "txKey": "", "completeTime": stamp,
        }  # fmt: skip
        self.withdrawals.append(record)
        if status not in (1, 3, 5):  # taken at apply time; given back if it never went out
            self._move(coin, -(Decimal(amount) + Decimal(fee)))
        return record

    # -- security ---------------------------------------------------------------------
    def _signed(self, handler: Route) -> Route:
        async def checked(request: web.Request) -> web.StreamResponse:
            key = request.headers.get("X-MBX-APIKEY")
            if not key:
                return _error(401, -2014, "API-key format invalid.")
            if key != self.api_key:
                return _error(401, -2015, "Invalid API-key, IP, or permissions for action.")
            raw = request.raw_path.partition("?")[2]  # as sent, still percent-encoded
            payload, _, signature = raw.rpartition("&signature=")
            if not signature:
                return _error(400, -1102, "Mandatory parameter 'signature' was not sent, "
                                          "was empty/null, or malformed.")  # fmt: skip
            body = await request.text()
            if not hmac.compare_digest(sign(self.secret, payload + body), signature.lower()):
                return _error(400, -1022, "Signature for this request is not valid.")
            q = request.query
            if "timestamp" not in q:
                return _error(400, -1102, "Mandatory parameter 'timestamp' was not sent, "
                                          "was empty/null, or malformed.")  # fmt: skip
            window = int(q.get("recvWindow", 5000))
            now, stamp = self.clock(), int(q["timestamp"])
            if not (stamp < now + 1000 and now - stamp <= window):
                msg = "Timestamp for this request is outside of the recvWindow."
                return _error(400, -1021, msg)
            return await handler(request)

        return checked

    # -- endpoints --------------------------------------------------------------------
    async def _account(self, request: web.Request) -> web.StreamResponse:
        omit_zero = request.query.get("omitZeroBalances") == "true"
        balances = [
            {"asset": asset, "free": _fmt(free), "locked": _fmt(locked)}
            for asset, (free, locked) in sorted(self.balances.items())
            if not (omit_zero and free == 0 and locked == 0)
        ]
        return web.json_response({
            "makerCommission": 10, "takerCommission": 10, "buyerCommission": 0,
            "sellerCommission": 0,
            "commissionRates": {"maker": "0.00100000", "taker": "0.00100000",
                                "buyer": "0.00000000", "seller": "0.00000000"},
            "canTrade": True, "canWithdraw": True, "canDeposit": True, "brokered": False,
            "requireSelfTradePrevention": False, "preventSor": False,
            "updateTime": self.exchange.now, "accountType": "SPOT", "balances": balances,
            "permissions": ["SPOT"], "uid": 354937868,
        })  # fmt: skip

    async def _my_trades(self, request: web.Request) -> web.StreamResponse:
        q = request.query
        sid = q.get("symbol", "")
        if sid not in self.exchange.listings:
            return _error(400, -1121, "Invalid symbol.")
        rows = self.trades.get(sid, [])
        limit = min(int(q.get("limit", 500)), 1000)
        start, end = q.get("startTime"), q.get("endTime")
        if "fromId" in q and (start or end):
            return _error(400, -1128, "Combination of optional parameters invalid.")
        if start and end and int(end) - int(start) > DAY:
            return _error(400, -1127, "More than 24 hours between startTime and endTime.")
        if "fromId" in q:
            rows = [t for t in rows if t["id"] >= int(q["fromId"])][:limit]
        elif start or end:
            rows = [t for t in rows if (not start or t["time"] >= int(start))
                    and (not end or t["time"] <= int(end))]  # fmt: skip
            rows = rows[:limit] if start else rows[-limit:]
        else:
            rows = rows[-limit:]
        return web.json_response(rows)

    def _history(self, request: web.Request, records: list[dict[str, Any]],
                 stamp: Callable[[dict[str, Any]], int]) -> web.StreamResponse:  # fmt: skip
        q = request.query
        end = int(q.get("endTime", self.clock()))
        start = int(q.get("startTime", end - 90 * DAY))
        if end - start > 90 * DAY:
            return _error(400, -1127, "More than 90 days between startTime and endTime.")
        rows = [r for r in records if start <= stamp(r) <= end
                and ("coin" not in q or r["coin"] == q["coin"])]  # fmt: skip
        rows.sort(key=stamp, reverse=True)
        offset, limit = int(q.get("offset", 0)), min(int(q.get("limit", 1000)), 1000)
        return web.json_response(rows[offset : offset + limit])

    async def _deposits(self, request: web.Request) -> web.StreamResponse:
        return self._history(request, self.deposits, lambda r: int(r["insertTime"]))

    async def _withdrawals(self, request: web.Request) -> web.StreamResponse:
        def applied(record: dict[str, Any]) -> int:
            when = datetime.strptime(record["applyTime"], "%Y-%m-%d %H:%M:%S")
            return int(when.replace(tzinfo=UTC).timestamp() * 1000)

        return self._history(request, self.withdrawals, applied)
