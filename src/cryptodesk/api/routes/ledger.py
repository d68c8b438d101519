"""``/api/v1`` accounts and the hash-chained ledger of the requesting tenant.

- ``POST /accounts``, ``GET /accounts``, ``GET /accounts/{name}``;
  ``PUT``/``GET /accounts/{name}/balances``: balances as entered or synced.
- ``GET /ledger`` (cursor-paginated in chain order), ``POST /ledger`` (one
  entry), ``POST /ledger/{id}/reverse``, ``POST /ledger/import`` (a CSV
  body), ``GET /ledger/verify``.

The tenant comes from ``api.tenancy``. Exchange credentials are write-only:
no answer carries them. Errors are problem+json (``api.ledger_problems``): a
bad value is a 400 naming it, a bad CSV row a 400 with its ``line`` (nothing
is stored), an unknown account or entry a 404, a name or id already taken a
409, an upload over the size limit a 413. A broken chain is a finding of
``/ledger/verify`` (200), not an error.
"""

from __future__ import annotations

import base64
import binascii
import codecs
from collections.abc import Callable
from typing import Annotated, Any, Final, Literal
from urllib.parse import quote

import msgspec
from fastapi import APIRouter, Path, Query, Request, Response
from starlette.concurrency import run_in_threadpool

from cryptodesk.adapters.files.ledger_csv import LedgerFileError, parse_ledger
from cryptodesk.api import ledger_examples as ex
from cryptodesk.api.ledger_problems import LedgerRoute, conflict
from cryptodesk.api.ledger_schemas import (
    AccountIn,
    AccountOut,
    AccountsOut,
    BalanceOut,
    BalancesIn,
    BalancesOut,
    EntriesPage,
    EntryData,
    EntryIn,
    EntryOut,
    ImportOut,
    ReverseIn,
    VerifyOut,
)
from cryptodesk.api.routes.market import _time, problem_responses
from cryptodesk.api.security import requires
from cryptodesk.api.tenancy import Tenant
from cryptodesk.api.uploads import body_charset, read_body
from cryptodesk.domain.errors import DomainError
from cryptodesk.domain.timeutil import now_ms, parse_time
from cryptodesk.portfolio.ledger import MAX_ID_LENGTH
from cryptodesk.services.ledger_service import LedgerNotFound, LedgerService
from cryptodesk.services.market_queries import InvalidParameter

MAX_IMPORT_BYTES: Final = 50 * 1024 * 1024
MAX_PAGE: Final = 1000
CSV_TYPES: Final = ("text/csv", "text/plain")
_CURSOR_VERSION: Final = 1
_REVERSAL_SUFFIX: Final = ":reversal"  # the service's default reversal id


# ---- cursors --------------------------------------------------------------------------


def _encode_cursor(after_seq: int, query: list[Any]) -> str:
    body = {"v": _CURSOR_VERSION, "s": after_seq, "q": query}
    return base64.urlsafe_b64encode(msgspec.json.encode(body)).rstrip(b"=").decode("ascii")


def _decode_cursor(text: str, query: list[Any]) -> int:
    bad = InvalidParameter(
        "cursor is not one this server issued", field="cursor", code="invalid-cursor"
    )
    try:
        body = msgspec.json.decode(base64.urlsafe_b64decode(text + "=" * (-len(text) % 4)))
    except (binascii.Error, ValueError):
        raise bad from None
    if not isinstance(body, dict) or body.get("v") != _CURSOR_VERSION:
        raise bad
    seq = body.get("s")
    if type(seq) is not int or seq < 0:
        raise bad
    if body.get("q") != query:
        raise InvalidParameter(
            "cursor belongs to a query with other filters; match them",
            field="cursor",
            code="invalid-cursor",
        )
    return seq


def _decode(data: bytes, charset: str) -> str:
    try:
        return data.decode("utf-8-sig" if codecs.lookup(charset).name == "utf-8" else charset)
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        raise LedgerFileError(f"not {charset} text", line=line) from None


# ---- routes ---------------------------------------------------------------------------

AccountName = Annotated[
    str, Path(description="The account's name.", examples=["binance-main"], max_length=64)
]
EntryId = Annotated[str, Path(description="The entry's id.", examples=["t-1"], max_length=128)]
ImportSource = Literal["auto", "generic", "binance", "coinbase", "kraken"]
_CSV_BODY: Final = {
    "requestBody": {
        "required": True,
        "description": "A ledger CSV (docs/ledger-format.md) or a Binance, Coinbase or "
        "Kraken export, as `text/csv` (UTF-8 unless a charset is given).",
        "content": {"text/csv": {"schema": {"type": "string"}, "example": ex.LEDGER_CSV}},
    }
}


