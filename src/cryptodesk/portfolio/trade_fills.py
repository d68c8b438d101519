"""Fills of the trading engine as portfolio ledger entries.

Every fill becomes one ``buy`` or ``sell`` entry of the account that traded, so
the ledger's cost basis and the engine's positions agree on what each account
holds. The entry id is the venue, trade id and side: replaying a fill upserts
the same entry instead of adding a second one.
"""

from __future__ import annotations

from decimal import localcontext

from cryptodesk.domain.orders import Fill
from cryptodesk.portfolio.ledger import LedgerEntry
from cryptodesk.portfolio.valuation import EXACT


def fill_to_ledger(fill: Fill, *, base: str, quote: str) -> LedgerEntry:
    """The portfolio ledger's ``buy``/``sell`` entry for a fill.

    The id is the venue, trade id and side, so replaying a fill upserts the
    same entry; ``external_id`` is the trade id.
    """
    with localcontext(EXACT):
        notional = fill.price * fill.quantity
    has_fee = bool(fill.fee) and bool(fill.fee_asset)
    return LedgerEntry(
        id=f"{fill.venue}:{fill.trade_id}:{fill.side}",
        timestamp=fill.ts,
        kind=fill.side,
        account=fill.account,
        asset=base,
        amount=fill.quantity,
        counter_asset=quote,
        counter_amount=notional,
        fee_asset=fill.fee_asset if has_fee else None,
        fee_amount=fill.fee if has_fee else None,
        external_id=fill.trade_id,
    )
