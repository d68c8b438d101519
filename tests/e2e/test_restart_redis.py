"""Stop Redis mid-run and start it again: ``cryptodesk serve`` rides the outage out.

Each test stops a dedicated redis-server with an fsync-always append-only file, so a
restart keeps what Redis acknowledged, as a production Redis would (the session's
Redis, which other tests share, is never stopped).

A. Redis is the bus (and the cache). While it is down the process stays up and
   ``/readyz`` is 503 naming the bus and why; once it is back the process is
   ready again and the stored trades and candles equal those of an uninterrupted
   run on the same simulated timeline, none lost and none duplicated.
B. Redis is only the cache. While it is down reads come from the database,
   marked ``cryptodesk-degraded: cache``, and ``/readyz`` says "degraded"; once it
   is back the mark goes, fresh candles reach Redis again and cached pages still
   equal the database.
"""

from __future__ import annotations

import asyncio
import json
import signal
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis

from cryptodesk.adapters.db.engine import create_engine
from cryptodesk.adapters.db.sql_store import SqlMarketStore
from cryptodesk.domain import codec
from cryptodesk.domain.market import Candle
from cryptodesk.services import cache_keys
from tests.e2e.conftest import Server, wait_for
from tests.e2e.test_effectively_once import (
    SETTINGS,
    count_candles,
    read,
    same_timeline,
)
from tests.servers import RESUMERS, STOPPERS, Servers, own_server

pytestmark = [pytest.mark.e2e, pytest.mark.xdist_group("e2e")]
WAIT_S = 120
SERIES = {"exchange": "sim", "symbol": "BTC/USDT", "interval": "1m"}
# Each reconnect attempt of a bus loop comes after redis-py's own few retries
# failed: a loop that logged this many has outlived them several times over.
OUTAGE_ATTEMPTS = 4


@pytest.fixture
def durable_redis() -> Iterator[Servers]:
    """A Redis of this test's own (the session one must never stop), durable on disk."""
    yield from own_server("redis", "redis-restart", redis_durable=True)


def readiness(server: Server) -> tuple[int, dict[str, Any]]:
    r = httpx.get(f"{server.url}/readyz", timeout=10)
    return r.status_code, r.json()


def component(body: dict[str, Any], name: str) -> dict[str, Any]:
    (found,) = [c for c in body["components"] if c["name"] == name]
    return found


def reconnect_attempts(server: Server, what: tuple[str, ...]) -> int:
    """The highest reconnect attempt logged by a Redis loop whose ``what`` starts
    with one of ``what``; fails at once if the process died."""
    assert server.proc.poll() is None, f"serve exited:\n{server.logs()}"
    best = 0
    for line in server.logs().splitlines():
        if "redis unreachable, retrying" in line:
            event = json.loads(line)
            if event["what"].startswith(what):
                best = max(best, int(event["attempt"]))
    return best


def sqlite_url(data: Path) -> str:
    return f"sqlite+aiosqlite:///{data / 'cryptodesk.db'}"


# ---- A: Redis as the bus ------------------------------------------------------------------


def test_bus_outage_loses_and_duplicates_nothing(
    server_factory: Callable[..., Server],
    durable_redis: Servers,
    redis_server: Servers,
    tmp_path: Path,
) -> None:
    runs: dict[str, tuple[list[Any], list[Candle]]] = {}
    # The reference runs on the session's Redis: the same bus, without an fsync per
    # write, so it is several times faster; the interrupted run needs the durable one.
    for tag, redis_at in (("uninterrupted", redis_server), ("outage", durable_redis)):
        data = tmp_path / tag
        prefix = f"{tag}-{uuid.uuid4().hex[:8]}:"
        url = sqlite_url(data)
        server = server_factory(
            data,
            **SETTINGS,
            CRYPTODESK_BUS_URL=redis_at.redis_url,
            CRYPTODESK_CACHE_URL=redis_at.redis_url,
            CRYPTODESK_BUS_TOPIC_PREFIX=prefix,
            CRYPTODESK_CACHE_KEY_PREFIX=prefix,
        )
        if tag == "outage":
            wait_for(lambda u=url: count_candles(u) > 15, timeout=WAIT_S)
            STOPPERS["redis"](durable_redis)

            _, body = wait_for(lambda s=server: (r := readiness(s))[0] == 503 and r, timeout=WAIT_S)
            bus = component(body, "bus")
            assert (body["status"], bus["status"], bus["required"]) == ("not_ready", "down", True)
            assert f"127.0.0.1:{durable_redis.redis_port}" in bus["error"], bus
            # Down for longer than the client's own retries: the publisher (ingest)
            # and the consumers (compute, books: fetching or acking) keep retrying,
            # and the process lives.
            for what in (("bus publish",), ("bus consumer", "bus ack")):
                wait_for(
                    lambda s=server, w=what: reconnect_attempts(s, w) >= OUTAGE_ATTEMPTS,
                    timeout=WAIT_S,
                )
            assert server.proc.poll() is None, server.logs()
            assert readiness(server)[0] == 503

            RESUMERS["redis"](durable_redis)
            # Ready again once Redis has loaded its data (until then it answers LOADING).
            _, body = wait_for(
                lambda s=server: (r := readiness(s))[1]["status"] == "ready" and r, timeout=WAIT_S
            )
            assert component(body, "bus")["status"] == "up"
            stored = count_candles(url)
            wait_for(lambda u=url, n=stored + 15: count_candles(u) > n, timeout=WAIT_S)
        else:
            wait_for(lambda u=url: count_candles(u) > 60, timeout=WAIT_S)
        assert server.stop(signal.SIGTERM) == 0, server.logs()
        runs[tag] = read(url)

    same_timeline(runs["uninterrupted"], runs["outage"], min_settled=20)


