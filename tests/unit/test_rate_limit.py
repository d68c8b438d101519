"""Rate limits: the in-process buckets, the tiers setting, the client's address,
and the middleware and 429s as a client sees them through a small FastAPI app."""

from __future__ import annotations

import asyncio
import re
from typing import Any

import httpx
import pytest
import structlog
from fastapi import FastAPI, Request

from cryptodesk.adapters.ratelimit import MemoryRateLimiter, RateLimiter, Tier
from cryptodesk.adapters.ratelimit.redis import RedisRateLimiter
from cryptodesk.api.ratelimit import (
    RateLimitMiddleware,
    address_key,
    client_address,
    client_ip,
    install_rate_limit_handler,
    login_charge,
    parse_tiers,
    parse_trusted_proxies,
    policy,
    principal_charge,
)
from cryptodesk.domain.auth import Principal
from tests.contracts.rate_limit_contract import RateLimitContract
from tests.servers import free_port

PROBLEM = "application/problem+json"


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class TestMemoryRateLimiter(RateLimitContract):
    @pytest.fixture
    def limiter(self) -> MemoryRateLimiter:
        self.clock = FakeClock()
        return MemoryRateLimiter(clock=self.clock)

    async def advance(self, seconds: float) -> None:
        self.clock.now += seconds


# -- the in-process buckets ------------------------------------------------------------


async def test_exact_numbers_on_a_fake_clock() -> None:
    clock = FakeClock()
    limiter = MemoryRateLimiter(clock=clock)
    tier = Tier("t", rate=2, burst=4)
    await limiter.hit("k", tier, 3)
    clock.now += 0.25  # 1.5 tokens
    d = await limiter.hit("k", tier)
    assert (d.allowed, d.remaining, d.reset_seconds, d.retry_after_seconds) == (True, 0, 1.75, 0)
    d = await limiter.hit("k", tier)
    assert (d.allowed, d.remaining, d.reset_seconds, d.retry_after_seconds) == (False, 0, 1.75, 1)


async def test_a_whole_token_refilled_in_small_steps_is_a_whole_token() -> None:
    clock = FakeClock()
    limiter = MemoryRateLimiter(clock=clock)
    tier = Tier("t", rate=10, burst=1)
    assert (await limiter.hit("k", tier)).allowed
    for _ in range(10):
        clock.now += 0.01  # 0.1 s in floating point is a hair short of 0.1
    d = await limiter.hit("k", tier)
    assert (d.allowed, d.remaining) == (True, 0)


async def test_buckets_full_again_are_dropped() -> None:
    clock = FakeClock()
    limiter = MemoryRateLimiter(clock=clock)
    tier, slow = Tier("ip", rate=10, burst=2), Tier("login", rate=0.1, burst=1)
    for i in range(1000):
        await limiter.hit(f"10.0.{i // 256}.{i % 256}", tier)
    await limiter.hit("ana", slow)
    assert (limiter.size("ip"), limiter.size("login"), limiter.size()) == (1000, 1, 1001)
    clock.now += 0.1  # one token back in 0.1 s: every "ip" bucket is full
    await limiter.hit("10.9.9.9", tier)
    assert (limiter.size("ip"), limiter.size("login")) == (1, 1)
    clock.now += 10
    await limiter.hit("bob", slow)
    assert (limiter.size("ip"), limiter.size("login")) == (1, 1)  # "ana" went, "bob" came


async def test_at_most_max_keys_buckets_per_tier() -> None:
    limiter = MemoryRateLimiter(clock=FakeClock(), max_keys=3)
    tier = Tier("t", rate=0.001, burst=1)
    for key in "abcde":
        assert (await limiter.hit(key, tier)).allowed
    assert limiter.size("t") == 3
    assert [(await limiter.hit(key, tier)).allowed for key in "cde"] == [False] * 3
    assert (await limiter.hit("a", tier)).allowed  # forgotten: a full bucket again


def test_a_tier_needs_a_positive_rate_and_burst() -> None:
    with pytest.raises(ValueError, match="tier t: rate must be a positive number per second"):
        Tier("t", rate=0, burst=1)
    with pytest.raises(ValueError, match="tier t: burst must be at least 1"):
        Tier("t", rate=1, burst=0)


