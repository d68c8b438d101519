"""Google Sheets delivery through the real gspread and google-auth over a fake HTTP layer.

``FakeGoogle`` is a ``requests`` transport adapter mounted on the sessions, so
no request leaves the process. It answers as Google documents:

- OAuth 2.0 for service accounts, JWT bearer grant (form POST of
  ``grant_type`` and ``assertion`` to the key's ``token_uri``; JSON answer with
  ``access_token``, ``expires_in``, ``token_type``):
  https://developers.google.com/identity/protocols/oauth2/service-account#httprest
- spreadsheets.get: https://developers.google.com/sheets/api/reference/rest/v4/spreadsheets/get
- spreadsheets.batchUpdate (``replies``, ``AddSheetResponse``):
  https://developers.google.com/sheets/api/reference/rest/v4/spreadsheets/batchUpdate
- spreadsheets.values.update (``UpdateValuesResponse``):
  https://developers.google.com/sheets/api/reference/rest/v4/spreadsheets.values/update
- errors as ``{"error": {"code", "message", "status"}}``:
  https://cloud.google.com/apis/design/errors
"""

from __future__ import annotations

import json
from decimal import Decimal as D
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import pytest
import requests
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from google.auth import jwt
from requests.adapters import BaseAdapter

from cryptodesk.adapters.sheets import Cell, SheetsError
from cryptodesk.adapters.sheets.gspread_sheets import GspreadSheets, load_service_account

TOKEN_URI = "https://oauth2.fake.test/token"
KEY = "1AbCdEfGhIjKlMnOp"
BASE = f"https://sheets.googleapis.com/v4/spreadsheets/{KEY}"
EMAIL = "reports@cryptodesk-test.iam.gserviceaccount.com"
TITLE = "pnl-2024-06-02"
VALUES_URL = f"{BASE}/values/%27pnl-2024-06-02%27%21A1?valueInputOption=RAW"
ROWS: list[list[Cell]] = [
    ["account", "day_pnl", "note"],
    ["bin", D("-1234.5"), None],
    ["=SUM(A1)", D("0.1"), "x"],
]
SENT = [["account", "day_pnl", "note"], ["bin", -1234.5, ""], ["=SUM(A1)", 0.1, "x"]]


@pytest.fixture(scope="module")
def private_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.fixture
def info(private_key: rsa.RSAPrivateKey) -> dict[str, str]:
    pem = private_key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()
    return {
        "type": "service_account", "project_id": "cryptodesk-test", "private_key_id": "k1",
        "private_key": pem, "client_email": EMAIL, "client_id": "1234567890",
        "token_uri": TOKEN_URI,
    }  # fmt: skip


