"""Rate limits at the API edge: tiers, the per-address middleware, and ``enforce``.

Every HTTP request but the probes (``/healthz``, ``/readyz``, ``/metrics``)
draws on the bucket of its client address (tier ``ip``); the auth layer draws
on the caller's bucket (``user`` or ``key``, by ``Principal.rate_key``) and
the login route on a stricter one per address and e-mail (``login``). Over a
limit the answer is 429 problem+json with ``Retry-After``; every answer
carries the fields of draft-ietf-httpapi-ratelimit-headers-06
(``RateLimit-Limit``, ``-Remaining``, ``-Reset``, ``-Policy``) for the limit
closest to running out. docs/rate-limits.md is the user's page.
"""

from __future__ import annotations

import ipaddress
import math
import re
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Final

from fastapi import FastAPI, Request
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from cryptodesk.adapters.ratelimit.base import EPSILON, Decision, RateLimiter, Tier
from cryptodesk.api.problems import PROBLEM_BASE, ProblemResponse
from cryptodesk.domain.auth import Principal

TIER_NAMES: Final = ("ip", "user", "key", "login")
DEFAULT_TIERS: Final = "ip=50/s:100,user=20/s:40,key=50/s:100,login=5/m:5"
EXEMPT_PATHS: Final = frozenset({"/healthz", "/readyz", "/metrics"})
RATE_LIMITED_TYPE: Final = PROBLEM_BASE + "rate-limited"
# Where the middleware leaves the client's resolved address and a route's own RateLimit
# fields for the response (Starlette's ``request.state`` is this dict).
_STATE_CLIENT = "rate_limit_client"
_STATE_HEADERS = "rate_limit_headers"
_FIELDS = ("RateLimit-Limit", "RateLimit-Remaining", "RateLimit-Reset", "RateLimit-Policy")

_PERIODS = {"s": 1, "m": 60, "h": 3600, "d": 86_400}
_TIER = re.compile(
    r"(?P<name>[a-z_]+)=(?P<count>\d+(?:\.\d+)?)/(?P<n>\d*)(?P<unit>[smhd])(?::(?P<burst>\d+))?"
)
_FORMAT = "NAME=COUNT/PERIOD[:BURST] such as ip=20/s:40 (periods s, m, h, d, or 15m, 2h, ...)"

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
Address = ipaddress.IPv4Address | ipaddress.IPv6Address


@dataclass(frozen=True, slots=True)
class RateTiers:
    """The four limits: per client address, user, API key and login attempt."""

    ip: Tier
    user: Tier
    key: Tier
    login: Tier

    def for_principal(self, rate_key: str) -> Tier:
        """The tier of a ``Principal.rate_key``: ``key:...`` or ``user:...``."""
        return self.key if rate_key.startswith("key:") else self.user


def parse_tiers(text: str) -> RateTiers:
    """``ip=20/s:40,login=5/m:5``: the tiers named, the others from DEFAULT_TIERS.

    ``COUNT/PERIOD`` is the refill rate, ``BURST`` the bucket size (default:
    COUNT rounded up). Anything else is a ``ValueError`` of one line.
    """
    tiers = _parse(DEFAULT_TIERS)
    tiers.update(_parse(text))
    return RateTiers(**tiers)


def _parse(text: str) -> dict[str, Tier]:
    tiers: dict[str, Tier] = {}
    for item in (part.strip() for part in text.split(",")):
        if not item:
            continue
        match = _TIER.fullmatch(re.sub(r"\s+", "", item))
        if match is None:
            raise ValueError(f"rate limit tiers: {item!r} is not {_FORMAT}")
        name = match["name"]
        if name not in TIER_NAMES:
            raise ValueError(
                f"rate limit tiers: unknown tier {name!r} (tiers: {', '.join(TIER_NAMES)})"
            )
        if name in tiers:
            raise ValueError(f"rate limit tiers: tier {name!r} is given twice")
        count, period = float(match["count"]), int(match["n"] or 1) * _PERIODS[match["unit"]]
        burst = int(match["burst"]) if match["burst"] else math.ceil(count)
        if count <= 0 or period <= 0 or burst < 1:
            raise ValueError(f"rate limit tiers: {item!r} needs a count, period and burst above 0")
        tiers[name] = Tier(name, count / period, burst)
    return tiers


