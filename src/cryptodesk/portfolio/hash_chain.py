"""The tamper-evident chain over a tenant's ledger.

Every entry is appended with ``seq`` 1, 2, 3... and
``hash = sha256(prev_hash + canonical(entry))``, where ``prev_hash`` is the
previous entry's hash as 64 lowercase hex characters (ASCII) and the first
entry's ``prev_hash`` is :data:`GENESIS`. The store also keeps the chain's head
(last ``seq`` and hash) in the transaction that appends, so deleting the newest
entries shows too. Anyone who can rewrite every hash *and* the head can forge a
chain; recording the head hash elsewhere (a report, an e-mail) closes that gap.

Canonical encoding: a JSON object with sorted keys and no whitespace over the
fields in :data:`CANONICAL_FIELDS`, all present (absent values as ``null``);
Decimals as ``str(value)``, exactly as entered (``"1.50"`` and ``"1.5"`` are
different entries: the store keeps that text, so the bytes round-trip);
``lot_ids`` as ``[[id, amount], ...]``; ``tags`` as a list. A field added to
``LedgerEntry`` later must be left out of the object while it holds its
default, so the hashes of existing entries stay valid.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, Final, Literal

import msgspec

from cryptodesk.portfolio.ledger import LedgerEntry, to_decimal

GENESIS: Final = "0" * 64

CANONICAL_FIELDS: Final[tuple[str, ...]] = (
    "id", "timestamp", "kind", "account", "asset", "amount",
    "counter_asset", "counter_amount", "fee_asset", "fee_amount", "to_account",
    "value", "lot_ids", "note", "subkind", "fee_value", "reverses",
    "external_id", "tags",
)  # fmt: skip
_DECIMALS: Final = ("amount", "counter_amount", "fee_amount", "value", "fee_value")

Fields = dict[str, Any]
Reason = Literal["edited", "deleted", "reordered", "bad_prev_link", "truncated", "head_mismatch"]
_ENCODER: Final = msgspec.json.Encoder(order="sorted")


def _text(value: Decimal | None) -> str | None:
    return None if value is None else str(value)


def to_fields(entry: LedgerEntry) -> Fields:
    """The entry as JSON-ready values: what is hashed, and what the store keeps."""
    return {
        "id": entry.id,
        "timestamp": entry.timestamp,
        "kind": entry.kind,
        "account": entry.account,
        "asset": entry.asset,
        "amount": str(entry.amount),
        "counter_asset": entry.counter_asset,
        "counter_amount": _text(entry.counter_amount),
        "fee_asset": entry.fee_asset,
        "fee_amount": _text(entry.fee_amount),
        "to_account": entry.to_account,
        "value": _text(entry.value),
        "lot_ids": [[lot, str(amount)] for lot, amount in entry.lot_ids],
        "note": entry.note,
        "subkind": entry.subkind,
        "fee_value": _text(entry.fee_value),
        "reverses": entry.reverses,
        "external_id": entry.external_id,
        "tags": list(entry.tags),
    }


def from_fields(fields: Mapping[str, Any]) -> LedgerEntry:
    """The entry back from ``to_fields`` output; ``DomainError`` if it is not a valid one."""
    values = {name: fields[name] for name in CANONICAL_FIELDS}
    for name in _DECIMALS:
        if values[name] is not None:
            values[name] = to_decimal(values[name], field=name)
    values["lot_ids"] = tuple(
        (str(lot), to_decimal(amount, field="lot_ids")) for lot, amount in values["lot_ids"]
    )
    values["tags"] = tuple(values["tags"])
    return LedgerEntry(**values)


def canonical(fields: Mapping[str, Any]) -> bytes:
    """The bytes hashed for an entry given as ``to_fields`` output (exactly those keys)."""
    return _ENCODER.encode(fields)


def link_hash(prev_hash: str, body: bytes) -> str:
    return hashlib.sha256(prev_hash.encode() + body).hexdigest()


@dataclass(frozen=True, slots=True)
class ChainLink:
    """One stored entry as the chain sees it (``fields`` as read back, unvalidated)."""

    seq: int
    fields: Fields
    prev_hash: str
    hash: str

    @property
    def entry_id(self) -> str:
        return str(self.fields.get("id"))


@dataclass(frozen=True, slots=True)
class StoredEntry:
    """An entry as stored: its place in the chain and the chain's hash up to it."""

    seq: int
    entry: LedgerEntry
    hash: str


@dataclass(frozen=True, slots=True)
class ChainHead:
    seq: int  # 0 before the first append
    hash: str


