"""Authentication for API tests: a real ``AuthService`` on the test's database,
with a fast argon2 profile, and httpx auth that logs in as a tenant's user."""

from __future__ import annotations

import shutil
import tempfile
import uuid
from collections.abc import Generator
from functools import cache
from pathlib import Path

import httpx
from argon2 import PasswordHasher
from sqlalchemy.ext.asyncio import AsyncEngine

from cryptodesk.adapters.db import migrate
from cryptodesk.adapters.db.auth_store import SqlAuthStore
from cryptodesk.adapters.db.engine import create_engine
from cryptodesk.api.security import Auth
from cryptodesk.domain.auth import Role
from cryptodesk.services.auth_service import AuthService

SECRET = b"test-signing-secret-of-32-bytes!"
PASSWORD = "correct horse battery"
# argon2id at its cheapest: the tests check the flow, not the cost.
FAST_HASHER = PasswordHasher(time_cost=1, memory_cost=8, parallelism=1)


def auth_service(engine: AsyncEngine, **kwargs: object) -> AuthService:
    return AuthService(SqlAuthStore(engine), SECRET, hasher=FAST_HASHER, **kwargs)  # type: ignore[arg-type]


class Logins:
    """Users made on demand, one per (tenant, role), and their access tokens."""

    def __init__(self, service: AuthService) -> None:
        self.service = service
        self.auth = Auth(service)
        self._tokens: dict[tuple[str, Role], str] = {}

    @staticmethod
    def email(tenant: str, role: Role) -> str:
        return f"{role}@{tenant}.test"

    async def token(self, tenant: str, role: Role = "admin") -> str:
        key = (tenant, role)
        if key not in self._tokens:
            email = self.email(tenant, role)
            if await self.service.store.user_by_email(email) is None:
                await self.service.create_user(tenant, email, PASSWORD, role)
            self._tokens[key] = (await self.service.login(email, PASSWORD)).access_token
        return self._tokens[key]

    def bearer(self, tenant: str, role: Role = "admin") -> httpx.Auth:
        return _Bearer(self, tenant, role)


class _Bearer(httpx.Auth):
    def __init__(self, logins: Logins, tenant: str, role: Role) -> None:
        self._logins, self._tenant, self._role = logins, tenant, role

    def sync_auth_flow(
        self, request: httpx.Request
    ) -> Generator[httpx.Request, httpx.Response, None]:  # pragma: no cover
        raise RuntimeError("use an httpx.AsyncClient")

    async def async_auth_flow(self, request: httpx.Request):  # type: ignore[no-untyped-def]
        token = await self._logins.token(self._tenant, self._role)
        request.headers["Authorization"] = f"Bearer {token}"
        yield request


@cache
def _auth_template() -> Path:
    directory = Path(tempfile.mkdtemp(prefix="cryptodesk-auth-"))
    migrate.upgrade(f"sqlite+aiosqlite:///{directory / 'template.db'}")
    return directory / "template.db"


def auth_db() -> Path:
    """A fresh copy of a migrated database, for one test's users."""
    template = _auth_template()
    copy = template.with_name(f"auth-{uuid.uuid4().hex}.db")
    shutil.copyfile(template, copy)
    return copy


def fresh_logins() -> Logins:
    """``Logins`` on a database of their own (the app under test needs no other)."""
    return Logins(auth_service(create_engine(f"sqlite+aiosqlite:///{auth_db()}")))