class FakeGoogle(BaseAdapter):
    """Google's token endpoint and the Sheets API v4 for one spreadsheet, in memory."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: list[tuple[str, str, Any]] = []
        self.sheets: list[dict[str, Any]] = [
            {"sheetId": 0, "title": "Sheet1", "index": 0, "sheetType": "GRID",
             "gridProperties": {"rowCount": 1000, "columnCount": 26}},
        ]  # fmt: skip
        self.values: dict[str, list[list[Any]]] = {}
        self.fail_next: list[tuple[int, str, str]] = []  # (code, status, message)
        self.token_error: dict[str, str] | None = None
        self.assertions: list[str] = []
        self.auth_headers: list[str | bytes | None] = []

    def send(
        self, request: requests.PreparedRequest, *args: Any, **kwargs: Any
    ) -> requests.Response:
        method, url = request.method or "", request.url or ""
        raw = request.body.decode() if isinstance(request.body, bytes) else str(request.body or "")
        if url == TOKEN_URI:
            form = dict(parse_qsl(raw or ""))
            self.calls.append((method, url, form))
            self.assertions.append(form.get("assertion", ""))
            if self.token_error is not None:
                return self._answer(request, 400, self.token_error)
            return self._answer(
                request,
                200,
                {"access_token": "ya29.fake-token", "expires_in": 3599, "token_type": "Bearer"},
            )
        body: Any = json.loads(raw) if raw else None
        self.calls.append((method, url, body))
        self.auth_headers.append(request.headers.get("Authorization"))
        if self.fail_next:
            code, status, message = self.fail_next.pop(0)
            return self._answer(
                request, code, {"error": {"code": code, "message": message, "status": status}}
            )
        path = urlsplit(url).path
        if method == "GET" and url == f"{BASE}?includeGridData=false":
            return self._answer(
                request,
                200,
                {
                    "spreadsheetId": KEY,
                    "properties": {"title": "Reports", "locale": "en_US", "timeZone": "Etc/GMT"},
                    "sheets": [{"properties": s} for s in self.sheets],
                    "spreadsheetUrl": f"https://docs.google.com/spreadsheets/d/{KEY}/edit",
                },
            )
        if method == "POST" and url == f"{BASE}:batchUpdate":
            return self._answer(
                request,
                200,
                {"spreadsheetId": KEY, "replies": [self._apply(r) for r in body["requests"]]},
            )
        if method == "PUT" and path.startswith(f"/v4/spreadsheets/{KEY}/values/"):
            self.values[TITLE] = body["values"]
            return self._answer(
                request,
                200,
                {
                    "spreadsheetId": KEY,
                    "updatedRange": f"'{TITLE}'!A1:C3",
                    "updatedRows": len(body["values"]),
                    "updatedColumns": 3,
                    "updatedCells": 9,
                },
            )
        return self._answer(
            request, 404, {"error": {"code": 404, "message": "Not Found", "status": "NOT_FOUND"}}
        )

    def _apply(self, change: dict[str, Any]) -> dict[str, Any]:
        if "addSheet" in change:
            props = dict(
                change["addSheet"]["properties"],
                sheetType="GRID",
                index=len(self.sheets),
                sheetId=100 + len(self.sheets),
            )
            self.sheets.append(props)
            return {"addSheet": {"properties": props}}
        return {}  # updateSheetProperties / updateCells have empty replies

    @staticmethod
    def _answer(request: requests.PreparedRequest, status: int, payload: Any) -> requests.Response:
        response = requests.Response()
        response.status_code = status
        response._content = json.dumps(payload).encode()
        response.headers["Content-Type"] = "application/json; charset=UTF-8"
        response.encoding = "utf-8"
        response.url = request.url or ""
        response.request = request
        return response

    def close(self) -> None:
        pass


@pytest.fixture
def google() -> FakeGoogle:
    return FakeGoogle()


def sheets(
    info: dict[str, str], google: FakeGoogle, sleeps: list[float] | None = None
) -> GspreadSheets:
    return GspreadSheets(
        info,
        KEY,
        transport=google,
        sleep=(sleeps.append if sleeps is not None else lambda _s: None),
    )


ADD_SHEET = {"requests": [{"addSheet": {"properties": {
    "title": TITLE, "gridProperties": {"rowCount": 3, "columnCount": 3, "frozenRowCount": 1},
}}}]}  # fmt: skip
PUT_VALUES = {"majorDimension": "ROWS", "values": SENT}


def test_adds_the_sheet_then_replaces_it(
    info: dict[str, str], google: FakeGoogle, private_key: rsa.RSAPrivateKey
) -> None:
    writer = sheets(info, google)
    writer.replace_sheet(TITLE, ROWS)
    token_call = google.calls[0]
    assert token_call[:2] == ("POST", TOKEN_URI)
    assert token_call[2]["grant_type"] == "urn:ietf:params:oauth:grant-type:jwt-bearer"
    assert google.calls[1:] == [
        ("GET", f"{BASE}?includeGridData=false", None),
        ("POST", f"{BASE}:batchUpdate", ADD_SHEET),
        ("PUT", VALUES_URL, PUT_VALUES),
    ]
    # The assertion is signed with the service account's key and asks for Sheets only.
    public = private_key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    # google-auth addresses the assertion to Google's endpoint whatever the token_uri.
    claims = jwt.decode(  # type: ignore[no-untyped-call]
        google.assertions[0], certs=public, audience="https://oauth2.googleapis.com/token"
    )
    assert (claims["iss"], claims["scope"]) == (
        EMAIL,
        "https://www.googleapis.com/auth/spreadsheets",
    )
    assert set(google.auth_headers) == {"Bearer ya29.fake-token"}
    assert google.values[TITLE] == SENT

    google.calls.clear()
    writer.replace_sheet(TITLE, ROWS[:2])  # a re-run: same sheet, now two rows
    sheet_id = 101
    grid = {"rowCount": 2, "columnCount": 3, "frozenRowCount": 1}
    assert google.calls == [  # the token is still valid: no new grant
        ("GET", f"{BASE}?includeGridData=false", None),
        ("POST", f"{BASE}:batchUpdate", {"requests": [
            {"updateSheetProperties": {
                "properties": {"sheetId": sheet_id, "gridProperties": grid},
                "fields": "gridProperties.rowCount,gridProperties.columnCount,"
                          "gridProperties.frozenRowCount"}},
            {"updateCells": {"range": {"sheetId": sheet_id}, "fields": "userEnteredValue"}},
        ]}),
        ("PUT", VALUES_URL, {"majorDimension": "ROWS", "values": SENT[:2]}),
    ]  # fmt: skip
    assert [s["title"] for s in google.sheets] == ["Sheet1", TITLE]


def test_a_rate_limit_retries_the_whole_sequence(info: dict[str, str], google: FakeGoogle) -> None:
    google.fail_next = [
        (429, "RESOURCE_EXHAUSTED", "Quota exceeded for quota metric 'Write requests'")
    ]
    sleeps: list[float] = []
    sheets(info, google, sleeps).replace_sheet(TITLE, ROWS)
    assert [(m, u) for m, u, _ in google.calls[1:]] == [
        ("GET", f"{BASE}?includeGridData=false"),  # answered 429
        ("GET", f"{BASE}?includeGridData=false"),
        ("POST", f"{BASE}:batchUpdate"),
        ("PUT", VALUES_URL),
    ]
    assert len(sleeps) == 1
    assert 0.2 <= sleeps[0] <= 2.0
    assert google.values[TITLE] == SENT


def test_retries_are_bounded(info: dict[str, str], google: FakeGoogle) -> None:
    google.fail_next = [(503, "UNAVAILABLE", "The service is currently unavailable.")] * 3
    with pytest.raises(SheetsError, match=f"spreadsheet {KEY}: Google Sheets answered 503: "
                                          "The service is currently unavailable."):  # fmt: skip
        sheets(info, google).replace_sheet(TITLE, ROWS)
    assert len(google.calls) == 1 + 3


def test_a_refusal_is_one_clear_error(info: dict[str, str], google: FakeGoogle) -> None:
    google.fail_next = [(403, "PERMISSION_DENIED", "The caller does not have permission")]
    with pytest.raises(SheetsError, match="answered 403: The caller does not have permission"):
        sheets(info, google).replace_sheet(TITLE, ROWS)
    assert len(google.calls) == 2  # no retry


def test_a_refused_sign_in_names_the_account(info: dict[str, str], google: FakeGoogle) -> None:
    google.token_error = {"error": "invalid_grant", "error_description": "Invalid JWT Signature."}
    with pytest.raises(SheetsError, match=f"service account {EMAIL} could not sign in"):
        sheets(info, google).replace_sheet(TITLE, ROWS)
    assert [c[1] for c in google.calls] == [TOKEN_URI]


def test_key_files_are_checked(tmp_path: Path, info: dict[str, str]) -> None:
    good = tmp_path / "sa.json"
    good.write_text(json.dumps(info))
    assert load_service_account(good)["client_email"] == EMAIL
    (tmp_path / "bad.json").write_text("{nope")
    with pytest.raises(SheetsError, match="is not JSON"):
        load_service_account(tmp_path / "bad.json")
    (tmp_path / "user.json").write_text(json.dumps({"type": "authorized_user"}))
    with pytest.raises(SheetsError, match="not a Google service account key"):
        load_service_account(tmp_path / "user.json")
    with pytest.raises(SheetsError, match="cannot read service account file"):
        load_service_account(tmp_path / "missing.json")
    with pytest.raises(SheetsError, match="invalid service account key"):
        GspreadSheets({"type": "service_account"}, KEY)
    with pytest.raises(SheetsError, match="no spreadsheet key"):
        GspreadSheets(info, "")
