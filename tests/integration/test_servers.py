"""The test servers themselves answer on loopback."""

import asyncpg
import redis.asyncio as redis
from aiokafka import AIOKafkaProducer


async def test_postgres_answers(postgres_url):
    conn = await asyncpg.connect(postgres_url.replace("postgresql+asyncpg", "postgresql"))
    try:
        assert await conn.fetchval("select 1") == 1
    finally:
        await conn.close()


async def test_redis_answers(redis_url):
    client = redis.from_url(redis_url)
    try:
        assert await client.ping() is True
    finally:
        await client.aclose()


async def test_kafka_answers(kafka_bootstrap):
    producer = AIOKafkaProducer(bootstrap_servers=kafka_bootstrap)
    await producer.start()
    try:
        meta = await producer.send_and_wait("server-check", b"x", key=b"k")
        assert meta.offset >= 0
    finally:
        await producer.stop()