# -- the tiers setting -----------------------------------------------------------------


def test_the_defaults_and_what_overrides_them() -> None:
    defaults = parse_tiers("")
    assert (defaults.ip, defaults.user, defaults.key) == (
        Tier("ip", 50, 100),
        Tier("user", 20, 40),
        Tier("key", 50, 100),
    )
    assert defaults.login == Tier("login", 5 / 60, 5)
    tiers = parse_tiers(" ip=20/s:40 , login = 10/15m, user=0.5/s,")
    assert tiers.ip == Tier("ip", 20, 40)
    assert tiers.login == Tier("login", 10 / 900, 10)  # burst defaults to the count
    assert tiers.user == Tier("user", 0.5, 1)
    assert tiers.key == defaults.key
    assert tiers.for_principal("key:k1") is tiers.key
    assert tiers.for_principal("user:u1") is tiers.user


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("bots=1/s", "rate limit tiers: unknown tier 'bots' (tiers: ip, user, key, login)"),
        ("ip=20/x:40", "rate limit tiers: 'ip=20/x:40' is not NAME=COUNT/PERIOD[:BURST] such"),
        ("ip=20", "rate limit tiers: 'ip=20' is not NAME=COUNT/PERIOD[:BURST]"),
        ("ip=-1/s", "rate limit tiers: 'ip=-1/s' is not NAME=COUNT/PERIOD[:BURST]"),
        ("ip=1/s,ip=2/s", "rate limit tiers: tier 'ip' is given twice"),
        ("ip=0/s:5", "rate limit tiers: 'ip=0/s:5' needs a count, period and burst above 0"),
        ("ip=5/s:0", "rate limit tiers: 'ip=5/s:0' needs a count, period and burst above 0"),
        ("ip=5/0m", "rate limit tiers: 'ip=5/0m' needs a count, period and burst above 0"),
    ],
)
def test_a_bad_tiers_setting_says_what_is_wrong_in_one_line(text: str, message: str) -> None:
    with pytest.raises(ValueError, match="^" + re.escape(message)):
        parse_tiers(text)


@pytest.mark.parametrize(
    ("tier", "expected"),
    [
        (Tier("ip", 20, 40), "20;w=1;burst=40"),
        (Tier("login", 5 / 60, 5), "5;w=60;burst=5"),
        (Tier("login", 10 / 900, 10), "40;w=3600;burst=10"),
        (Tier("t", 1 / 7, 1), "12343;w=86400;burst=1"),
    ],
)
def test_policy_items(tier: Tier, expected: str) -> None:
    assert policy(tier) == expected


# -- the client's address --------------------------------------------------------------


def scope(peer: str | None, *forwarded: str) -> dict[str, Any]:
    headers = [(b"x-forwarded-for", value.encode()) for value in forwarded]
    return {"type": "http", "client": (peer, 5000) if peer else None, "headers": headers}


PROXIES = parse_trusted_proxies("10.0.0.0/8, 2001:db8:ffff::1")


@pytest.mark.parametrize(
    ("peer", "forwarded", "expected"),
    [
        ("203.0.113.9", ["6.6.6.6"], "203.0.113.9"),  # an untrusted peer's header is ignored
        ("10.0.0.1", ["203.0.113.9"], "203.0.113.9"),
        ("10.0.0.1", ["6.6.6.6, 203.0.113.9, 10.0.0.2"], "203.0.113.9"),  # 6.6.6.6 is made up
        ("10.0.0.1", ["6.6.6.6", "203.0.113.9,10.1.1.1"], "203.0.113.9"),  # two header lines
        ("10.0.0.1", ["10.0.0.3, 10.0.0.2"], "10.0.0.3"),  # every hop a proxy: the first
        ("10.0.0.1", ["203.0.113.9, nonsense"], "10.0.0.1"),  # no proxy writes that
        ("10.0.0.1", [], "10.0.0.1"),
        ("10.0.0.1", ["203.0.113.9:5555"], "203.0.113.9"),
        ("::ffff:10.0.0.1", ["[2001:db8::1]:443"], "2001:db8::1"),
        ("2001:db8:ffff::1", ["198.51.100.7"], "198.51.100.7"),
    ],
)
def test_x_forwarded_for_is_believed_only_from_trusted_proxies(
    peer: str, forwarded: list[str], expected: str
) -> None:
    assert str(client_address(scope(peer, *forwarded), PROXIES)) == expected


