"""Worked examples the OpenAPI document shows for ledger, account, portfolio,
report and GraphQL bodies: values exactly as this API sends and accepts them
(decimal strings for money, ISO 8601 UTC times with milliseconds).

One small portfolio runs through them all: 0.5 BTC bought on ``binance-main``
for 30000 USDT, partly moved to ``cold-wallet``, some sold, some ETH staked.
"""

from __future__ import annotations

from typing import Any, Final

_HASH: Final = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"

# ---- ledger -----------------------------------------------------------------------------

ENTRY_IN: Final[dict[str, Any]] = {
    "id": "t-2024-0001", "timestamp": "2024-05-01T12:00:00Z", "kind": "buy",
    "account": "binance-main", "asset": "BTC", "amount": "0.5", "counter_asset": "USDT",
    "counter_amount": "30000", "fee_asset": "USDT", "fee_amount": "15", "fee_value": "15",
    "value": "30000", "note": "DCA",
}  # fmt: skip
ENTRY: Final[dict[str, Any]] = {
    **ENTRY_IN, "timestamp": "2024-05-01T12:00:00.000Z", "timestamp_ms": 1714564800000,
    "subkind": None, "to_account": None, "lot_ids": [],
    "reverses": None, "external_id": None, "tags": [],
}  # fmt: skip
REVERSAL: Final[dict[str, Any]] = {
    **ENTRY, "id": "t-2024-0001:reversal", "note": "wrong fee", "reverses": "t-2024-0001",
}  # fmt: skip
REVERSE_IN: Final[dict[str, Any]] = {"id": "t-2024-0001:reversal", "note": "wrong fee"}
STORED_ENTRY: Final[dict[str, Any]] = {**ENTRY, "seq": 1, "hash": _HASH}
ENTRIES_PAGE: Final[dict[str, Any]] = {"entries": [STORED_ENTRY], "next_cursor": "1"}
IMPORTED: Final[dict[str, Any]] = {"added": 4, "skipped": 0}
VERIFIED: Final[dict[str, Any]] = {
    "ok": True, "entries": 1250, "first_broken": None, "head_hash": _HASH,
}  # fmt: skip
BROKEN: Final[dict[str, Any]] = {
    "ok": False, "entries": 1250, "head_hash": None,
    "first_broken": {
        "seq": 42, "id": "t-2024-0042", "reason": "edited",
        "message": "entry 't-2024-0042' (seq 42) does not match its hash",
    },
}  # fmt: skip
# The generic ledger CSV (docs/ledger-format.md).
LEDGER_CSV: Final = (
    "id,timestamp,kind,account,asset,amount,counter_asset,counter_amount,fee_asset,"
    "fee_amount,to_account,value,lot_ids,note\n"
    "t-2024-0101,2024-05-01T12:00:00Z,buy,binance-main,BTC,0.5,USDT,30000,USDT,15,,30000,,DCA\n"
    "t-2024-0102,2024-05-03T09:30:00Z,transfer,binance-main,BTC,0.3,,,BTC,0.0002,cold-wallet"
    ",,,to cold storage\n"
    "t-2024-0103,2024-05-20T16:45:00Z,sell,binance-main,BTC,0.1,USDT,6950.5,USDT,3.48,,6950.5,,\n"
    "t-2024-0104,2024-05-31T00:00:00Z,income:staking,binance-main,ETH,0.0125,,,,,,47.10,,\n"
)

# ---- accounts ---------------------------------------------------------------------------

# No credentials: an example must not make the server call a real exchange.
EXCHANGE_ACCOUNT_IN: Final[dict[str, Any]] = {
    "name": "binance-main", "kind": "exchange", "exchange": "binance", "note": "spot",
}  # fmt: skip
WALLET_ACCOUNT_IN: Final[dict[str, Any]] = {
    "name": "cold-wallet", "kind": "wallet", "chain": "bitcoin",
    "address": "bc1qxy2kgdygjrsqtzq2n0yrf2493p83kkfjhx0wlh",
}  # fmt: skip
MANUAL_ACCOUNT_IN: Final[dict[str, Any]] = {
    "name": "otc-broker", "kind": "manual", "note": "OTC fills, entered by hand",
}  # fmt: skip
ACCOUNT: Final[dict[str, Any]] = {
    "name": "binance-main", "kind": "exchange", "exchange": "binance", "chain": None,
    "address": None, "note": "spot", "has_credentials": True,
    "created_at": "2024-05-01T12:00:00.000Z",
}  # fmt: skip
_WALLET: Final[dict[str, Any]] = {
    "name": "cold-wallet", "kind": "wallet", "exchange": None, "chain": "bitcoin",
    "address": "bc1qxy2kgdygjrsqtzq2n0yrf2493p83kkfjhx0wlh", "note": "",
    "has_credentials": False, "created_at": "2024-05-02T09:30:00.000Z",
}  # fmt: skip
ACCOUNTS: Final[dict[str, Any]] = {"accounts": [ACCOUNT, _WALLET]}
BALANCES_IN: Final[dict[str, Any]] = {
    "balances": {"BTC": "0.2998"}, "as_of": "2024-05-31T00:00:00Z",
}  # fmt: skip
BALANCES: Final[dict[str, Any]] = {
    "account": "cold-wallet",
    "balances": [
        {"asset": "BTC", "amount": "0.2998", "as_of": "2024-05-31T00:00:00.000Z",
         "source": "manual"},
    ],
}  # fmt: skip

# ---- portfolio and reports (plain JSON objects; prices in USD) --------------------------