def parse_trusted_proxies(proxies: str | Iterable[str]) -> tuple[Network, ...]:
    """Addresses or CIDR blocks, comma separated: ``10.0.0.0/8,127.0.0.1``."""
    items = proxies.split(",") if isinstance(proxies, str) else proxies
    networks = []
    for item in (part.strip() for part in items):
        if not item:
            continue
        try:
            networks.append(ipaddress.ip_network(item, strict=False))
        except ValueError:
            raise ValueError(
                f"trusted proxies: {item!r} is not an IP address or CIDR block"
            ) from None
    return tuple(networks)


# -- the client's address ----------------------------------------------------------


def _address(text: str) -> Address | None:
    """An address as proxies write it: bare, ``[v6]:port`` or ``v4:port``."""
    text = text.strip().strip('"')
    if text.startswith("["):
        text = text[1 : text.find("]")] if "]" in text else text
    elif text.count(":") == 1:
        text = text.split(":", 1)[0]
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def _trusted(address: Address, trusted: tuple[Network, ...]) -> bool:
    return any(address in network for network in trusted)


def client_address(scope: Scope, trusted: tuple[Network, ...] = ()) -> Address | None:
    """The client's address: the direct peer, or what trusted proxies say it is.

    ``X-Forwarded-For`` is believed only when the direct peer is a trusted
    proxy; it is then read right to left, past every trusted proxy, to the
    first address that is not one (what a client writes in the header itself
    lies left of that and is never reached).
    """
    peer = scope.get("client")
    address = _address(str(peer[0])) if peer else None
    if address is None or not _trusted(address, trusted):
        return address
    hops = [
        hop
        for name, value in scope.get("headers", ())
        if name == b"x-forwarded-for"
        for hop in value.decode("latin-1").split(",")
    ]
    for hop in reversed(hops):
        forwarded = _address(hop)
        if forwarded is None:
            break  # a proxy would never write this: keep the last trusted hop
        address = forwarded
        if not _trusted(address, trusted):
            break
    return address


def address_key(address: Address | str | None) -> str:
    """What the ``ip`` tier counts: the address, or its /64 for IPv6 (one IPv6
    host usually holds a whole /64); text that is no address is kept as it is."""
    parsed = _address(address) if isinstance(address, str) else address
    if parsed is None:
        return address if isinstance(address, str) and address else "unknown"
    if isinstance(parsed, ipaddress.IPv6Address):
        return str(ipaddress.IPv6Network((parsed, 64), strict=False))
    return str(parsed)


def client_ip(request: Request) -> str | None:
    """The client's address as the middleware resolved it (trusting only the
    configured proxies); without the middleware, the direct peer."""
    noted = request.scope.get("state", {}).get(_STATE_CLIENT)
    if noted is not None:
        return str(noted)
    return request.client.host if request.client is not None else None


# -- headers and the 429 ------------------------------------------------------------


def _per(tier: Tier) -> tuple[int, int]:
    """The rate as a count per the shortest window that makes it a whole number."""
    for window in (1, 60, 3600, 86_400):
        count = tier.rate * window
        if abs(count - round(count)) < 1e-6 and round(count) >= 1:
            return round(count), window
    return max(1, round(tier.rate * 86_400)), 86_400


def policy(tier: Tier) -> str:
    """The ``RateLimit-Policy`` item: ``COUNT;w=SECONDS;burst=BURST``."""
    count, window = _per(tier)
    return f"{count:g};w={window};burst={tier.burst}"


def rate_limit_headers(decision: Decision, tier: Tier) -> dict[str, str]:
    headers = {
        "RateLimit-Limit": str(decision.limit),
        "RateLimit-Remaining": str(decision.remaining),
        "RateLimit-Reset": str(max(0, math.ceil(decision.reset_seconds - EPSILON))),
        "RateLimit-Policy": policy(tier),
    }
    if not decision.allowed:
        headers["Retry-After"] = str(decision.retry_after_seconds)
    return headers


class RateLimited(Exception):
    """A request over its limit: the app answers 429 (``install_rate_limit_handler``)."""

    def __init__(self, decision: Decision, tier: Tier) -> None:
        count, window = _per(tier)
        unit = {1: "second", 60: "minute", 3600: "hour", 86_400: "day"}[window]
        super().__init__(
            f"rate limit {tier.name!r} exceeded: {tier.burst} requests at once, then "
            f"{count:g} per {unit}; retry in {decision.retry_after_seconds} s"
        )
        self.decision = decision
        self.tier = tier

    @property
    def headers(self) -> dict[str, str]:
        return rate_limit_headers(self.decision, self.tier)


def rate_limited_response(path: str, exc: RateLimited) -> Response:
    """The 429 problem (``problems.problem`` would title it "Too Many Requests")."""
    body = {
        "type": RATE_LIMITED_TYPE,
        "title": "Too many requests",
        "status": 429,
        "detail": str(exc),
        "instance": path,
    }
    return ProblemResponse(body, status_code=429, headers=exc.headers)


