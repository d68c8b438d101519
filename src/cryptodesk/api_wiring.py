"""The API's security pieces built from Settings: the token secret, the
authentication service, the rate limiter and the first-run admin.

``runtime`` builds one ``ApiSecurity`` per API process; the CLI's ``user``
commands build the service alone.
"""

from __future__ import annotations

import os
import secrets
import socket
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fastapi import APIRouter
from sqlalchemy.ext.asyncio import AsyncEngine

from cryptodesk.adapters.db.auth_store import SqlAuthStore
from cryptodesk.adapters.ratelimit import open_rate_limiter
from cryptodesk.adapters.ratelimit.base import RateLimiter
from cryptodesk.api.app import HttpOptions
from cryptodesk.api.ratelimit import RateTiers, login_charge, parse_tiers, principal_charge
from cryptodesk.api.routes.ledger import MAX_IMPORT_BYTES
from cryptodesk.api.security import Auth
from cryptodesk.config import Settings
from cryptodesk.domain.auth import AuthenticationError, Principal
from cryptodesk.services.auth_service import AuthService

if TYPE_CHECKING:
    from cryptodesk.adapters.bus.base import Bus
    from cryptodesk.domain.signals import Signal
    from cryptodesk.portfolio_wiring import Portfolio
    from cryptodesk.services.market_queries import MarketQueries
    from cryptodesk.services.signal_queries import SignalQueries
    from cryptodesk.services.ws_channels import InternalBooks
    from cryptodesk.services.ws_feed import WsFeed

SECRET_FILE = "jwt-secret"


def token_secret(settings: Settings) -> bytes:
    """CRYPTODESK_JWT_SECRET, else a random one kept (mode 0600) in DATA_DIR."""
    configured = settings.jwt_secret.get_secret_value()
    if configured:
        return configured.encode()
    path = Path(settings.data_dir) / SECRET_FILE
    try:
        return path.read_bytes().strip()
    except FileNotFoundError:
        pass
    path.parent.mkdir(parents=True, exist_ok=True)
    secret = secrets.token_hex(32).encode()
    try:  # O_EXCL: when two processes start at once, one secret wins
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return path.read_bytes().strip()
    with os.fdopen(fd, "wb") as out:
        out.write(secret)
    return secret


def auth_service(settings: Settings, engine: AsyncEngine) -> AuthService:
    return AuthService(
        SqlAuthStore(engine), token_secret(settings),
        access_seconds=settings.access_token_seconds,
        refresh_seconds=settings.refresh_token_seconds,
    )  # fmt: skip


@dataclass
class ApiSecurity:
    auth: Auth
    limiter: RateLimiter
    tiers: RateTiers

    async def close(self) -> None:
        await self.limiter.close()


def api_security(settings: Settings, engine: AsyncEngine) -> ApiSecurity:
    limiter = open_rate_limiter(settings.cache_url, key_prefix=settings.cache_key_prefix)
    tiers = parse_tiers(settings.rate_limit_tiers)
    auth = Auth(
        auth_service(settings, engine),
        public_market_data=settings.public_market_data,
        charge=principal_charge(limiter, tiers),
        login_charge=login_charge(limiter, tiers),
    )
    return ApiSecurity(auth, limiter, tiers)


def http_options(settings: Settings) -> HttpOptions:
    return HttpOptions(
        cors_origins=settings.cors_origins, max_body_bytes=settings.max_body_bytes,
        hsts_seconds=settings.hsts_seconds,
        upload_limits={"/api/v1/ledger/import": MAX_IMPORT_BYTES},
    )  # fmt: skip


async def bootstrap_admin(service: AuthService, email: str) -> None:
    """First run: no user at all, so an admin with a one-time password, printed
    on stderr (never logged)."""
    password = await service.bootstrap(email=email)
    if password is not None:
        print(
            f"first run: created the admin {email} of tenant 'default' with the one-time "
            f"password {password} (shown only now; log in and create your users)",
            file=sys.stderr,
            flush=True,
        )


def websocket(
    settings: Settings,
    bus: Bus,
    queries: MarketQueries,
    signal_queries: SignalQueries,
    portfolio: Portfolio,
    auth: Auth,
    *,
    internal_books: InternalBooks | None = None,
) -> tuple[APIRouter, WsFeed]:
    """The WebSocket endpoint and the feed that fans the bus out to its clients
    (``feed.run`` is a task of the API process); ``internal_books`` reads the tenants'
    internal venue books for ``book:internal:SYMBOL``."""
    from cryptodesk.api.routes.ws import WsRenderer, ws_router
    from cryptodesk.portfolio import valuation as pv
    from cryptodesk.services.portfolio_valuation import quotes_to_dict
    from cryptodesk.services.ws_feed import WsFeed
    from cryptodesk.services.ws_hub import WsHub

    async def recent_signals() -> Sequence[Signal]:
        return (await signal_queries.signals(limit=50)).signals

    async def portfolio_now(tenant: str) -> dict[str, Any]:
        current = await portfolio.valuation.value(tenant)
        return {**pv.to_dict(current.valuation), "quotes": quotes_to_dict(current.quotes)}

    async def authenticate(token: str) -> Principal:
        principal = await auth.principal(token, None)
        if principal is None:
            raise AuthenticationError("this needs a token")
        return principal

    s = settings
    hub = WsHub(
        bus, queries, WsRenderer(), queue_size=s.websocket_queue_size,
        heartbeat_seconds=s.websocket_heartbeat_seconds,
        idle_timeout=s.websocket_idle_timeout_seconds, book_depth=s.websocket_book_depth,
        snapshot_candles=s.websocket_snapshot_candles, recent_signals=recent_signals,
        tenant_sources={"portfolio": portfolio_now}, internal_books=internal_books,
    )  # fmt: skip
    feed = WsFeed(
        hub, instance=f"{socket.gethostname()}-{os.getpid()}",
        ticker_poll_seconds=s.websocket_ticker_poll_seconds,
        tenant_poll_seconds=s.websocket_portfolio_poll_seconds,
    )  # fmt: skip
    router = ws_router(hub, authenticate, s.public_market_data,
                       auth_timeout=s.websocket_auth_timeout_seconds)  # fmt: skip
    return router, feed