_POSITIONS: Final[list[dict[str, Any]]] = [
    {"account": "binance-main", "asset": "BTC", "amount": "0.1", "cost_basis": "6003",
     "price": "67012.35", "market_value": "6701.235", "unrealized": "698.235", "realized": "945.02",
     "income": "0", "allocation": "0.2486"},
    {"account": "binance-main", "asset": "ETH", "amount": "0.0125", "cost_basis": "47.10",
     "price": "3001.55", "market_value": "37.519375", "unrealized": "-9.580625",
     "realized": "0", "income": "47.10", "allocation": "0.0014"},
    {"account": "cold-wallet", "asset": "BTC", "amount": "0.2998", "cost_basis": "18017.01",
     "price": "67012.35", "market_value": "20090.30253", "unrealized": "2073.29253",
     "realized": "0", "income": "0", "allocation": "0.7500"},
]  # fmt: skip
POSITIONS: Final[dict[str, Any]] = {
    "currency": "USD", "method": "fifo", "positions": _POSITIONS, "missing_prices": [],
}  # fmt: skip
PORTFOLIO: Final[dict[str, Any]] = {
    "currency": "USD", "method": "fifo",
    "total": {"cost_basis": "24067.11", "market_value": "26829.056905",
              "unrealized": "2761.946905", "realized": "945.02", "income": "47.10",
              "complete": True},
    "assets": [
        {"asset": "BTC", "amount": "0.3998", "cost_basis": "24020.01", "price": "67012.35",
         "market_value": "26791.53753", "unrealized": "2771.52753", "realized": "945.02",
         "income": "0", "allocation": "0.9986"},
        {"asset": "ETH", "amount": "0.0125", "cost_basis": "47.10", "price": "3001.55",
         "market_value": "37.519375", "unrealized": "-9.580625", "realized": "0",
         "income": "47.10", "allocation": "0.0014"},
    ],
    "positions": _POSITIONS, "missing_prices": [], "warnings": [],
    "quotes": {"BTC": "67012.35", "ETH": "3001.55"},
}  # fmt: skip
PERFORMANCE: Final[dict[str, Any]] = {
    "start": "2024-05-01", "end": "2024-05-31", "days": 31, "start_value": "30015",
    "end_value": "26829.056905", "net_flows": "-6947.02", "twr": "0.1246",
    "twr_annualized": "2.9213", "mwr": "0.1302", "notes": [],
}  # fmt: skip
RECONCILIATION: Final[dict[str, Any]] = {
    "ok": False,
    "lines": [
        {"account": "binance-main", "asset": "BTC", "ledger": "0.1", "reported": "0.1",
         "difference": "0", "status": "ok"},
        {"account": "cold-wallet", "asset": "BTC", "ledger": "0.2998", "reported": "0.2997",
         "difference": "-0.0001", "status": "mismatch"},
    ],
}  # fmt: skip
SYNC: Final[dict[str, Any]] = {
    "account": "binance-main", "trades": 12, "deposits": 1, "withdrawals": 1, "added": 14,
    "skipped": 0, "balances": {"BTC": "0.1", "USDT": "6932.02"},
}  # fmt: skip
TAX_REPORT: Final[dict[str, Any]] = {
    "year": 2024, "method": "fifo", "currency": "USD", "per_wallet": False,
    "summary": {"proceeds": "6950.5", "cost_basis": "6003", "gain": "947.5",
                "short_term_gain": "947.5", "long_term_gain": "0", "income": "47.10"},
    "disposals": [
        {"disposal_id": "t-2024-0103", "asset": "BTC", "amount": "0.1",
         "acquired": "2024-05-01T12:00:00.000Z", "disposed": "2024-05-20T16:45:00.000Z",
         "proceeds": "6950.5", "cost_basis": "6003", "gain": "947.5", "term": "short",
         "lot_id": "t-2024-0101", "account": "binance-main", "kind": "trade"},
    ],
    "income": [
        {"entry_id": "t-2024-0104", "asset": "ETH", "amount": "0.0125",
         "received": "2024-05-31T00:00:00.000Z", "value": "47.10", "subkind": "staking",
         "account": "binance-main"},
    ],
    "holdings": [
        {"asset": "BTC", "amount": "0.3998", "cost_basis": "24020.01"},
        {"asset": "ETH", "amount": "0.0125", "cost_basis": "47.10"},
    ],
    "missing_acquisitions": [], "warnings": [],
}  # fmt: skip
PNL_REPORT: Final[dict[str, Any]] = {
    "tenant": "acme", "date": "2024-05-31", "currency": "USD", "method": "fifo",
    "positions": [
        {"account": "cold-wallet", "asset": "BTC", "amount": "0.2998", "price": "67012.35",
         "market_value": "20090.30253", "day_pnl": "212.56", "realized": "0", "income": "0",
         "unrealized": "2073.29253"},
    ],
    "total": {"market_value": "20090.30253", "day_pnl": "212.56", "realized": "0",
              "income": "0", "unrealized": "2073.29253", "complete": True},
    "missing_prices": [], "notes": [],
}  # fmt: skip

# ---- GraphQL ----------------------------------------------------------------------------

GRAPHQL_QUERY: Final[dict[str, Any]] = {
    "query": "query Holdings($first: Int!) { portfolio { currency method"
    " total { marketValue unrealized complete } positions(first: $first)"
    " { account asset amount marketValue } } }",
    "variables": {"first": 2},
    "operationName": "Holdings",
}
GRAPHQL_DATA: Final[dict[str, Any]] = {
    "data": {
        "portfolio": {
            "currency": "USD", "method": "fifo",
            "total": {"marketValue": "26829.056905", "unrealized": "2761.946905",
                      "complete": True},
            "positions": [
                {"account": "binance-main", "asset": "BTC", "amount": "0.1",
                 "marketValue": "6701.235"},
                {"account": "binance-main", "asset": "ETH", "amount": "0.0125",
                 "marketValue": "37.519375"},
            ],
        }
    }
}  # fmt: skip
