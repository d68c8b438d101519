"""Authentication and permissions as FastAPI dependencies.

Every route declares the one permission it needs with ``requires(...)``
(docs/security.md has the matrix); ``tests/unit/test_api_rbac.py`` walks the
OpenAPI document and fails on a route that declares none. The dependency:

1. reads the credentials: ``Authorization: Bearer <access token>`` or
   ``X-API-Key: <key>`` (a key also works as a bearer token);
2. ignores credentials on ``public`` routes (probes, login) and lets
   anonymous callers read ``market:read`` routes while
   ``CRYPTODESK_PUBLIC_MARKET_DATA`` is on;
3. answers 401 (problem+json, ``WWW-Authenticate: Bearer``) for missing,
   malformed, expired, tampered or revoked credentials and 403 when the
   role or the key's scopes lack the permission;
4. charges the caller's rate limit (per API key, else per user);
5. leaves the principal on ``request.state.principal`` for ``Tenant`` and
   ``CurrentPrincipal``.

The ``x-permission`` extension of each operation in the OpenAPI document
names its permission.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Annotated, Any, Final

from fastapi import Depends, FastAPI, Request
from fastapi.routing import APIRoute, iter_route_contexts
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer

from cryptodesk.api.ratelimit import client_ip
from cryptodesk.domain.auth import (
    ANONYMOUS_ROLE,
    AuthenticationError,
    Permission,
    PermissionDenied,
    Principal,
)
from cryptodesk.services.auth_service import KEY_PREFIX, AuthService, Origin

ANONYMOUS_TENANT: Final = "public"
ANONYMOUS: Final = Principal(ANONYMOUS_TENANT, "", "", ANONYMOUS_ROLE, kind="user",
                             scopes=frozenset({"public", "market:read"}))  # fmt: skip
PERMISSION_EXTENSION: Final = "x-permission"

_bearer = HTTPBearer(auto_error=False, description="An access token from /api/v1/auth/login.")
_api_key = APIKeyHeader(name="X-API-Key", auto_error=False, description="An API key (cdk_...).")

# (principal, request) -> None; raises to refuse (the rate limiter).
Charge = Callable[[Principal, Request], Awaitable[None]]


@dataclass
class Auth:
    """What the dependencies need, kept on ``app.state.auth``."""

    service: AuthService
    public_market_data: bool = True
    charge: Charge | None = None
    # (client address, e-mail) -> None; raises to refuse a login attempt.
    login_charge: Callable[[str, str], Awaitable[None]] | None = None

    async def principal(self, bearer: str | None, api_key: str | None) -> Principal | None:
        if api_key:
            return await self.service.authenticate_key(api_key)
        if bearer:
            if bearer.startswith(KEY_PREFIX):
                return await self.service.authenticate_key(bearer)
            return await self.service.authenticate_token(bearer)
        return None


def origin_of(request: Request) -> Origin:
    """Where a request came from, as the rate limiter saw it (trusted proxies applied)."""
    return Origin(client_ip(request))


class Permit:
    """The dependency ``requires(permission)`` returns; it carries its permission."""

    def __init__(self, permission: Permission) -> None:
        self.permission = permission

    async def __call__(
        self,
        request: Request,
        bearer: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
        api_key: Annotated[str | None, Depends(_api_key)],
    ) -> Principal:
        auth: Auth | None = getattr(request.app.state, "auth", None)
        token = bearer.credentials if bearer is not None else None
        if self.permission == "public":  # probes, login: credentials play no part
            request.state.principal = ANONYMOUS
            return ANONYMOUS
        if not token and not api_key:
            if self.permission == "market:read" and (auth is None or auth.public_market_data):
                request.state.principal = ANONYMOUS
                return ANONYMOUS
            raise AuthenticationError("this needs credentials: a bearer token or an X-API-Key")
        if auth is None:
            raise AuthenticationError("authentication is not configured on this server")
        principal = await auth.principal(token, api_key)
        assert principal is not None
        if not principal.can(self.permission):
            raise PermissionDenied(self.permission)
        if auth.charge is not None:
            await auth.charge(principal, request)
        request.state.principal = principal
        return principal


def requires(permission: Permission) -> Any:
    """``dependencies=[requires("ledger:read")]`` on a route."""
    return Depends(Permit(permission))


def _principal(request: Request) -> Principal:
    principal = getattr(request.state, "principal", None)
    if not isinstance(principal, Principal):  # a route without requires(): a bug
        raise AuthenticationError("this route declares no permission")
    return principal


CurrentPrincipal = Annotated[Principal, Depends(_principal)]
# Any authenticated caller (each GraphQL field then checks its own permission).
AUTHENTICATED: Final = Permit("profile:read")


def route_permissions(app: FastAPI) -> dict[tuple[str, str], Permission]:
    """(path, METHOD) -> the permission its route declares (none: absent)."""
    found: dict[tuple[str, str], Permission] = {}
    for route in iter_route_contexts(app.routes):
        dependant = getattr(route, "dependant", None)
        if dependant is None or not isinstance(route.original_route, APIRoute):
            continue
        permit = _permit_of(dependant.dependencies)
        if permit is not None and route.path_format is not None:
            for method in route.methods or ():
                found[(route.path_format, method)] = permit.permission
    return found


def _permit_of(dependencies: list[Any]) -> Permit | None:
    for dep in dependencies:
        if isinstance(dep.call, Permit):
            return dep.call
        inner = _permit_of(dep.dependencies)
        if inner is not None:
            return inner
    return None


def annotate_permissions(app: FastAPI, doc: dict[str, Any], problem_ref: str) -> None:
    """Add ``x-permission`` to every operation that declares one, and the answers
    authentication adds: 401 for bad credentials (anywhere), 403 where a role
    or scope can fall short."""
    for (path, method), permission in route_permissions(app).items():
        operation = doc.get("paths", {}).get(path, {}).get(method.lower())
        if operation is None:
            continue
        operation[PERMISSION_EXTENSION] = permission
        if permission == "public":
            continue
        responses = operation.setdefault("responses", {})
        content = {"application/problem+json": {"schema": {"$ref": problem_ref}}}
        responses.setdefault("401", {"description": _UNAUTHORIZED, "content": content})
        responses.setdefault("403", {"description": _FORBIDDEN, "content": content})


_UNAUTHORIZED = "Credentials missing, malformed, expired, tampered with or revoked."
_FORBIDDEN = "The role or the API key's scopes lack the permission (`x-permission`)."