async def enforce(limiter: RateLimiter, key: str, tier: Tier, *, cost: float = 1) -> dict[str, str]:
    """Take ``cost`` from ``key``'s bucket; its RateLimit fields, or ``RateLimited``.

    Hand the fields to ``attach_rate_limit_headers`` so the response shows
    them when this limit is closer to running out than the address's.
    """
    decision = await limiter.hit(key, tier, cost)
    if not decision.allowed:
        raise RateLimited(decision, tier)
    return rate_limit_headers(decision, tier)


def attach_rate_limit_headers(request: Request, headers: Mapping[str, str]) -> None:
    request.scope.setdefault("state", {})[_STATE_HEADERS] = dict(headers)


async def _on_rate_limited(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, RateLimited)
    return rate_limited_response(request.url.path, exc)


def install_rate_limit_handler(app: FastAPI) -> None:
    app.add_exception_handler(RateLimited, _on_rate_limited)


def principal_charge(
    limiter: RateLimiter, tiers: RateTiers
) -> Callable[[Principal, Request], Awaitable[None]]:
    """The auth layer's charge: the caller's ``key`` or ``user`` bucket."""

    async def charge(principal: Principal, request: Request) -> None:
        tier = tiers.for_principal(principal.rate_key)
        attach_rate_limit_headers(request, await enforce(limiter, principal.rate_key, tier))

    return charge


def login_charge(limiter: RateLimiter, tiers: RateTiers) -> Callable[[str, str], Awaitable[None]]:
    """The login route's charge: one address trying one e-mail (tier ``login``)."""

    async def charge(address: str, email: str) -> None:
        await enforce(limiter, f"{address_key(address)}|{email.strip().lower()}", tiers.login)

    return charge


def _fields(pairs: Iterable[tuple[str, str]]) -> dict[str, str]:
    """The RateLimit fields among ``pairs``, under their canonical names."""
    canonical = {field.lower(): field for field in _FIELDS}
    return {canonical[n.lower()]: v for n, v in pairs if n.lower() in canonical}


def _merge(ours: dict[str, str], theirs: Mapping[str, str]) -> dict[str, str]:
    """The fields of the limit with fewer requests left; every policy listed."""
    if not all(field in theirs for field in _FIELDS):
        return ours
    try:
        closer = (
            theirs
            if int(theirs["RateLimit-Remaining"]) <= int(ours["RateLimit-Remaining"])
            else ours
        )
    except ValueError:
        return ours
    policies = [theirs["RateLimit-Policy"], ours["RateLimit-Policy"]]
    return {**closer, "RateLimit-Policy": ", ".join(dict.fromkeys(policies))}


class RateLimitMiddleware:
    """Limits every HTTP request per client address (tier ``ip``), probes exempt."""

    def __init__(
        self,
        app: ASGIApp,
        limiter: RateLimiter,
        tiers: RateTiers,
        *,
        trusted_proxies: str | Iterable[str] = (),
        exempt: Iterable[str] = EXEMPT_PATHS,
    ) -> None:
        self._app = app
        self._limiter = limiter
        self._tier = tiers.ip
        self._trusted = parse_trusted_proxies(trusted_proxies)
        self._exempt = frozenset(exempt)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope.get("path") in self._exempt:
            await self._app(scope, receive, send)
            return
        address = client_address(scope, self._trusted)
        state: dict[str, Any] = scope.setdefault("state", {})
        if address is not None:
            state[_STATE_CLIENT] = str(address)
        decision = await self._limiter.hit(address_key(address), self._tier)
        if not decision.allowed:
            response = rate_limited_response(
                str(scope.get("path", "")), RateLimited(decision, self._tier)
            )
            await response(scope, receive, send)
            return
        ours = rate_limit_headers(decision, self._tier)

        async def send_with_fields(message: Message) -> None:
            if message["type"] == "http.response.start":
                raw = list(message.get("headers", []))
                theirs = _fields(
                    (name.decode("latin-1"), value.decode("latin-1")) for name, value in raw
                ) or _fields(state.get(_STATE_HEADERS, {}).items())
                kept = [(n, v) for n, v in raw if not n.lower().startswith(b"ratelimit-")]
                fields = _merge(ours, theirs)
                kept += [(n.lower().encode(), v.encode()) for n, v in fields.items()]
                message = {**message, "headers": kept}
            await send(message)

        await self._app(scope, receive, send_with_fields)
