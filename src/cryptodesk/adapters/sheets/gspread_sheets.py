"""A report table into one sheet of a Google spreadsheet, through gspread.

Authentication is a Google service account (its JSON key file); share the
spreadsheet with the account's ``client_email`` as an editor. Only the
Sheets scope is asked for: the spreadsheet is opened by key, never searched
for on Drive.

``replace_sheet`` makes three Sheets API v4 calls
(https://developers.google.com/sheets/api/reference/rest):

1. ``GET spreadsheets/{key}?includeGridData=false``: the sheets it holds;
2. ``POST spreadsheets/{key}:batchUpdate``: ``addSheet`` when the title is
   new, else ``updateSheetProperties`` (grid resized to the table) and
   ``updateCells`` (old values cleared), keeping the sheet's id so links to it
   still work;
3. ``PUT spreadsheets/{key}/values/'{title}'!A1?valueInputOption=RAW``: every
   row in one call. RAW stores text as text (a cell starting with ``=`` is
   never run as a formula); numbers go as JSON numbers, so the sheet holds
   numbers (doubles: Sheets has no decimal type).

A 429 or 5xx answer, or a lost connection, retries the whole sequence with
backoff (it is idempotent) up to ``attempts`` times; any other failure is a
``SheetsError`` naming the spreadsheet and Google's message. ``transport``
replaces the HTTP layer (a ``requests`` adapter) for tests.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Mapping, Sequence
from decimal import Decimal
from pathlib import Path
from typing import Any, Final

import gspread
import requests
import structlog
from google.auth.exceptions import GoogleAuthError
from google.auth.transport.requests import AuthorizedSession, Request
from google.oauth2.service_account import Credentials
from requests.adapters import BaseAdapter

from cryptodesk.adapters.sheets import Cell, SheetsError
from cryptodesk.domain.backoff import backoff_delays

log = structlog.get_logger(__name__)

SCOPES: Final = ("https://www.googleapis.com/auth/spreadsheets",)
RETRY_STATUSES: Final = frozenset({429, 500, 502, 503, 504})
_RETRY_INITIAL: Final = 2.0
_RETRY_CAP: Final = 60.0


def load_service_account(path: Path) -> dict[str, Any]:
    """The service account key file as a dict, or SheetsError saying what is wrong."""
    try:
        info = json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise SheetsError(f"cannot read service account file {path}: {exc.strerror}") from None
    except ValueError:
        raise SheetsError(f"service account file {path} is not JSON") from None
    if not isinstance(info, dict) or info.get("type") != "service_account":
        raise SheetsError(f"{path} is not a Google service account key (type service_account)")
    return info


def _cell(value: Cell) -> str | int | float:
    if value is None:
        return ""
    if isinstance(value, Decimal):
        return float(value)
    return value


def quoted_range(title: str) -> str:
    """A1 notation of the sheet's first cell, the title quoted as Sheets requires."""
    return "'" + title.replace("'", "''") + "'!A1"


class GspreadSheets:
    """Writes tables to the spreadsheet ``spreadsheet_key`` (see the module docstring)."""

    def __init__(
        self,
        info: Mapping[str, Any],
        spreadsheet_key: str,
        *,
        timeout: float = 30.0,
        attempts: int = 3,
        transport: BaseAdapter | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        if not spreadsheet_key:
            raise SheetsError("no spreadsheet key configured")
        if attempts < 1:
            raise ValueError("attempts must be >= 1")
        try:
            credentials = Credentials.from_service_account_info(  # type: ignore[no-untyped-call]
                info, scopes=list(SCOPES)
            )
        except (ValueError, KeyError) as exc:
            raise SheetsError(f"invalid service account key: {exc}") from None
        # The token exchange runs on its own session, so a transport must serve both.
        token_session = requests.Session()
        session = AuthorizedSession(  # type: ignore[no-untyped-call]
            credentials, auth_request=Request(token_session)
        )
        if transport is not None:
            for s in (session, token_session):
                s.mount("https://", transport)
                s.mount("http://", transport)
        self._client = gspread.authorize(credentials, session=session)
        self._client.set_timeout(timeout)
        self._key = spreadsheet_key
        self._attempts = attempts
        self._sleep = sleep
        self.account = str(info.get("client_email", ""))

    @classmethod
    def from_file(cls, path: Path, spreadsheet_key: str, **options: Any) -> GspreadSheets:
        return cls(load_service_account(path), spreadsheet_key, **options)

    def replace_sheet(self, title: str, rows: Sequence[Sequence[Cell]]) -> None:
        delays = backoff_delays(_RETRY_INITIAL, _RETRY_CAP)
        for attempt in range(1, self._attempts + 1):
            try:
                self._replace(title, rows)
                return
            except gspread.exceptions.APIError as exc:
                status = exc.response.status_code
                if status not in RETRY_STATUSES or attempt == self._attempts:
                    message = exc.error.get("message", "")
                    raise SheetsError(
                        f"spreadsheet {self._key}: Google Sheets answered {status}: {message}"
                    ) from None
                reason = f"HTTP {status}"
            except (requests.ConnectionError, requests.Timeout) as exc:
                if attempt == self._attempts:
                    raise SheetsError(
                        f"spreadsheet {self._key}: Google Sheets unreachable: {exc}"
                    ) from None
                reason = type(exc).__name__
            except GoogleAuthError as exc:
                raise SheetsError(
                    f"spreadsheet {self._key}: service account {self.account} "
                    f"could not sign in: {exc}"
                ) from None
            delay = next(delays)
            log.warning("sheets write failed, retrying", spreadsheet=self._key, sheet=title,
                        reason=reason, attempt=attempt, retry_in=round(delay, 2))  # fmt: skip
            self._sleep(delay)

    def _replace(self, title: str, rows: Sequence[Sequence[Cell]]) -> None:
        http = self._client.http_client
        meta = http.fetch_sheet_metadata(self._key)
        existing = next(
            (s["properties"] for s in meta.get("sheets", []) if s["properties"]["title"] == title),
            None,
        )
        grid = {
            "rowCount": max(1, len(rows)),
            "columnCount": max(1, max((len(r) for r in rows), default=1)),
            "frozenRowCount": 1 if len(rows) > 1 else 0,
        }
        if existing is None:
            changes: list[dict[str, Any]] = [
                {"addSheet": {"properties": {"title": title, "gridProperties": grid}}}
            ]
        else:
            sheet_id = existing["sheetId"]
            changes = [
                {
                    "updateSheetProperties": {
                        "properties": {"sheetId": sheet_id, "gridProperties": grid},
                        "fields": "gridProperties.rowCount,gridProperties.columnCount,"
                        "gridProperties.frozenRowCount",
                    }
                },
                {"updateCells": {"range": {"sheetId": sheet_id}, "fields": "userEnteredValue"}},
            ]
        http.batch_update(self._key, {"requests": changes})
        http.values_update(
            self._key,
            quoted_range(title),
            params={"valueInputOption": "RAW"},
            body={"majorDimension": "ROWS", "values": [[_cell(c) for c in r] for r in rows]},
        )
