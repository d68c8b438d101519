"""The Kafka-protocol broker dies under a running ``cryptodesk serve`` and comes back
empty: the process rides it out and recovers by itself.

The broker (tansu) keeps everything in memory, so the one that comes back has no
topics and no committed offsets, as if a whole Kafka cluster had been lost. The
bus must re-create its topics, reconnect its producer, rejoin its consumer group
and read the new topics from their first offset; ``/readyz`` says the bus is down
meanwhile and is ready again afterwards.

What may be lost, and what may not:

* Trades the old broker had acknowledged (possibly part of the publish under way
  when it died) but the compute role had not yet stored are gone with that
  broker's memory: that is the broker's durability, not the bus's, and a durable
  broker (a replicated production Kafka) keeps them. They show up as at most one
  contiguous run of missing trades per market. This test does not pretend
  otherwise.
* The old broker never saw a trade of the simulated steps after that publish:
  each was published (the first ones while the broker was down, retried until
  the new broker took them) and must be stored.
* Nothing is ever stored twice.

Stored trades and candles are compared with an uninterrupted reference run of the
same fixed simulated timeline (embedded bus and SQLite; the timeline, not the bus,
decides which trades exist).
"""

from __future__ import annotations

import asyncio
import signal
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from aiokafka.admin import AIOKafkaAdminClient  # type: ignore[import-untyped]

from cryptodesk.adapters.db.engine import create_engine
from cryptodesk.adapters.db.sql_store import SqlMarketStore
from cryptodesk.adapters.exchanges.sim_model import SimModel
from cryptodesk.domain.interval import Interval
from cryptodesk.domain.market import Candle, Trade
from cryptodesk.domain.timeutil import parse_time
from tests.e2e.conftest import (
    FAST_KAFKA_GROUPS,
    Server,
    base_env,
    run_cli,
    start_server,
    wait_for,
)
from tests.e2e.test_effectively_once import (
    GRACE_MS,
    INTERVALS,
    SETTINGS,
    create_database,
    key,
    read,
    same_candle,
)
from tests.servers import RESUMERS, STOPPERS, Servers, own_server

pytestmark = [pytest.mark.e2e, pytest.mark.xdist_group("e2e")]
WAIT_S = 120
PARTITIONS = 3
# Publish warnings logged while the broker is down before it is started again:
# the publish under way waits and retries, it is neither dropped nor raised.
RETRIES_WHILE_DOWN = 3
RETRY_LOG = "kafka publish to"
# Candles stored before the broker is stopped, and more after it is back.
CANDLES_BEFORE = 12
CANDLES_AFTER = 24


@pytest.fixture
def broker() -> Iterator[Servers]:
    """A tansu of this test's own (the session broker serves other tests)."""
    yield from own_server("kafka", "kafka-restart")


def readiness(server: Server) -> tuple[int, dict[str, Any]]:
    response = httpx.get(f"{server.url}/readyz", timeout=10)
    return response.status_code, response.json()


def component(body: dict[str, Any], name: str) -> dict[str, Any]:
    found: list[dict[str, Any]] = [c for c in body["components"] if c["name"] == name]
    assert len(found) == 1, body
    return found[0]


def ingested_trades(server: Server) -> int:
    """Trades whose publish the broker acknowledged (counted after the ack)."""
    text = httpx.get(f"{server.url}/metrics", timeout=10).text
    name = 'cryptodesk_events_ingested_total{topic="trades"}'
    return sum(
        int(float(line.rsplit(" ", 1)[1])) for line in text.splitlines() if line.startswith(name)
    )


def logged(server: Server, text: str) -> int:
    return sum(text in line for line in server.logs().splitlines())


def broker_topics(servers: Servers) -> set[str]:
    async def names() -> set[str]:
        admin = AIOKafkaAdminClient(bootstrap_servers=f"127.0.0.1:{servers.kafka_port}")
        await admin.start()
        try:
            return set(await admin.list_topics())
        finally:
            await admin.close()

    return asyncio.run(names())


