"""How the ledger routes fail: their causes mapped to RFC 9457 problem+json.

The app's handlers map a ``DomainError`` to a 400 naming its field; the ledger
adds causes of its own, answered here: an unknown account or entry (404
``unknown-account``/``unknown-entry``), a name or id already taken (409
``conflict``), a bad CSV row (400 ``invalid-ledger-file`` with the ``line``
and ``field`` as extension members), an upload refused (413/415), and the
database unusable (503; its message names the database, so it goes to the
log only).
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from typing import Any

import msgspec
import structlog
from fastapi import Request, Response
from fastapi.routing import APIRoute

from cryptodesk.adapters.db.engine import StorageError
from cryptodesk.adapters.files.ledger_csv import LedgerFileError
from cryptodesk.api.problems import ProblemResponse, problem
from cryptodesk.api.uploads import UploadRefused
from cryptodesk.domain.errors import DomainError
from cryptodesk.services.ledger_service import LedgerNotFound

log = structlog.get_logger(__name__)


class LedgerProblem(Exception):
    """An answer other than 400/404 for a known cause; becomes problem+json."""

    def __init__(
        self,
        status: int,
        code: str,
        detail: str,
        *,
        name: str | None = None,
        extra: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(detail)
        self.status, self.code, self.detail = status, code, detail
        self.name, self.extra = name, extra or {}

    def response(self, path: str) -> Response:
        errors = None if self.name is None else [{"name": self.name, "reason": self.detail}]
        answer = problem(path, self.code, self.status, self.detail, errors=errors)
        if not self.extra:
            return answer
        body = msgspec.json.decode(answer.body)  # RFC 9457 extension members
        return ProblemResponse({**body, **self.extra}, status_code=self.status)


def _not_found(exc: LedgerNotFound) -> LedgerProblem:
    code = "unknown-account" if exc.field == "account" else "unknown-entry"
    return LedgerProblem(404, code, str(exc), name=exc.field)


def _bad_file(exc: LedgerFileError) -> LedgerProblem:
    extra: dict[str, Any] = {"line": exc.line} if exc.line is not None else {}
    if exc.field is not None:
        extra["field"] = exc.field
    return LedgerProblem(400, "invalid-ledger-file", str(exc), name="body", extra=extra)


class LedgerRoute(APIRoute):
    """Maps the ledger's own failures to problem+json; the app maps the rest."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def run(request: Request) -> Response:
            try:
                return await handler(request)
            except LedgerProblem as exc:
                return exc.response(request.url.path)
            except UploadRefused as exc:
                refused = LedgerProblem(exc.status, exc.code, exc.detail, name=exc.name)
                return refused.response(request.url.path)
            except LedgerNotFound as exc:
                return _not_found(exc).response(request.url.path)
            except LedgerFileError as exc:
                return _bad_file(exc).response(request.url.path)
            except StorageError as exc:
                # The message names the database (a file path, a host): log it only.
                log.warning("ledger storage failed", path=request.url.path, error=str(exc))
                detail = "the ledger database cannot be used right now; see the server log"
                return LedgerProblem(503, "service-unavailable", detail).response(request.url.path)

        return run


def conflict(exc: DomainError, name: str) -> LedgerProblem:
    return LedgerProblem(409, "conflict", str(exc), name=name)
