"""The registry in Redis: what several signaling processes, and the
transceivers that announce themselves, share.

Keys (all under ``prefix``)::

    tx:<id>      a transceiver's record, JSON, expiring ``record_ttl_s`` after
                 its last publish (a dead transceiver disappears by itself;
                 placement already ignores it once ``updated_at`` is stale)
    txs          the set of ids that may have a record (pruned when one is gone)
    call:<id>    the owning transceiver's id, expiring with the call's TTL
    ek:<value>   an ephemeral key's session, JSON, expiring at its expiry

Values are the same JSON the in-memory registry holds, so either backend can
stand behind signaling unchanged.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
from collections.abc import Iterator
from typing import Any, Final

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from talkwire.registry import redis_password
from talkwire.registry.base import AgentInfo, RegistryUnavailable, TransceiverInfo

log = logging.getLogger(__name__)

DEFAULT_PREFIX: Final = "talkwire:"
# Long against a 1 s heartbeat, so a Redis hiccup does not make a fleet vanish.
DEFAULT_RECORD_TTL_S: Final = 30.0


# Atomic on the server: only the `active` number in the record's JSON changes
# (as publish writes it; the text is edited, not re-encoded, so no other field
# can change), the record keeps its TTL, and one that expired or was removed
# stays gone.
_COUNT_CALLS = """
local record = redis.call('GET', KEYS[1])
if not record then return 0 end
local delta = tonumber(ARGV[1])
local counted, found = string.gsub(record, '"active": (%d+)', function(n)
  return '"active": ' .. math.max(0, tonumber(n) + delta)
end, 1)
if found == 0 then return 0 end
redis.call('SET', KEYS[1], counted, 'KEEPTTL')
return 1
"""


class RedisRegistry:
    def __init__(
        self,
        client: aioredis.Redis,
        *,
        prefix: str = DEFAULT_PREFIX,
        record_ttl_s: float = DEFAULT_RECORD_TTL_S,
    ) -> None:
        self._redis = client
        self._prefix = prefix
        self._record_ttl_ms = math.ceil(record_ttl_s * 1000)

    @classmethod
    def from_url(cls, url: str, **kwargs: Any) -> RedisRegistry:
        """``redis://host:port/db`` (password: ``$TALKWIRE_REDIS_PASSWORD``); every
        call fails fast (2 s) when Redis is away."""
        client = aioredis.Redis.from_url(
            url,
            decode_responses=True,
            socket_timeout=2.0,
            socket_connect_timeout=2.0,
            password=redis_password(),
        )
        return cls(client, **kwargs)

    async def close(self) -> None:
        await self._redis.aclose()

    @staticmethod
    @contextlib.contextmanager
    def _reach() -> Iterator[None]:
        try:
            yield
        except (RedisError, OSError) as exc:
            raise RegistryUnavailable(f"registry unreachable: {exc}") from exc

    def _key(self, *parts: str) -> str:
        return self._prefix + ":".join(parts)

    # Transceivers and agent servers are kept alike: a record per id that
    # lapses unless renewed, and a set of ids to find them by.

    async def _put_record(self, kind: str, id: str, record: dict[str, Any]) -> None:
        with self._reach():
            async with self._redis.pipeline(transaction=True) as pipe:
                pipe.set(self._key(kind, id), json.dumps(record), px=self._record_ttl_ms)
                pipe.sadd(self._key(kind + "s"), id)
                await pipe.execute()

    async def _remove_record(self, kind: str, id: str) -> None:
        with self._reach():
            async with self._redis.pipeline(transaction=True) as pipe:
                pipe.delete(self._key(kind, id))
                pipe.srem(self._key(kind + "s"), id)
                await pipe.execute()

    async def _records(self, kind: str) -> list[str]:
        """The live records of ``kind``; ids whose record lapsed leave the set."""
        with self._reach():
            ids = sorted(str(i) for i in await self._redis.smembers(self._key(kind + "s")))
            if not ids:
                return []
            records = await self._redis.mget([self._key(kind, i) for i in ids])
            gone = [i for i, record in zip(ids, records, strict=True) if record is None]
            if gone:
                await self._redis.srem(self._key(kind + "s"), *gone)
            return [str(record) for record in records if record is not None]

    async def publish(self, info: TransceiverInfo) -> None:
        await self._put_record("tx", info.id, info.to_json())

    async def count_calls(self, id: str, delta: int) -> None:
        with self._reach():
            await self._redis.eval(_COUNT_CALLS, 1, self._key("tx", id), delta)

    async def remove(self, id: str) -> None:
        await self._remove_record("tx", id)

    async def transceivers(self, region: str | None = None) -> list[TransceiverInfo]:
        found = []
        for record in await self._records("tx"):
            try:
                info = TransceiverInfo.from_json(json.loads(record))
            except ValueError as exc:  # another writer's junk must not stop placement
                log.warning("skipping a bad transceiver record: %s", exc)
                continue
            if region is None or info.region == region:
                found.append(info)
        return found

    async def publish_agent(self, info: AgentInfo) -> None:
        await self._put_record("agent", info.id, info.to_json())

    async def remove_agent(self, id: str) -> None:
        await self._remove_record("agent", id)

    async def agents(self) -> list[AgentInfo]:
        found = []
        for record in await self._records("agent"):
            try:
                found.append(AgentInfo.from_json(json.loads(record)))
            except ValueError as exc:  # another writer's junk must not stop calls
                log.warning("skipping a bad agent record: %s", exc)
        return found

    async def put_call(self, call_id: str, transceiver_id: str, ttl_s: float) -> None:
        with self._reach():
            await self._redis.set(
                self._key("call", call_id), transceiver_id, px=max(1, math.ceil(ttl_s * 1000))
            )

    async def get_call(self, call_id: str) -> str | None:
        with self._reach():
            value = await self._redis.get(self._key("call", call_id))
            return None if value is None else str(value)

    async def delete_call(self, call_id: str) -> None:
        with self._reach():
            await self._redis.delete(self._key("call", call_id))

    async def put_client_secret(self, value: str, session: dict[str, Any], expires_at: int) -> None:
        with self._reach():
            await self._redis.set(self._key("ek", value), json.dumps(session), exat=expires_at)

    async def get_client_secret(self, value: str) -> dict[str, Any] | None:
        with self._reach():
            text = await self._redis.get(self._key("ek", value))
            if text is None:
                return None
            session: dict[str, Any] = json.loads(text)
            return session