def ledger_router(
    service: LedgerService,
    *,
    max_import_bytes: int = MAX_IMPORT_BYTES,
    clock: Callable[[], int] = now_ms,
) -> APIRouter:
    """The routes over ``service``; ``clock`` dates balances entered without ``as_of``."""
    router = APIRouter(prefix="/api/v1", route_class=LedgerRoute)
    _accounts(router, service, clock)
    _ledger(router, service, max_import_bytes)
    return router


async def _known(service: LedgerService, tenant: str, name: str) -> None:
    if await service.account(tenant, name) is None:
        raise LedgerNotFound(f"no account {name!r}", field="account")


def _accounts(router: APIRouter, service: LedgerService, clock: Callable[[], int]) -> None:
    @router.post(
        "/accounts",
        dependencies=[requires("accounts:write")],
        status_code=201,
        response_model=AccountOut,
        responses=problem_responses(400, 409, 503),
        tags=["accounts"],
        summary="Add an exchange, wallet or manual account",
        description="Exchange credentials are encrypted at rest and never returned; "
        "`has_credentials` says whether the account has some. A name already taken "
        "is a 409.",
    )
    async def add_account(body: AccountIn, tenant: Tenant, response: Response) -> AccountOut:
        spec = body.to_spec()
        try:
            account = await service.add_account(tenant, spec)
        except LedgerNotFound:
            raise
        except DomainError as exc:
            if exc.field == "name":  # the spec is valid: the name is taken
                raise conflict(exc, "name") from None
            raise
        response.headers["Location"] = f"/api/v1/accounts/{quote(account.name, safe='')}"
        return AccountOut.of(account)

    @router.get(
        "/accounts",
        dependencies=[requires("accounts:read")],
        response_model=AccountsOut,
        responses=problem_responses(400, 503),
        tags=["accounts"],
        summary="The accounts",
    )
    async def list_accounts(tenant: Tenant) -> AccountsOut:
        return AccountsOut(accounts=[AccountOut.of(a) for a in await service.accounts(tenant)])

    @router.put(
        "/accounts/{name}/balances",
        dependencies=[requires("accounts:write")],
        response_model=BalancesOut,
        responses=problem_responses(400, 404, 503),
        tags=["accounts"],
        summary="Enter the balances an account holds (e.g. a wallet's)",
        description="Recorded with source `manual`; an asset left out keeps its balance. "
        "A report older than the stored one for an asset does not replace it.",
    )
    async def put_balances(name: AccountName, body: BalancesIn, tenant: Tenant) -> BalancesOut:
        as_of = clock() if body.as_of is None else parse_time(body.as_of, field="as_of")
        await service.set_balances(tenant, name, body.amounts(), as_of=as_of, source="manual")
        found = await service.balances(tenant, name)
        return BalancesOut(account=name, balances=[BalanceOut.of(b) for b in found])

    @router.get(
        "/accounts/{name}/balances",
        dependencies=[requires("accounts:read")],
        response_model=BalancesOut,
        responses=problem_responses(400, 404, 503),
        tags=["accounts"],
        summary="The latest balance per asset an account reported",
    )
    async def get_balances(name: AccountName, tenant: Tenant) -> BalancesOut:
        await _known(service, tenant, name)
        found = await service.balances(tenant, name)
        return BalancesOut(account=name, balances=[BalanceOut.of(b) for b in found])

    @router.get(
        "/accounts/{name}",
        dependencies=[requires("accounts:read")],
        response_model=AccountOut,
        responses=problem_responses(400, 404, 503),
        tags=["accounts"],
        summary="One account",
    )
    async def get_account(name: AccountName, tenant: Tenant) -> AccountOut:
        account = await service.account(tenant, name)
        if account is None:
            raise LedgerNotFound(f"no account {name!r}", field="account")
        return AccountOut.of(account)


