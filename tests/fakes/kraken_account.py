"""The private side of the fake Kraken: balances, trade history, deposit and
withdrawal status, mounted on a ``FakeKraken`` server.

Authentication (https://docs.kraken.com/api/docs/guides/spot-rest-auth):
``POST /0/private/<Method>`` with a form-encoded body carrying an always
increasing ``nonce``; header ``API-Key``; header ``API-Sign`` = base64 of
HMAC-SHA512, keyed with the base64-decoded secret, of the URI path followed by
SHA256(nonce + POST data). Errors come with HTTP 200 and an ``error`` list:
``EAPI:Invalid key``, ``EAPI:Invalid signature``, ``EAPI:Invalid nonce``.

Endpoints:
- ``Balance`` (https://docs.kraken.com/api/docs/rest-api/get-account-balance):
  ``{asset id: "amount"}``; ``BalanceEx`` (.../get-extended-balance), which
  ccxt uses: ``{asset id: {"balance", "hold_trade"}}`` strings; the balance
  includes what orders hold.
- ``TradesHistory`` (.../get-trades-history): ``{"trades": {txid: trade},
  "count": n}``, newest first, 50 a page from offset ``ofs``; ``start``
  (exclusive) and ``end`` (inclusive) in unix seconds. A trade has ``pair``
  (the pair id), ``time`` (seconds), ``type`` buy|sell, ``price``, ``cost``,
  ``fee`` (in the quote asset), ``vol`` strings.
- ``DepositStatus`` / ``WithdrawStatus`` (.../get-status-recent-deposits,
  .../get-status-recent-withdrawals): a list, newest first, of ``{"method",
  "aclass", "asset", "refid", "txid", "info", "amount", "fee", "time",
  "status"}``; ``start``/``end`` in seconds. Status ``Success`` is final
  (https://support.kraken.com/articles/advanced-api-faq: ``Settled`` deposits
  still wait for confirmations). A deposit credits ``amount - fee``; a
  withdrawal takes ``amount + fee``.

``add_trade``, ``add_deposit`` and ``add_withdrawal`` move the balances as
the exchange would; ``set_balance`` changes one with no history behind it.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import urllib.parse
from collections.abc import Awaitable, Callable
from decimal import Decimal
from typing import Any

from aiohttp import web

from tests.fakes.kraken import FakeKraken

PAGE = 50
METHODS = {"XXBT": "Bitcoin", "XETH": "Ether", "ZUSD": "Bank Frick (SWIFT)"}
_ZERO = Decimal(0)
Handler = Callable[[dict[str, str]], Any]


def _answer(result: Any = None, *errors: str) -> web.Response:
    body = {"error": list(errors)} if errors else {"error": [], "result": result}
    return web.Response(text=json.dumps(body), content_type="application/json")


def sign(secret_b64: str, path: str, nonce: str, body: str) -> str:
    digest = hashlib.sha256((nonce + body).encode()).digest()
    mac = hmac.new(base64.b64decode(secret_b64), path.encode() + digest, hashlib.sha512)
    return base64.b64encode(mac.digest()).decode()


def _seconds(value: str | None) -> float | None:
    return None if value in (None, "") else float(value)  # type: ignore[arg-type]


class FakeKrakenAccount:
    def __init__(self, exchange: FakeKraken, *, api_key: str, secret: str) -> None:
        self.exchange = exchange
        self.api_key = api_key
        self.secret = secret  # base64, as Kraken issues it
        self.balances: dict[str, Decimal] = {}  # asset id (XXBT, ZUSD) -> amount
        self.trades: dict[str, dict[str, Any]] = {}  # txid -> trade, oldest first
        self.deposits: list[dict[str, Any]] = []
        self.withdrawals: list[dict[str, Any]] = []
        self.last_nonce = 0
        self.forms: list[tuple[str, dict[str, str]]] = []  # (method, form) of each request
        self._serial = 0
        for method, handler in (
            ("Balance", self._balance),
            ("BalanceEx", self._balance_ex),
            ("TradesHistory", self._trades_history),
            ("DepositStatus", lambda form: self._status(self.deposits, form)),
            ("WithdrawStatus", lambda form: self._status(self.withdrawals, form)),
        ):
            exchange.server.route("POST", f"/0/private/{method}", self._private(handler))

    def calls(self, method: str) -> list[dict[str, str]]:
        """The form of every request made to ``/0/private/<method>``."""
        return [form for name, form in self.forms if name == method]

    # -- state the tests drive --------------------------------------------------------
    def set_balance(self, asset_id: str, amount: str) -> None:
        self.balances[asset_id] = Decimal(amount)

    def _move(self, asset_id: str, delta: Decimal) -> None:
        self.balances[asset_id] = self.balances.get(asset_id, _ZERO) + delta

    def _txid(self, prefix: str) -> str:
        self._serial += 1
        return f"{prefix}{self._serial:05d}-FL4SZ-3FKGH6"

    def add_trade(
        self, pair_id: str, *, side: str, price: str, vol: str, cost: str, fee: str, time: float,
        maker: bool = False,
    ) -> tuple[str, dict[str, Any]]:  # fmt: skip
        """A fill; its fee is paid in the quote asset (Kraken's default)."""
        pair = self.exchange.pairs[pair_id]
        txid = self._txid("TC")
        trade = {
            "ordertxid": self._txid("OQ"), "postxid": "TKH2SE-M7IF5-CFI7LT", "pair": pair_id,
            "aclass": "forex", "time": time, "type": side, "ordertype": "limit",
            "price": price, "cost": cost, "fee": fee, "vol": vol, "margin": "0.00000",
            "leverage": "0", "misc": "", "trade_id": 70_000_000 + self._serial, "maker": maker,
        }  # fmt: skip
        self.trades[txid] = trade
        sign_ = 1 if side == "buy" else -1
        self._move(pair.base, sign_ * Decimal(vol))
        self._move(pair.quote, -sign_ * Decimal(cost) - Decimal(fee))
        return txid, trade

    def _transfer(self, asset_id: str, amount: str, fee: str, time: int, status: str,
                  txid: str, prefix: str) -> dict[str, Any]:  # fmt: skip
        return {
            "method": METHODS.get(asset_id, asset_id), "aclass": "currency",
            "asset": asset_id, "refid": self._txid(prefix), "txid": txid,
            "info": "bc1qmzq7hyz9mu7w8yjfwcqfr9vvxsy3e8dujxsg4x", "amount": amount, "fee": fee,
            "time": time, "status": status,
        }  # fmt: skip

    def add_deposit(
        self, asset_id: str, amount: str, *, time: int, txid: str, fee: str = "0.0000000000",
        status: str = "Success",
    ) -> dict[str, Any]:  # fmt: skip
        record = self._transfer(asset_id, amount, fee, time, status, txid, "QSB7I")
        self.deposits.append(record)
        if status == "Success":
            self._move(asset_id, Decimal(amount) - Decimal(fee))
        return record

    def add_withdrawal(self, asset_id: str, amount: str, fee: str, *, time: int,
                       txid: str = "", status: str = "Success") -> dict[str, Any]:  # fmt: skip
        record = self._transfer(asset_id, amount, fee, time, status, txid, "AGBSO")
        record.update(key="cold wallet", network="Bitcoin")
        self.withdrawals.append(record)
        if status != "Failure":
            self._move(asset_id, -(Decimal(amount) + Decimal(fee)))
        return record

    # -- security ---------------------------------------------------------------------
    def _private(self, handler: Handler) -> Callable[[web.Request], Awaitable[web.Response]]:
        async def checked(request: web.Request) -> web.Response:
            body = await request.text()
            form = dict(urllib.parse.parse_qsl(body, keep_blank_values=True))
            self.forms.append((request.path.rsplit("/", 1)[-1], form))
            if request.headers.get("API-Key") != self.api_key:
                return _answer(None, "EAPI:Invalid key")
            nonce = form.get("nonce", "")
            try:
                expected = sign(self.secret, request.path, nonce, body)
            except ValueError:
                return _answer(None, "EAPI:Invalid key")
            if not hmac.compare_digest(expected, request.headers.get("API-Sign", "")):
                return _answer(None, "EAPI:Invalid signature")
            if not nonce.isdigit() or int(nonce) <= self.last_nonce:
                return _answer(None, "EAPI:Invalid nonce")
            self.last_nonce = int(nonce)
            return _answer(handler(form))

        return checked

    # -- endpoints --------------------------------------------------------------------
    def _balance(self, form: dict[str, str]) -> dict[str, str]:
        return {asset: f"{amount:.10f}" for asset, amount in self.balances.items()}

    def _balance_ex(self, form: dict[str, str]) -> dict[str, dict[str, str]]:
        return {asset: {"balance": f"{amount:.10f}", "hold_trade": "0.0000000000"}
                for asset, amount in self.balances.items()}  # fmt: skip

    def _trades_history(self, form: dict[str, str]) -> dict[str, Any]:
        start, end = _seconds(form.get("start")), _seconds(form.get("end"))
        rows = [(txid, t) for txid, t in self.trades.items()
                if (start is None or t["time"] > start)
                and (end is None or t["time"] <= end)]  # fmt: skip
        rows.sort(key=lambda row: row[1]["time"], reverse=True)
        offset = int(form.get("ofs", 0))
        return {"trades": dict(rows[offset : offset + PAGE]), "count": len(rows)}

    def _status(self, records: list[dict[str, Any]], form: dict[str, str]) -> list[dict[str, Any]]:
        start, end = _seconds(form.get("start")), _seconds(form.get("end"))
        rows = [r for r in records if (start is None or r["time"] >= start)
                and (end is None or r["time"] <= end)
                and ("asset" not in form or r["asset"] == form["asset"])]  # fmt: skip
        return sorted(rows, key=lambda r: r["time"], reverse=True)
