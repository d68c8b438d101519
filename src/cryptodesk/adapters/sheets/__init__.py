"""Spreadsheet delivery: a report table written to one named sheet.

``SheetWriter`` is the whole interface; ``gspread_sheets.GspreadSheets``
implements it over the Google Sheets API.
"""

from __future__ import annotations

from collections.abc import Sequence
from decimal import Decimal
from typing import Protocol

Cell = str | Decimal | int | float | None


class SheetWriter(Protocol):
    def replace_sheet(self, title: str, rows: Sequence[Sequence[Cell]]) -> None:
        """Make sheet ``title`` hold exactly ``rows`` (added when missing, replaced
        otherwise). Blocking: call it from a worker thread in async code."""
        ...


class SheetsError(Exception):
    """The spreadsheet could not be written; the message is one line an operator can act on."""
