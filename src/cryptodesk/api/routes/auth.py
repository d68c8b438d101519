"""Login, token refresh and logout, API keys, users and the audit log.

``/auth/login``, ``/auth/refresh`` and ``/auth/logout`` are public (the
credentials are in the body); login is also charged to its own, stricter
rate limit per client address and e-mail. The rest needs a token or key.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query, Request, Response
from pydantic import BaseModel, ConfigDict, Field

from cryptodesk.adapters.db.auth_store import ApiKeyRow, AuditRow, UserRow
from cryptodesk.api import examples as ex
from cryptodesk.api.routes.market import problem_responses
from cryptodesk.api.security import CurrentPrincipal, origin_of, requires
from cryptodesk.domain.auth import PERMISSIONS, PermissionDenied, Role
from cryptodesk.domain.timeutil import parse_time, to_iso
from cryptodesk.services.auth_service import AuthService, TokenPair
from cryptodesk.services.market_queries import NotFound

# (client address, e-mail) -> None; raises to refuse a login attempt.
LoginCharge = Callable[[str, str], Awaitable[None]]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class LoginIn(_Strict):
    model_config = ConfigDict(json_schema_extra={"examples": [ex.LOGIN]})

    email: str = Field(max_length=254, examples=["ana@acme.test"])
    password: str = Field(max_length=256, examples=["correct horse battery staple"])


class RefreshIn(_Strict):
    model_config = ConfigDict(json_schema_extra={"examples": [{"refresh_token": ex.REFRESH_TOKEN}]})

    refresh_token: str = Field(max_length=200)


class TokenOut(BaseModel):
    model_config = ConfigDict(json_schema_extra={"examples": [ex.TOKENS]})

    access_token: str
    refresh_token: str
    token_type: Literal["bearer"] = "bearer"
    expires_in: int = Field(description="Seconds the access token is valid.", examples=[900])


class MeOut(BaseModel):
    model_config = ConfigDict(json_schema_extra={"examples": [ex.ME]})

    tenant: str
    user_id: str
    email: str
    role: Role
    kind: Literal["user", "api_key"]
    scopes: list[str] | None
    permissions: list[str]


class RevokeAllIn(_Strict):
    model_config = ConfigDict(json_schema_extra={"examples": [{}, {"user_id": ex.USER_ID}]})

    user_id: str | None = Field(None, description="Another user of the tenant (admins only).")


class RevokedOut(BaseModel):
    model_config = ConfigDict(json_schema_extra={"examples": [{"refresh_tokens_revoked": 3}]})

    refresh_tokens_revoked: int


class ApiKeyIn(_Strict):
    model_config = ConfigDict(json_schema_extra={"examples": [ex.API_KEY_IN]})

    name: str = Field(min_length=1, max_length=64, examples=["grafana"])
    scopes: list[str] = Field(
        min_length=1, max_length=len(PERMISSIONS), examples=[["market:read", "portfolio:read"]]
    )
    expires_at: str | None = Field(None, description="ISO 8601 UTC; none: never expires.")


class ApiKeyOut(BaseModel):
    model_config = ConfigDict(json_schema_extra={"examples": [ex.API_KEY]})

    id: str
    name: str
    prefix: str
    scopes: list[str]
    created_at: str
    expires_at: str | None
    last_used_at: str | None
    revoked_at: str | None
    user_id: str


class NewApiKeyOut(ApiKeyOut):
    model_config = ConfigDict(json_schema_extra={"examples": [ex.NEW_API_KEY]})

    key: str = Field(description="The key itself: shown this once, stored only as a hash.")


class UserIn(_Strict):
    model_config = ConfigDict(json_schema_extra={"examples": [ex.NEW_USER]})

    email: str = Field(max_length=254)
    password: str = Field(min_length=12, max_length=256)
    role: Role


class RoleIn(_Strict):
    model_config = ConfigDict(json_schema_extra={"examples": [{"role": "manager"}]})

    role: Role


class UserOut(BaseModel):
    model_config = ConfigDict(json_schema_extra={"examples": [ex.USER]})

    id: str
    email: str
    role: str
    created_at: str
    disabled: bool


class AuditOut(BaseModel):
    model_config = ConfigDict(json_schema_extra={"examples": [ex.AUDIT_EVENT]})

    seq: int
    ts: str
    event: str
    actor: str | None
    subject: str | None
    ip: str | None
    detail: dict[str, Any]
    hash: str


class AuditPage(BaseModel):
    model_config = ConfigDict(json_schema_extra={"examples": [ex.AUDIT_PAGE]})

    events: list[AuditOut]
    next_cursor: str | None


def _iso(ms: int | None) -> str | None:
    return None if ms is None else to_iso(ms)


def _key_out(row: ApiKeyRow) -> dict[str, Any]:
    return {
        "id": row.id,
        "name": row.name,
        "prefix": row.prefix,
        "scopes": list(row.scopes),
        "created_at": to_iso(row.created_at),
        "expires_at": _iso(row.expires_at),
        "last_used_at": _iso(row.last_used_at),
        "revoked_at": _iso(row.revoked_at),
        "user_id": row.user_id,
    }


def _user_out(row: UserRow) -> UserOut:
    return UserOut(
        id=row.id,
        email=row.email,
        role=row.role,
        created_at=to_iso(row.created_at),
        disabled=row.disabled_at is not None,
    )


def _audit_out(row: AuditRow) -> AuditOut:
    return AuditOut(
        seq=row.seq,
        ts=to_iso(row.ts),
        event=row.event,
        actor=row.actor,
        subject=row.subject,
        ip=row.ip,
        detail=row.detail,
        hash=row.hash,
    )


def _tokens(pair: TokenPair) -> TokenOut:
    return TokenOut(
        access_token=pair.access_token, refresh_token=pair.refresh_token, expires_in=pair.expires_in
    )


def auth_router(service: AuthService, *, login_charge: LoginCharge | None = None) -> APIRouter:
    router = APIRouter(prefix="/api/v1", tags=["auth"])
    unauthorized = problem_responses(401, 422)

    @router.post(
        "/auth/login",
        summary="Log in: an access and a refresh token",
        dependencies=[requires("public")],
        responses=problem_responses(401, 422, 429),
    )
    async def login(body: LoginIn, request: Request) -> TokenOut:
        if login_charge is not None:
            await login_charge(origin_of(request).ip or "", body.email.strip().lower())
        return _tokens(await service.login(body.email, body.password, origin_of(request)))

    @router.post(
        "/auth/refresh",
        summary="Trade a refresh token for new tokens (rotation)",
        dependencies=[requires("public")],
        responses=unauthorized,
    )
    async def refresh(body: RefreshIn, request: Request) -> TokenOut:
        return _tokens(await service.refresh(body.refresh_token, origin_of(request)))

    @router.post(
        "/auth/logout",
        status_code=204,
        summary="Revoke a refresh token's family",
        dependencies=[requires("public")],
        responses=unauthorized,
    )
    async def logout(body: RefreshIn, request: Request) -> Response:
        await service.logout(body.refresh_token, origin_of(request))
        return Response(status_code=204)

    @router.get(
        "/auth/me",
        summary="Who the credentials belong to",
        dependencies=[requires("profile:read")],
        responses=problem_responses(401),
    )
    async def me(principal: CurrentPrincipal) -> MeOut:
        return MeOut(
            tenant=principal.tenant,
            user_id=principal.user_id,
            email=principal.email,
            role=principal.role,
            kind=principal.kind,
            scopes=None if principal.scopes is None else sorted(principal.scopes),
            permissions=[p for p in PERMISSIONS if principal.can(p)],
        )

    @router.post(
        "/auth/revoke-all",
        summary="Revoke every token of a user (default: yourself)",
        dependencies=[requires("profile:read")],
        responses=problem_responses(401, 403, 404),
    )
    async def revoke_all(
        principal: CurrentPrincipal, request: Request, body: RevokeAllIn | None = None
    ) -> RevokedOut:
        target = body.user_id if body is not None and body.user_id else principal.user_id
        if target != principal.user_id and not principal.can("users:manage"):
            raise PermissionDenied("users:manage")
        try:
            count = await service.revoke_all(principal, target, origin_of(request))
        except LookupError:
            raise not_found(f"no user {target} in this tenant") from None
        return RevokedOut(refresh_tokens_revoked=count)

    @router.post(
        "/api-keys",
        status_code=201,
        summary="Create an API key (shown once)",
        dependencies=[requires("api_keys:manage")],
        responses=problem_responses(401, 403, 422),
    )
    async def create_key(
        body: ApiKeyIn, principal: CurrentPrincipal, request: Request
    ) -> NewApiKeyOut:
        expires = None if body.expires_at is None else parse_time(body.expires_at)
        new = await service.create_api_key(
            principal, body.name, body.scopes, expires_at=expires, origin=origin_of(request)
        )
        return NewApiKeyOut(key=new.key, **_key_out(new.row))

    @router.get(
        "/api-keys",
        summary="Your API keys (admins: the tenant's)",
        dependencies=[requires("api_keys:manage")],
        responses=problem_responses(401, 403),
    )
    async def list_keys(principal: CurrentPrincipal) -> list[ApiKeyOut]:
        return [ApiKeyOut(**_key_out(row)) for row in await service.api_keys(principal)]

    @router.delete(
        "/api-keys/{key_id}",
        status_code=204,
        summary="Revoke an API key",
        dependencies=[requires("api_keys:manage")],
        responses=problem_responses(401, 403, 404),
    )
    async def revoke_key(key_id: str, principal: CurrentPrincipal, request: Request) -> Response:
        if not await service.revoke_api_key(principal, key_id, origin_of(request)):
            raise not_found(f"no live API key {key_id} of yours")
        return Response(status_code=204)

    @router.get(
        "/users",
        summary="Users of the tenant",
        dependencies=[requires("users:manage")],
        responses=problem_responses(401, 403),
    )
    async def list_users(principal: CurrentPrincipal) -> list[UserOut]:
        return [_user_out(row) for row in await service.users(principal.tenant)]

    @router.post(
        "/users",
        status_code=201,
        summary="Add a user to the tenant",
        dependencies=[requires("users:manage")],
        responses=problem_responses(401, 403, 409, 422),
    )
    async def create_user(body: UserIn, principal: CurrentPrincipal, request: Request) -> UserOut:
        row = await service.create_user(
            principal.tenant,
            body.email,
            body.password,
            body.role,
            actor=principal.email,
            origin=origin_of(request),
        )
        return _user_out(row)

    @router.patch(
        "/users/{user_id}",
        summary="Change a user's role",
        dependencies=[requires("users:manage")],
        responses=problem_responses(401, 403, 404, 422),
    )
    async def set_role(
        user_id: str, body: RoleIn, principal: CurrentPrincipal, request: Request
    ) -> UserOut:
        try:
            row = await service.set_role(principal, user_id, body.role, origin_of(request))
        except LookupError:
            raise not_found(f"no user {user_id} in this tenant") from None
        return _user_out(row)

    @router.get(
        "/admin/audit",
        summary="Security events of the tenant, oldest first",
        dependencies=[requires("audit:read")],
        responses=problem_responses(401, 403),
    )
    async def audit(
        principal: CurrentPrincipal,
        limit: Annotated[int, Query(ge=1, le=500)] = 100,
        cursor: Annotated[
            str | None,
            Query(pattern=r"^[0-9]{1,18}$", description="next_cursor of the previous page"),
        ] = None,
    ) -> AuditPage:
        rows = await service.audit_events(principal.tenant, after=int(cursor or 0), limit=limit + 1)
        more = len(rows) > limit
        rows = rows[:limit]
        return AuditPage(
            events=[_audit_out(r) for r in rows], next_cursor=str(rows[-1].seq) if more else None
        )

    return router


def not_found(message: str) -> NotFound:
    """A 404 for an id of another tenant or of nothing at all (the two look the same)."""
    return NotFound(message, field=None, code="not-found")