# ---- B: Redis as the cache only ----------------------------------------------------------


async def _stored_candles(url: str, **window: int) -> list[Candle]:
    store = SqlMarketStore(create_engine(url))
    try:
        return await store.get_candles(
            SERIES["exchange"], SERIES["symbol"], SERIES["interval"], limit=10_000, **window
        )
    finally:
        await store.close()


def stored_candles(url: str, **window: int) -> list[Candle]:
    return asyncio.run(_stored_candles(url, **window))


def cached_tail(client: redis.Redis, prefix: str) -> list[Candle]:
    name = prefix + cache_keys.recent_candles(SERIES["exchange"], SERIES["symbol"], "1m")
    return [codec.decode_candle(raw) for raw in client.lrange(name, 0, -1)]


def candle_page(server: Server, **params: int) -> httpx.Response:
    r = httpx.get(f"{server.url}/api/v1/candles", params={**SERIES, **params}, timeout=10)
    assert r.status_code == 200, r.text
    return r


def open_times(r: httpx.Response) -> list[int]:
    return [int(c["open_time_ms"]) for c in r.json()["candles"]]


def test_cache_outage_serves_from_the_database_then_recovers(
    server_factory: Callable[..., Server], durable_redis: Servers, tmp_path: Path
) -> None:
    data = tmp_path / "cache-only"
    url = sqlite_url(data)
    prefix = f"cache-{uuid.uuid4().hex[:8]}:"
    server = server_factory(
        data,
        **SETTINGS,
        CRYPTODESK_CACHE_URL=durable_redis.redis_url,
        CRYPTODESK_CACHE_KEY_PREFIX=prefix,
    )
    client = redis.Redis.from_url(durable_redis.redis_url)
    try:
        wait_for(lambda: len(stored_candles(url)) > 8, timeout=WAIT_S)
        first = stored_candles(url)[0].open_time
        healthy = candle_page(server)
        assert "cryptodesk-degraded" not in healthy.headers
        assert readiness(server)[1]["status"] == "ready"

        STOPPERS["redis"](durable_redis)
        status, body = wait_for(
            lambda: (r := readiness(server))[1]["status"] == "degraded" and r, timeout=WAIT_S
        )
        assert status == 200
        cache = component(body, "cache")
        assert (cache["status"], cache["required"]) == ("down", False)
        assert cache["error"]
        assert component(body, "bus")["status"] == "up"
        # Reads answer from the database, marked degraded, and match it.
        before = stored_candles(url)
        end = before[-1].open_time
        page = candle_page(server, end=end)
        assert page.headers["cryptodesk-degraded"] == "cache"
        assert open_times(page) == [c.open_time for c in before if c.open_time < end][-500:]
        # Compute keeps finalizing candles into the database meanwhile.
        wait_for(lambda: len(stored_candles(url)) > len(before) + 8, timeout=WAIT_S)
        assert server.proc.poll() is None, server.logs()
        assert candle_page(server).headers["cryptodesk-degraded"] == "cache"

        RESUMERS["redis"](durable_redis)
        status, body = wait_for(
            lambda: (r := readiness(server))[1]["status"] == "ready" and r, timeout=WAIT_S
        )
        assert status == 200
        assert component(body, "cache")["status"] == "up"
        resumed_at = stored_candles(url)[-1].open_time
        wait_for(lambda: "cryptodesk-degraded" not in candle_page(server).headers, timeout=WAIT_S)
        # The cache is filled again: candles finalized after the outage reach Redis.
        wait_for(
            lambda: (tail := cached_tail(client, prefix)) and tail[-1].open_time > resumed_at,
            timeout=WAIT_S,
        )
        # Every page still equals the database, whether the cache or the store
        # answers it: the candles the cache missed while down leave no hole.
        end = cached_tail(client, prefix)[-1].open_time
        expected = [c.open_time for c in stored_candles(url, start=first, end=end)]
        assert expected
        forward = candle_page(server, start=first, end=end, limit=1000)
        assert "cryptodesk-degraded" not in forward.headers
        assert open_times(forward) == expected
        newest = candle_page(server, end=end, limit=5)
        assert open_times(newest) == expected[-5:]
        assert server.stop(signal.SIGTERM) == 0, server.logs()
    finally:
        client.close()