async def _stored(url: str) -> tuple[int, int]:
    """(candles stored, ts of the newest trade), without reading every trade."""
    store = SqlMarketStore(create_engine(url))
    try:
        candles = 0
        for symbol in ("BTC/USDT", "ETH/USDT", "SOL/USDT"):
            for interval in INTERVALS.split(","):
                candles += len(await store.get_candles("sim", symbol, interval, limit=100_000))
        return candles, await store.last_trade_ts("sim") or 0
    finally:
        await store.close()


def candle_count(url: str) -> int:
    return asyncio.run(_stored(url))[0]


def newest_trade_ts(url: str) -> int:
    return asyncio.run(_stored(url))[1]


def test_empty_broker_restart_recovers_without_duplicates(
    server_factory: Callable[..., Server],
    broker: Servers,
    postgres_server: Servers,
    tmp_path: Path,
) -> None:
    data = tmp_path / "outage"
    url = create_database(postgres_server)
    prefix = f"rk-{uuid.uuid4().hex[:8]}."
    env = {
        "CRYPTODESK_BUS_URL": broker.kafka_url,
        "CRYPTODESK_BUS_TOPIC_PREFIX": prefix,
        "CRYPTODESK_BUS_PARTITIONS": str(PARTITIONS),
        **FAST_KAFKA_GROUPS,
        "CRYPTODESK_DATABASE_URL": url,
    }
    migrated = run_cli("db", "upgrade", env={**base_env(data), **SETTINGS, **env})
    assert migrated.returncode == 0, migrated.stderr
    server = server_factory(data, **SETTINGS, **env)
    wait_for(lambda: candle_count(url) > CANDLES_BEFORE, timeout=WAIT_S)
    assert readiness(server)[0] == 200

    STOPPERS["kafka"](broker)
    retried = logged(server, RETRY_LOG)
    _, body = wait_for(lambda: (r := readiness(server))[0] == 503 and r, timeout=WAIT_S)
    bus = component(body, "bus")
    assert (body["status"], bus["status"], bus["required"]) == ("not_ready", "down", True)
    assert bus["error"]
    # The publish under way waits for the broker, saying so with backoff.
    wait_for(lambda: logged(server, RETRY_LOG) >= retried + RETRIES_WHILE_DOWN, timeout=WAIT_S)
    # Ingest publishes one batch at a time and counts it once fully acknowledged:
    # the trades of every publish the old broker completed (see the end).
    acknowledged = ingested_trades(server)
    assert server.proc.poll() is None, server.logs()[-3000:]
    assert readiness(server)[0] == 503

    RESUMERS["kafka"](broker)
    _, body = wait_for(lambda: (r := readiness(server))[0] == 200 and r, timeout=WAIT_S)
    assert component(body, "bus")["status"] == "up"
    resumed = candle_count(url)
    wait_for(lambda: candle_count(url) > resumed + CANDLES_AFTER, timeout=WAIT_S)
    assert ingested_trades(server) > acknowledged
    # The bus's topics exist again on the empty broker.
    ours = {prefix + t for t in ("trades", "orderbooks", "candles")}
    wait_for(lambda: ours <= broker_topics(broker), timeout=WAIT_S)
    assert server.stop(signal.SIGTERM) == 0, server.logs()[-3000:]
    trades, candles = read(url)
    newest = trades[-1].ts
    # The compute role stops at its first empty fetch after SIGTERM, so markets
    # (partitions) may be drained to different points: what it had not reached is
    # still on the bus, not lost. Compare up to where every market got.
    horizon = min(max(t.ts for t in trades if t.symbol == s) for s in {t.symbol for t in trades})

    # The uninterrupted reference: the embedded bus, run just past the horizon.
    ref_data = tmp_path / "reference"
    ref_url = f"sqlite+aiosqlite:///{ref_data / 'cryptodesk.db'}"
    reference = start_server(ref_data, tmp_path / "reference.log", **SETTINGS)
    try:
        wait_for(lambda: newest_trade_ts(ref_url) > newest + 60_000, timeout=WAIT_S)
        assert reference.stop(signal.SIGTERM) == 0, reference.logs()[-3000:]
    finally:
        if reference.proc.poll() is None:
            reference.proc.kill()
            reference.proc.wait()
    ref_trades, ref_candles = read(ref_url)

    # Ingest publishes one simulated step per call, in timestamp order, and counts a
    # call once it is acknowledged. The call under way when the broker died may have
    # been acknowledged in part (and lost with that broker); the old broker never
    # saw a trade of the steps after it, so every one of those must be stored.
    start = parse_time(SETTINGS["CRYPTODESK_SIM_START"], field="sim_start")
    step_ms = SimModel(["BTC/USDT"], seed=0, start_ms=start).step_ms
    in_flight_step = (ref_trades[acknowledged].ts - start) // step_ms
    retried_from = start + (in_flight_step + 1) * step_ms
    assert horizon > retried_from + 60_000, "the run went on after the broker came back"
    expected = [t for t in ref_trades if t.ts <= horizon]
    check_trades(trades, ref_trades, expected, retried_from)
    check_candles(candles, ref_candles, gaps(trades, expected), horizon, retried_from)