def extend(head: ChainHead, bodies: Iterable[bytes]) -> list[tuple[int, str, str]]:
    """``(seq, prev_hash, hash)`` for canonical bodies appended after ``head``."""
    out = []
    seq, prev = head.seq, head.hash
    for body in bodies:
        seq += 1
        digest = link_hash(prev, body)
        out.append((seq, prev, digest))
        prev = digest
    return out


@dataclass(frozen=True, slots=True)
class BrokenLink:
    """The first place the chain does not hold; ``entry_id`` is None when the entry is gone."""

    seq: int
    entry_id: str | None
    reason: Reason
    message: str


@dataclass(frozen=True, slots=True)
class ChainReport:
    ok: bool
    entries: int  # stored entries examined
    first_broken: BrokenLink | None
    # The newest entry's hash when the chain holds (GENESIS when empty), None when
    # broken: recorded elsewhere, it also exposes a rewrite of the whole chain.
    head_hash: str | None = None


class ChainVerifier:
    """Checks links fed in ``seq`` order against each other and the stored head.

    Only the first break is reported; later links are still counted, and scanned
    for the hash the first broken link points back to, which tells a reordered
    entry (its predecessor sits later in the chain) from a dropped one.
    """

    def __init__(self, head: ChainHead | None) -> None:
        self._head = head
        self._count = 0
        self._prev = GENESIS
        self._broken: BrokenLink | None = None
        self._wanted: str | None = None  # prev_hash of the first broken link
        self._found_wanted = False
        self._after_head: tuple[int, str] | None = None
        self._last_id: str | None = None

    def add(self, link: ChainLink) -> None:
        self._count += 1
        if self._head is not None and link.seq == self._head.seq + 1:
            self._after_head = (link.seq, link.entry_id)
        if self._broken is not None:
            if link.hash == self._wanted:
                self._found_wanted = True
            return
        expected = self._count
        name = f"entry {link.entry_id!r} (seq {link.seq})"
        if link.seq > expected:
            last = link.seq - 1
            gap = f"seq {expected}" if last == expected else f"seqs {expected}..{last}"
            self._break(link, "deleted", f"{gap} missing before {name}: entries were deleted")
        elif link.seq < expected:
            self._break(link, "reordered", f"{name} sits where seq {expected} belongs")
        elif not _holds(link):
            self._break(link, "edited", f"{name} does not match its hash: it was edited")
        elif link.prev_hash != self._prev:
            self._wanted = link.prev_hash
            self._break(link, "bad_prev_link", name)
        else:
            self._prev = link.hash
            self._last_id = link.entry_id

    def _break(self, link: ChainLink, reason: Reason, message: str) -> None:
        self._broken = BrokenLink(link.seq, link.entry_id, reason, message)

    def finish(self) -> ChainReport:
        broken = self._broken
        if broken is not None and broken.reason == "bad_prev_link":
            # Decided only now: the entry it links back to may come later.
            name = broken.message
            if self._found_wanted:
                text = f"{name} is out of place: the entry it links to comes later (reordered)"
                broken = BrokenLink(broken.seq, broken.entry_id, "reordered", text)
            else:
                text = f"{name} links to no stored entry: one was removed or the link rewritten"
                broken = BrokenLink(broken.seq, broken.entry_id, "bad_prev_link", text)
        if broken is None:
            broken = self._check_head()
        head_hash = self._prev if broken is None else None
        return ChainReport(broken is None, self._count, broken, head_hash)

    def _check_head(self) -> BrokenLink | None:
        head, n = self._head, self._count
        if head is None:
            if n == 0:
                return None
            return BrokenLink(n, None, "head_mismatch", "the chain head record is missing")
        if head.seq > n:
            return BrokenLink(
                n + 1,
                None,
                "truncated",
                f"the head records {head.seq} entries but the chain ends at seq {n}: "
                f"the newest {head.seq - n} were deleted",
            )
        if head.seq < n:
            seq, entry_id = self._after_head or (head.seq + 1, None)
            return BrokenLink(
                seq,
                entry_id,
                "head_mismatch",
                f"entries after seq {head.seq} are not covered by the chain head "
                "(the head was edited or entries were written around the ledger)",
            )
        if head.hash != self._prev:
            return BrokenLink(
                n, self._last_id, "head_mismatch", "the chain head hash does not match this entry"
            )
        return None


def _holds(link: ChainLink) -> bool:
    """Whether the link's hash is the one its content and prev_hash give."""
    try:
        return link_hash(str(link.prev_hash), canonical(link.fields)) == link.hash
    except (TypeError, ValueError, msgspec.EncodeError):  # a column rewritten to junk
        return False


def verify(links: Iterable[ChainLink], head: ChainHead | None) -> ChainReport:
    """Check a whole chain given in ``seq`` order against its stored head."""
    verifier = ChainVerifier(head)
    for link in links:
        verifier.add(link)
    return verifier.finish()
