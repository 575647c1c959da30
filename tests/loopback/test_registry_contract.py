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


def info(id: str, region: str = "eu", active: int = 0, load: float = 0.0) -> TransceiverInfo:
    return TransceiverInfo(
        id=id,
        api_url=f"http://10.0.0.1:{8000 + len(id)}",
        region=region,
        cluster="1",
        capacity=10,
        active=active,
        draining=False,
        updated_at=time.time(),
        load=load,
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


async def test_counting_calls_changes_only_active_and_never_revives_a_record(
    registry: Registry,
) -> None:
    import dataclasses

    draining = dataclasses.replace(info("a", active=2, load=0.25), draining=True)
    await registry.publish(draining)
    # Many signalings counting at once lose no count.
    await asyncio.gather(*(registry.count_calls("a", 1) for _ in range(20)))
    await registry.count_calls("a", -5)
    (counted,) = await registry.transceivers()
    assert counted == dataclasses.replace(draining, active=17)  # draining, load, stamp kept
    await registry.count_calls("a", -100)
    assert (await registry.transceivers())[0].active == 0  # never below zero
    await registry.remove("a")
    await registry.count_calls("a", 1)  # a transceiver that left stays gone
    await registry.count_calls("never-was", 1)
    assert await registry.transceivers() == []


async def test_agent_servers_are_published_replaced_and_removed(registry: Registry) -> None:
    from talkwire.registry.base import AgentInfo

    def agent(id: str, active: int) -> AgentInfo:
        url = f"ws://10.0.0.7:{8090 + len(id)}"
        return AgentInfo(id, url, ("echo", "voice"), "eu", 10, active, time.time())

    await registry.publish_agent(agent("a1", 0))
    await registry.publish_agent(agent("a2", 1))
    latest = agent("a1", 4)
    await registry.publish_agent(latest)  # a heartbeat replaces the record
    found = {a.id: a for a in await registry.agents()}
    assert sorted(found) == ["a1", "a2"] and found["a1"] == latest
    await registry.remove_agent("a1")
    await registry.remove_agent("nobody")
    assert [a.id for a in await registry.agents()] == ["a2"]
    assert [t.id for t in await registry.transceivers()] == []  # a separate record set


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


async def test_a_redis_password_comes_from_the_environment_not_the_url(
    tmp_path: Any, tcp_port: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    from servers import RedisServer

    from talkwire.registry import REDIS_PASSWORD_ENV, open_registry
    from talkwire.registry.base import RegistryUnavailable

    server = RedisServer(tmp_path, tcp_port, extra=("--requirepass", "lab-only-pass"))
    try:
        monkeypatch.delenv(REDIS_PASSWORD_ENV, raising=False)
        refused = open_registry(server.url)
        with pytest.raises(RegistryUnavailable):
            await refused.transceivers()
        await refused.close()
        monkeypatch.setenv(REDIS_PASSWORD_ENV, "lab-only-pass")
        allowed = open_registry(server.url)
        assert await allowed.transceivers() == []
        await allowed.close()
    finally:
        server.kill()