def _ledger(router: APIRouter, service: LedgerService, max_import_bytes: int) -> None:
    @router.get(
        "/ledger",
        dependencies=[requires("ledger:read")],
        response_model=EntriesPage,
        responses=problem_responses(400, 404, 503),
        tags=["ledger"],
        summary="Ledger entries in chain order, cursor-paginated",
        description="`start` (inclusive) and `end` (exclusive) bound the entry timestamps; "
        "`account` keeps the entries it sends or receives. Pass `next_cursor` as `cursor` "
        "with the same filters for the next page; it is null on the last page.",
    )
    async def list_entries(
        tenant: Tenant,
        start: Annotated[
            str | None, Query(description="ISO 8601 or epoch ms, inclusive.", max_length=64)
        ] = None,
        end: Annotated[
            str | None, Query(description="ISO 8601 or epoch ms, exclusive.", max_length=64)
        ] = None,
        account: Annotated[str | None, Query(max_length=64)] = None,
        limit: Annotated[int, Query(ge=1, le=MAX_PAGE)] = 100,
        cursor: Annotated[str | None, Query(max_length=1024)] = None,
    ) -> EntriesPage:
        first, last = _time(start, "start"), _time(end, "end")
        query: list[Any] = [first, last, account]
        after = None if cursor is None else _decode_cursor(cursor, query)
        if account is not None:
            await _known(service, tenant, account)
        found = await service.stored_entries(
            tenant, start=first, end=last, account=account, after_seq=after, limit=limit + 1
        )
        page = found[:limit]
        more = len(found) > limit
        return EntriesPage(
            entries=[EntryOut.stored(s) for s in page],
            next_cursor=_encode_cursor(page[-1].seq, query) if more else None,
        )

    @router.post(
        "/ledger",
        dependencies=[requires("ledger:write")],
        status_code=201,
        response_model=EntryData,
        responses={
            200: {"model": EntryData, "description": "Already stored: nothing appended."},
            **problem_responses(400, 404, 409, 503),
        },
        tags=["ledger"],
        summary="Append one entry",
        description="201: appended. 200: the same entry (same id and content, or same "
        "account and `external_id`) is already stored, so a retry is safe. 409: the id "
        "is stored with other content (correct entries by reversing them). The accounts "
        "it names must exist (404).",
    )
    async def post_entry(body: EntryIn, tenant: Tenant, response: Response) -> EntryData:
        entry = body.to_entry()
        try:
            result = await service.append(tenant, entry, create_accounts=False)
        except LedgerNotFound:
            raise
        except DomainError as exc:
            if exc.field == "id":  # the entry is valid: its id holds other content
                raise conflict(exc, "id") from None
            raise
        if result.added == 0:
            response.status_code = 200
        return EntryData.of(entry)

    @router.post(
        "/ledger/import",
        dependencies=[requires("ledger:write")],
        response_model=ImportOut,
        responses=problem_responses(400, 409, 413, 415, 503),
        openapi_extra=_CSV_BODY,
        tags=["ledger"],
        summary="Import a ledger CSV or an exchange export, all or nothing",
        description="Entries already stored (same id, or same account and exchange id) are "
        "skipped, so importing a file again adds nothing. A bad row is a 400 whose `line` "
        "names it, and nothing is stored. Accounts the file names that do not exist are "
        "created as manual accounts. `account` names the account of an exchange export "
        f"(default: the exchange); bodies over {MAX_IMPORT_BYTES // 1024 // 1024} MB are "
        "a 413.",
    )
    async def import_entries(
        request: Request,
        tenant: Tenant,
        source: Annotated[ImportSource, Query(description="The file's format.")] = "auto",
        account: Annotated[str | None, Query(max_length=64)] = None,
    ) -> ImportOut:
        charset = body_charset(request, CSV_TYPES)
        text = _decode(await read_body(request, max_import_bytes), charset)
        entries = await run_in_threadpool(
            parse_ledger, text, source=source, account=account, name="upload"
        )
        try:
            result = await service.import_entries(tenant, entries)
        except LedgerNotFound:
            raise
        except DomainError as exc:
            if exc.field == "id":  # an id stored with other content
                raise conflict(exc, "id") from None
            raise
        return ImportOut(added=result.added, skipped=result.skipped)

    @router.get(
        "/ledger/verify",
        dependencies=[requires("ledger:read")],
        response_model=VerifyOut,
        responses=problem_responses(400, 503),
        tags=["ledger"],
        summary="Check the hash chain",
        description="200 either way: `ok: false` names the first edited, deleted, "
        "reordered or missing entry in `first_broken`.",
    )
    async def verify(tenant: Tenant) -> VerifyOut:
        return VerifyOut.of(await service.verify(tenant))

    @router.post(
        "/ledger/{entry_id:path}/reverse",
        dependencies=[requires("ledger:write")],
        status_code=201,
        response_model=EntryData,
        responses=problem_responses(400, 404, 409, 503),
        tags=["ledger"],
        summary="Append the reversal of an entry",
        description="The reversal copies the entry under a new id (default "
        f"`<id>{_REVERSAL_SUFFIX}`) with `reverses` naming it; both then drop out of the "
        "accounting. 409: the entry is a reversal itself, is already reversed, or the new "
        "id is taken.",
    )
    async def reverse(
        entry_id: EntryId, tenant: Tenant, body: ReverseIn | None = None
    ) -> EntryData:
        wanted = body or ReverseIn()
        new_id = wanted.id if wanted.id is not None else entry_id + _REVERSAL_SUFFIX
        if len(new_id) > MAX_ID_LENGTH:
            raise DomainError("the reversal's id is too long: give one", field="id")
        try:
            reversal = await service.reverse(tenant, entry_id, new_id=new_id, note=wanted.note)
        except LedgerNotFound:
            raise
        except DomainError as exc:
            # entry_id: a reversal itself, or already reversed; new_id/id: the id is taken.
            if exc.field in ("entry_id", "new_id", "id"):
                raise conflict(exc, "entry_id" if exc.field == "entry_id" else "id") from None
            raise
        return EntryData.of(reversal)