def trade_key(t: Trade) -> tuple[str, str, str]:
    return (t.exchange, t.symbol, t.id)


def gaps(trades: list[Trade], expected: list[Trade]) -> dict[str, tuple[int, int]]:
    """Per market, the (first, last) ts of the expected trades missing from ``trades``."""
    have = {trade_key(t) for t in trades}
    out: dict[str, tuple[int, int]] = {}
    for t in expected:
        if trade_key(t) not in have:
            first, _ = out.get(t.symbol, (t.ts, t.ts))
            out[t.symbol] = (first, t.ts)
    return out


def check_trades(
    trades: list[Trade], ref_trades: list[Trade], expected: list[Trade], retried_from: int
) -> None:
    assert len({trade_key(t) for t in trades}) == len(trades), "a trade was stored twice"
    reference = {trade_key(t): t for t in ref_trades}
    for t in trades:  # nothing the timeline does not have, and nothing changed
        assert reference[trade_key(t)] == t
    have = {trade_key(t) for t in trades}
    missing = [t for t in expected if trade_key(t) not in have]
    late = [t for t in missing if t.ts >= retried_from]
    assert not late, (
        f"{len(late)} retried trades lost (from ts {retried_from} on), first {late[:3]}; "
        f"missing per market (first ts, last ts): {gaps(trades, expected)}"
    )
    # What the empty broker lost is, per market, one contiguous run: the tail of its
    # partition that the consumer had not reached when the broker died.
    for symbol in {t.symbol for t in expected}:
        marks = [trade_key(t) in have for t in expected if t.symbol == symbol]
        holes = [i for i, stored in enumerate(marks) if not stored]
        if holes:
            assert holes == list(range(holes[0], holes[-1] + 1)), symbol
    print(f"trades lost with the empty broker: {len(missing)} of {len(expected)}")


def check_candles(
    candles: list[Candle],
    ref_candles: list[Candle],
    holes: dict[str, tuple[int, int]],
    horizon: int,
    retried_from: int,
) -> None:
    by_key = {key(c): c for c in candles}
    assert len(by_key) == len(candles), "a candle was stored twice"
    ref_by_key = {key(c): c for c in ref_candles}
    assert by_key.keys() <= ref_by_key.keys()
    compared = after_outage = 0
    for k, ref in ref_by_key.items():
        ms = Interval.parse(k[2]).ms
        if k[3] + ms + GRACE_MS >= horizon:
            continue  # not settled in the interrupted run
        hole = holes.get(k[1])
        if hole is not None and k[3] <= hole[1] and k[3] + ms > hole[0]:
            continue  # made partly of trades the empty broker lost
        assert k in by_key, k
        assert same_candle(by_key[k], ref), k
        compared += 1
        after_outage += k[3] >= retried_from
    assert compared > 20
    assert after_outage > 10