def test_what_the_ip_tier_counts() -> None:
    assert client_address(scope(None)) is None
    assert address_key(None) == "unknown"
    assert address_key(client_address(scope("203.0.113.9"))) == "203.0.113.9"
    assert address_key(client_address(scope("2001:db8:1:2:aaaa::1"))) == "2001:db8:1:2::/64"
    assert address_key("2001:db8:1:2:bbbb::9") == "2001:db8:1:2::/64"
    assert address_key("not an address") == "not an address"


def test_a_bad_trusted_proxy_is_named() -> None:
    with pytest.raises(ValueError, match=r"^trusted proxies: '10\.0\.0\.300' is not an IP"):
        parse_trusted_proxies("10.0.0.0/8,10.0.0.300")


# -- the middleware --------------------------------------------------------------------

USER = Principal("acme", "u1", "ana@acme.test", "viewer")


def make_app(limiter: RateLimiter, tiers: str, *, trusted: str = "") -> FastAPI:
    app = FastAPI()
    install_rate_limit_handler(app)
    parsed = parse_tiers(tiers)
    charge, login = principal_charge(limiter, parsed), login_charge(limiter, parsed)

    @app.get("/api/v1/thing")
    async def thing(request: Request) -> dict[str, str | None]:
        return {"client": client_ip(request)}

    @app.get("/api/v1/me")
    async def me(request: Request) -> dict[str, str]:
        await charge(USER, request)  # as the auth dependency does
        return {"user": USER.user_id}

    @app.post("/api/v1/auth/login")
    async def log_in(request: Request, body: dict[str, str]) -> dict[str, bool]:
        await login(client_ip(request) or "", body["email"])
        return {"ok": True}

    for probe in ("/healthz", "/readyz", "/metrics"):
        app.add_api_route(probe, lambda: {"status": "ok"})
    app.add_middleware(RateLimitMiddleware, limiter=limiter, tiers=parsed, trusted_proxies=trusted)
    return app


def client(app: FastAPI, peer: str = "203.0.113.9") -> httpx.AsyncClient:
    transport = httpx.ASGITransport(app=app, client=(peer, 5000))
    return httpx.AsyncClient(transport=transport, base_url="http://api.test")


def fields(r: httpx.Response) -> dict[str, str]:
    names = ("ratelimit-limit", "ratelimit-remaining", "ratelimit-reset", "ratelimit-policy")
    return {name: r.headers[name] for name in names if name in r.headers}


async def test_allowed_answers_carry_the_fields_and_the_429_says_when_to_retry() -> None:
    clock = FakeClock()
    app = make_app(MemoryRateLimiter(clock=clock), "ip=1/s:3")
    async with client(app) as c:
        answers = [await c.get("/api/v1/thing") for _ in range(4)]
        assert [r.status_code for r in answers] == [200, 200, 200, 429]
        assert answers[0].json() == {"client": "203.0.113.9"}
        assert fields(answers[0]) == {
            "ratelimit-limit": "3",
            "ratelimit-remaining": "2",
            "ratelimit-reset": "1",
            "ratelimit-policy": "1;w=1;burst=3",
        }
        denied = answers[3]
        assert denied.headers["content-type"] == PROBLEM
        assert denied.headers["retry-after"] == "1"
        assert fields(denied) == {
            "ratelimit-limit": "3",
            "ratelimit-remaining": "0",
            "ratelimit-reset": "3",
            "ratelimit-policy": "1;w=1;burst=3",
        }
        assert denied.json() == {
            "type": "https://cryptodesk.dev/problems/rate-limited",
            "title": "Too many requests",
            "status": 429,
            "detail": "rate limit 'ip' exceeded: 3 requests at once, then 1 per second; "
            "retry in 1 s",
            "instance": "/api/v1/thing",
        }
        for probe in ("/healthz", "/readyz", "/metrics"):
            r = await c.get(probe)
            assert (r.status_code, fields(r)) == (200, {})
        clock.now += 1
        assert (await c.get("/api/v1/thing")).status_code == 200
    async with client(app, peer="198.51.100.7") as other:  # its own bucket
        assert fields(await other.get("/api/v1/thing"))["ratelimit-remaining"] == "2"


