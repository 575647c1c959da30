"""The relay's shared flow cache in Redis, never in the packet path's way.

A relay that restarts (or a sibling relay behind the same public address that
receives a client it never saw) knows nothing of live flows; the client's next
STUN check comes within seconds, its media within milliseconds. With the cache,
the relay that creates a flow writes it down, and a relay that gets a
non-STUN packet from an unknown client looks it up, so media resumes at once.

The worker's loop never waits on Redis: writes and lookups go to one thread
per worker through bounded queues. A lookup for a client not yet answered
returns None at once (that packet is dropped, counted ``not_stun``) and
asks; the answer is kept, and the client's next packet, 20 ms later, finds its
flow. A client Redis does not know is remembered as unknown for a while, so a
flood of junk from spoofed addresses costs one query per address, bounded by
the queue. Redis down or slow: known flows are unaffected, STUN still creates
flows, and the failures are counted.
"""

from __future__ import annotations

import collections
import logging
import threading
import time
from collections.abc import Callable
from typing import Final

import redis

from talkwire.config import format_address, parse_address
from talkwire.errors import ConfigError
from talkwire.registry import redis_password
from talkwire.relay.flows import Address, StoredFlow, normalize_address

log = logging.getLogger(__name__)

# A flow outlives any call (signaling's call TTL is 6 h) in the cache.
ENTRY_TTL_S: Final = 7 * 3600
# Unknown clients are not asked about again this soon.
NEGATIVE_TTL_S: Final = 5.0
# An answer waits this long for the client's next packet (20 ms away for media).
ANSWER_TTL_S: Final = 5.0
QUEUE_LIMIT: Final = 4096
ANSWERS_LIMIT: Final = 65536
# One slow Redis call must not hold the thread's queue for long.
SOCKET_TIMEOUT_S: Final = 0.5


class RedisFlowCache:
    """A ``FlowStore`` for one worker; start it after fork (it owns a thread)."""

    def __init__(
        self,
        url: str,
        cluster: int,
        *,
        prefix: str = "talkwire:",
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._redis = redis.Redis.from_url(
            url,
            socket_timeout=SOCKET_TIMEOUT_S,
            socket_connect_timeout=SOCKET_TIMEOUT_S,
            password=redis_password(),
        )
        self._prefix = f"{prefix}flow:{cluster}:"
        self._clock = clock
        self._writes: collections.deque[StoredFlow] = collections.deque()
        self._asks: collections.deque[tuple[Address, int]] = collections.deque()
        self._asked: set[tuple[Address, int]] = set()
        # Kept only briefly: for the client's next packet, not as a second flow table.
        self._answers: dict[tuple[Address, int], tuple[StoredFlow, float]] = {}
        self._unknown: dict[tuple[Address, int], float] = {}
        self._wake = threading.Event()
        self._stop = False
        self.errors = 0
        self.overflows = 0  # writes or lookups not queued: the thread is behind
        self._thread = threading.Thread(target=self._run, name="flow-cache", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def close(self) -> None:
        self._stop = True
        self._wake.set()
        self._thread.join(2.0)
        self._redis.close()

    # -- the worker's side: constant time, no I/O -----------------------------

    def record(self, flow: StoredFlow) -> None:
        if len(self._writes) >= QUEUE_LIMIT:
            self.overflows += 1
            return
        self._writes.append(flow)
        self._wake.set()

    def lookup(self, client: Address, ingress: int) -> StoredFlow | None:
        key = (client, ingress)
        found = self._answers.pop(key, None)
        if found is not None and self._clock() < found[1]:
            return found[0]
        if key in self._asked:
            return None
        unknown_until = self._unknown.get(key)
        if unknown_until is not None and self._clock() < unknown_until:
            return None
        if len(self._asks) >= QUEUE_LIMIT:
            self.overflows += 1
            return None
        self._asked.add(key)
        self._asks.append(key)
        self._wake.set()
        return None

    # -- the thread's side ----------------------------------------------------

    def _key(self, client: Address, ingress: int) -> str:
        return f"{self._prefix}{ingress}:{format_address(client[:2])}"

    def _run(self) -> None:
        failing = False
        while not self._stop:
            self._wake.wait(1.0)
            self._wake.clear()
            try:
                self._flush_writes()
                self._answer_asks()
            except redis.RedisError as exc:
                self.errors += 1
                if not failing:  # once per outage; the counter has the rest
                    log.warning("flow cache unreachable (forwarding goes on): %s", exc)
                failing = True
                self._stop_waiting_for_answers()
            else:
                failing = False

    def _flush_writes(self) -> None:
        if not self._writes:
            return
        pipe = self._redis.pipeline(transaction=False)
        while self._writes:
            flow = self._writes.popleft()
            hop = format_address(flow.next_hop[:2])
            pipe.set(self._key(flow.client, flow.ingress), hop, ex=ENTRY_TTL_S)
        pipe.execute()

    def _answer_asks(self) -> None:
        if not self._asks:
            return
        keys = []
        while self._asks:
            keys.append(self._asks.popleft())
        values = self._redis.mget([self._key(client, ingress) for client, ingress in keys])
        now = self._clock()
        if len(self._unknown) > ANSWERS_LIMIT:
            self._unknown = {k: t for k, t in self._unknown.items() if t > now}
        if len(self._answers) > ANSWERS_LIMIT // 2:
            self._answers = {k: v for k, v in self._answers.items() if v[1] > now}
        for (client, ingress), value in zip(keys, values, strict=True):
            self._asked.discard((client, ingress))
            if value is None:
                self._unknown[(client, ingress)] = now + NEGATIVE_TTL_S
                continue
            try:
                text = value if isinstance(value, str) else value.decode("ascii")
                hop = normalize_address(*parse_address(text, "flow cache hop"))
            except (ConfigError, UnicodeDecodeError):
                self.errors += 1
                continue
            if len(self._answers) < ANSWERS_LIMIT:
                flow = StoredFlow(client, ingress, hop)
                self._answers[(client, ingress)] = (flow, now + ANSWER_TTL_S)

    def _stop_waiting_for_answers(self) -> None:
        # The asks of a failed round are forgotten, so their clients may ask again.
        self._asks.clear()
        self._asked.clear()
