"""The registry contract, against the in-memory backend and a real redis-server alike."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest
import redis.asyncio as aioredis

from talkwire.registry.base import Registry, TransceiverInfo
from talkwire.registry.memory import MemoryRegistry
from talkwire.registry.redis_registry import RedisRegistry


def info(id: str, region: str = "eu", active: int = 0) -> TransceiverInfo:
    return TransceiverInfo(
        id=id,
        api_url=f"http://10.0.0.1:{8000 + len(id)}",
        region=region,
        cluster="1",
        capacity=10,
        active=active,
        draining=False,
        updated_at=time.time(),
    )


@pytest.fixture(params=["memory", "redis"])
async def registry(request: pytest.FixtureRequest) -> AsyncIterator[Registry]:
    if request.param == "memory":
        yield MemoryRegistry()
        return
    server = request.getfixturevalue("redis_server")
    backend = RedisRegistry.from_url(server.url, prefix="test:")
    yield backend
    await backend.close()


async def test_transceivers_are_published_replaced_filtered_and_removed(registry: Registry) -> None:
    await registry.publish(info("a", "eu"))
    await registry.publish(info("b", "us"))
    await registry.publish(info("a", "eu", active=3))  # a heartbeat replaces the record
    everyone = {t.id: t for t in await registry.transceivers()}
    assert sorted(everyone) == ["a", "b"] and everyone["a"].active == 3
    assert [t.id for t in await registry.transceivers("us")] == ["b"]
    await registry.remove("a")
    await registry.remove("nobody")
    assert [t.id for t in await registry.transceivers()] == ["b"]


async def test_calls_and_client_secrets_round_trip_and_expire(registry: Registry) -> None:
    await registry.put_call("rtc_1", "a", ttl_s=60)
    await registry.put_call("rtc_2", "b", ttl_s=0.2)
    session: dict[str, Any] = {"type": "realtime", "model": "echo", "audio": {"x": [1, None]}}
    await registry.put_client_secret("ek_1", session, expires_at=int(time.time()) + 60)
    assert await registry.get_call("rtc_1") == "a"
    assert await registry.get_client_secret("ek_1") == session
    assert await registry.get_client_secret("ek_nope") is None
    await registry.delete_call("rtc_1")
    assert await registry.get_call("rtc_1") is None
    for _ in range(100):  # 5 s: expiry is the backend's own clock
        if await registry.get_call("rtc_2") is None:
            break
        await asyncio.sleep(0.05)
    assert await registry.get_call("rtc_2") is None


async def test_a_dead_transceivers_record_expires_and_junk_is_skipped(redis_server: Any) -> None:
    backend = RedisRegistry.from_url(redis_server.url, prefix="t2:", record_ttl_s=0.2)
    try:
        await backend.publish(info("quiet"))
        await backend.publish(info("alive"))
        raw = aioredis.Redis.from_url(redis_server.url)
        await raw.set("t2:tx:junk", json.dumps({"id": "junk"}))
        await raw.sadd("t2:txs", "junk")
        await raw.aclose()
        for _ in range(100):
            await backend.publish(info("alive"))  # one keeps its heartbeat, one stops
            if [t.id for t in await backend.transceivers()] == ["alive"]:
                break
            await asyncio.sleep(0.05)
        assert [t.id for t in await backend.transceivers()] == ["alive"]
    finally:
        await backend.close()