async def test_behind_a_trusted_proxy_each_forwarded_client_has_its_bucket() -> None:
    app = make_app(MemoryRateLimiter(clock=FakeClock()), "ip=1/m:1", trusted="10.0.0.0/8")
    async with client(app, peer="10.0.0.1") as proxy:
        for address in ("203.0.113.9", "198.51.100.7"):
            r = await proxy.get("/api/v1/thing", headers={"X-Forwarded-For": address})
            assert (r.status_code, r.json()) == (200, {"client": address})
        r = await proxy.get("/api/v1/thing", headers={"X-Forwarded-For": "6.6.6.6, 203.0.113.9"})
        assert r.status_code == 429
    async with client(app, peer="192.0.2.1") as direct:  # not a proxy: its header is ignored
        statuses = []
        for address in ("1.1.1.1", "2.2.2.2"):
            r = await direct.get("/api/v1/thing", headers={"X-Forwarded-For": address})
            statuses.append(r.status_code)
        assert statuses == [200, 429]


async def test_the_callers_limit_shows_when_it_is_closer_and_refuses_with_its_own_429() -> None:
    app = make_app(MemoryRateLimiter(clock=FakeClock()), "ip=1/s:3,user=1/s:2")
    async with client(app) as c:
        first = await c.get("/api/v1/me")
        assert first.status_code == 200
        assert fields(first) == {
            "ratelimit-limit": "2",
            "ratelimit-remaining": "1",
            "ratelimit-reset": "1",
            "ratelimit-policy": "1;w=1;burst=2, 1;w=1;burst=3",
        }
        await c.get("/api/v1/me")
        denied = await c.get("/api/v1/me")
    assert denied.status_code == 429
    assert denied.headers["retry-after"] == "1"
    assert fields(denied)["ratelimit-limit"] == "2"
    assert fields(denied)["ratelimit-remaining"] == "0"
    body = denied.json()
    assert (body["type"], body["title"], body["instance"]) == (
        "https://cryptodesk.dev/problems/rate-limited",
        "Too many requests",
        "/api/v1/me",
    )
    assert body["detail"] == (
        "rate limit 'user' exceeded: 2 requests at once, then 1 per second; retry in 1 s"
    )


async def test_login_attempts_per_address_and_email() -> None:
    app = make_app(MemoryRateLimiter(clock=FakeClock()), "ip=100/s:100,login=1/m:2")
    async with client(app) as c:
        emails = ["ana@acme.test", " ANA@acme.test", "ana@acme.test", "bob@acme.test"]
        answers = [await c.post("/api/v1/auth/login", json={"email": e}) for e in emails]
        assert [r.status_code for r in answers] == [200, 200, 429, 200]
        assert answers[2].headers["retry-after"] == "60"
        assert answers[2].json()["detail"] == (
            "rate limit 'login' exceeded: 2 requests at once, then 1 per minute; retry in 60 s"
        )
    async with client(app, peer="198.51.100.7") as elsewhere:
        r = await elsewhere.post("/api/v1/auth/login", json={"email": "ana@acme.test"})
        assert r.status_code == 200


async def test_with_redis_down_the_limits_hold_in_process_and_it_is_said_once() -> None:
    limiter = RedisRateLimiter.from_url(f"redis://127.0.0.1:{free_port()}/0")
    app = make_app(limiter, "ip=1/m:2")
    try:
        with structlog.testing.capture_logs() as logs:
            async with client(app) as c:
                first = await c.get("/api/v1/thing")
                await asyncio.sleep(0.06)  # past the first backoff: Redis is tried again
                second = await c.get("/api/v1/thing")
                await asyncio.sleep(0.11)
                third = await c.get("/api/v1/thing")
        assert [first.status_code, second.status_code, third.status_code] == [200, 200, 429]
        assert fields(second)["ratelimit-remaining"] == "0"
        assert (limiter.shared, limiter.failed_attempts) == (False, 3)
        warnings = [e for e in logs if e["log_level"] == "warning"]
        assert [e["event"] for e in warnings] == [
            "redis unreachable: rate limits are counted in-process until it returns"
        ]
    finally:
        await limiter.close()
