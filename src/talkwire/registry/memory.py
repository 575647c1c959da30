"""In-process registry: the embedded default (`talkwire up`) and the test double
for the Redis backend. Not shared between processes."""

from __future__ import annotations

import dataclasses
import heapq
import json
import time
from collections.abc import Callable
from typing import Any

from talkwire.registry.base import AgentInfo, TransceiverInfo


class _Expiring:
    """A dict whose entries expire; a heap of deadlines keeps pruning
    O(log n) per insert, so memory stays bounded by what is still valid."""

    def __init__(self) -> None:
        self._values: dict[str, tuple[float, str]] = {}
        self._deadlines: list[tuple[float, str]] = []

    def put(self, key: str, value: str, deadline: float, now: float) -> None:
        self.prune(now)
        self._values[key] = (deadline, value)
        heapq.heappush(self._deadlines, (deadline, key))

    def get(self, key: str, now: float) -> str | None:
        entry = self._values.get(key)
        if entry is None:
            return None
        deadline, value = entry
        if now >= deadline:
            del self._values[key]
            return None
        return value

    def delete(self, key: str) -> None:
        self._values.pop(key, None)

    def prune(self, now: float) -> None:
        while self._deadlines and self._deadlines[0][0] <= now:
            deadline, key = heapq.heappop(self._deadlines)
            entry = self._values.get(key)
            # A key re-put with a later deadline keeps its newer entry.
            if entry is not None and entry[0] <= deadline:
                del self._values[key]
        # Deletions leave heap entries behind; rebuild once they dominate.
        if len(self._deadlines) > 2 * len(self._values) + 64:
            self._deadlines = [(d, k) for k, (d, _) in self._values.items()]
            heapq.heapify(self._deadlines)

    def __len__(self) -> int:
        return len(self._values)


class MemoryRegistry:
    """`Registry` kept in dicts. ``clock`` returns unix seconds; tests pass
    their own to expire keys and calls without waiting."""

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self._clock = clock
        self._transceivers: dict[str, TransceiverInfo] = {}
        self._agents: dict[str, AgentInfo] = {}
        self._calls = _Expiring()
        self._secrets = _Expiring()

    async def publish(self, info: TransceiverInfo) -> None:
        self._transceivers[info.id] = info

    async def remove(self, id: str) -> None:
        self._transceivers.pop(id, None)

    async def count_calls(self, id: str, delta: int) -> None:
        info = self._transceivers.get(id)  # read and write with no await between
        if info is not None:
            self._transceivers[id] = dataclasses.replace(info, active=max(0, info.active + delta))

    async def transceivers(self, region: str | None = None) -> list[TransceiverInfo]:
        return [t for t in self._transceivers.values() if region is None or t.region == region]

    async def publish_agent(self, info: AgentInfo) -> None:
        self._agents[info.id] = info

    async def remove_agent(self, id: str) -> None:
        self._agents.pop(id, None)

    async def agents(self) -> list[AgentInfo]:
        return list(self._agents.values())

    async def put_call(self, call_id: str, transceiver_id: str, ttl_s: float) -> None:
        now = self._clock()
        self._calls.put(call_id, transceiver_id, now + ttl_s, now)

    async def get_call(self, call_id: str) -> str | None:
        return self._calls.get(call_id, self._clock())

    async def delete_call(self, call_id: str) -> None:
        self._calls.delete(call_id)

    async def put_client_secret(self, value: str, session: dict[str, Any], expires_at: int) -> None:
        # Stored as JSON text, exactly what a networked backend would hold, so
        # a non-serialisable session fails here rather than only with Redis.
        self._secrets.put(value, json.dumps(session), float(expires_at), self._clock())

    async def get_client_secret(self, value: str) -> dict[str, Any] | None:
        text = self._secrets.get(value, self._clock())
        if text is None:
            return None
        session: dict[str, Any] = json.loads(text)
        return session

    def sizes(self) -> tuple[int, int, int]:
        """(transceivers, calls, client secrets) held right now, for leak tests."""
        now = self._clock()
        self._calls.prune(now)
        self._secrets.prune(now)
        return len(self._transceivers), len(self._calls), len(self._secrets)
