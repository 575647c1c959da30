"""The relay's flow table: client address (per ingress socket) -> next hop.

Sans-IO: time is always a parameter. The forwarding loop reads ``by_ingress``
directly (one dict lookup per packet); everything else (creation, expiry,
capacity) goes through methods.

Memory is what bounds a relay's flow count, so a flow is as small as Python
allows: one dict slot, a *client key* and one 26-byte value. The key is the
client's port and IP exactly as a Linux ``sockaddr_in``/``sockaddr_in6``
holds them from byte 2 on, so a batched receive reads it straight out of the
kernel's address buffer with one slice and no parsing (``client_key`` makes
it from an address tuple). The value holds the next hop's index and the
client's encapsulation header. Idleness is tracked by *generation*, not by a
per-flow timestamp: the dict a flow sits in says when it was last used.
"""

from __future__ import annotations

import ipaddress
import socket
import struct
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from talkwire.encap import HEADER_SIZE, pack_header

# (ip, port) for IPv4; (ip, port, flowinfo, scope_id) for IPv6, exactly as
# `socket.recvfrom` returns them.
Address = tuple[str, int] | tuple[str, int, int, int]

# A client key: sockaddr bytes 2..8 for IPv4 (port, address: 6 bytes) and 2..24
# for IPv6 (port, flowinfo, address: 22 bytes), all in network byte order.
# Linux reports flowinfo 0 on received datagrams; scope ids (link-local
# clients) are not part of the key and not supported.
ClientKey = bytes
V4_KEY_SIZE = 6
V6_KEY_SIZE = 22
SOCKADDR_SIZE = 28  # sockaddr_in6; sockaddr_in (16) padded with zeros to it
_V4_KEY = struct.Struct("!H4s")
_V6_KEY = struct.Struct("!HI16s")
_SOCKADDR_V4_PREFIX = struct.pack("=H", socket.AF_INET)
_SOCKADDR_V6_PREFIX = struct.pack("=H", socket.AF_INET6)
_SOCKADDR_V4_PAD = bytes(SOCKADDR_SIZE - 2 - V4_KEY_SIZE)
_SOCKADDR_V6_PAD = bytes(SOCKADDR_SIZE - 2 - V6_KEY_SIZE)

# A flow as the table stores it: the next hop's index in ``FlowTable.hops``
# (2 bytes, big-endian), then the 24-byte encapsulation header for the client.
# The loop copies all 26 bytes in front of the payload in one go and sends from
# byte 2; immutable, so a flow is created once and never touched per packet.
Flow = bytes
HOP_INDEX_SIZE = 2
FLOW_SIZE = HOP_INDEX_SIZE + HEADER_SIZE
MAX_HOPS = 1 << (8 * HOP_INDEX_SIZE)

DEFAULT_IDLE_TIMEOUT = 30.0
DEFAULT_CAPACITY = 1_000_000
# Expired flows freed per sweep call, at least (more when many wait).
DEFAULT_SWEEP_LIMIT = 4096


def client_key(client: Address) -> ClientKey:
    """The key for an address tuple; ValueError when it is not one."""
    try:
        if len(client) == 2:
            return _V4_KEY.pack(client[1], socket.inet_pton(socket.AF_INET, client[0]))
        return _V6_KEY.pack(client[1], client[2], socket.inet_pton(socket.AF_INET6, client[0]))
    except (OSError, struct.error, TypeError, IndexError) as exc:
        raise ValueError(f"not a client address: {client!r}") from exc


def key_address(key: ClientKey) -> Address:
    """The address tuple ``recvfrom`` would have given for ``key``."""
    if len(key) == V4_KEY_SIZE:
        port, ip = _V4_KEY.unpack(key)
        return (socket.inet_ntoa(ip), port)
    port, flowinfo, ip = _V6_KEY.unpack(key)
    return (socket.inet_ntop(socket.AF_INET6, ip), port, flowinfo, 0)


def key_sockaddr(key: ClientKey) -> bytes:
    """A 28-byte sockaddr (``sockaddr_in`` zero-padded, or ``sockaddr_in6``) for ``key``."""
    if len(key) == V4_KEY_SIZE:
        return _SOCKADDR_V4_PREFIX + key + _SOCKADDR_V4_PAD
    return _SOCKADDR_V6_PREFIX + key + _SOCKADDR_V6_PAD


def flow_header(flow: Flow) -> bytes:
    """The encapsulation header inside a flow (allocates: not for the hot path)."""
    return flow[HOP_INDEX_SIZE:]


def flow_hop_index(flow: Flow) -> int:
    return flow[0] << 8 | flow[1]


@dataclass(frozen=True, slots=True)
class StoredFlow:
    """What a shared flow cache keeps about a flow (no per-packet state)."""

    client: Address
    ingress: int
    next_hop: Address


class FlowStore(Protocol):
    """A cache shared between relays (``relay.flow_cache``, in Redis).

    The relay calls ``record`` once when it creates a flow and ``lookup`` only
    when a non-STUN packet arrives from a client it has no flow for; never per
    forwarded packet.
    """

    errors: int  # the cache could not be reached or answered junk
    overflows: int  # writes or lookups not made: the cache is behind

    def record(self, flow: StoredFlow) -> None: ...

    def lookup(self, client: Address, ingress: int) -> StoredFlow | None: ...


class NullFlowStore:
    """The default: no shared cache."""

    errors = 0
    overflows = 0

    def record(self, flow: StoredFlow) -> None:
        return None

    def lookup(self, client: Address, ingress: int) -> StoredFlow | None:
        return None


def normalize_address(ip: str, port: int) -> Address:
    """The form `recvfrom` gives for this address (canonical text, v6 as a 4-tuple)."""
    parsed = ipaddress.ip_address(ip)
    if parsed.version == 4:
        return (str(parsed), port)
    return (str(parsed), port, 0, 0)


class FlowTable:
    """Flows per ingress socket, with a hard capacity and generational idle expiry.

    A full table refuses new flows (``refused`` counts them) and never evicts a
    live one: a flood of new clients cannot push out calls in progress.

    Expiry: each ingress has a *current* and a *previous* dict. New and used
    flows live in current; every ``idle_timeout`` (driven by ``sweep``) current
    becomes previous and the old previous, holding only flows unused for a whole
    period, expires. A flow found in previous is moved back to current by
    ``get`` (the loop's slow path, once per flow per period), so the per-packet
    path only ever looks in current and writes nothing. A flow therefore
    expires between one and two ``idle_timeout`` after its last packet.
    Expired dicts are freed a slice per ``sweep`` call, so no call pauses for
    the whole table.
    """

    def __init__(
        self,
        ingress_count: int,
        *,
        capacity: int = DEFAULT_CAPACITY,
        idle_timeout: float = DEFAULT_IDLE_TIMEOUT,
        max_hops: int = MAX_HOPS,
    ) -> None:
        if ingress_count < 1:
            raise ValueError("a flow table needs at least one ingress")
        if capacity < 0:
            raise ValueError("capacity must be >= 0")
        if idle_timeout <= 0:
            raise ValueError("idle timeout must be > 0")
        if not 1 <= max_hops <= MAX_HOPS:
            raise ValueError(f"max_hops must be in 1..{MAX_HOPS}")
        self.capacity = capacity
        self.idle_timeout = idle_timeout
        # Current generation, one dict per ingress so the hot path never builds
        # a (client, ingress) key. Replaced (not cleared) at each rotation.
        self.by_ingress: list[dict[ClientKey, Flow]] = [{} for _ in range(ingress_count)]
        self._previous: list[dict[ClientKey, Flow]] = [{} for _ in range(ingress_count)]
        self._expiring: list[dict[ClientKey, Flow]] = []
        self._rotate_at: float | None = None
        self.refused = 0
        self.expired = 0
        self._count = 0
        # Next hops are few (transceivers, cluster ingresses) and shared by many
        # flows, which name them by index. Freed indices are reused after a
        # compaction, which bumps hop_epoch so callers drop per-index caches.
        self.hops: list[Address | None] = []
        self.hop_epoch = 0
        self._hop_prefixes: dict[Address, bytes] = {}
        self._free_hops: list[int] = []
        self._max_hops = max_hops

    def __len__(self) -> int:
        return self._count

    # -- hops ---------------------------------------------------------------

    def hop(self, flow: Flow) -> Address:
        hop = self.hops[flow_hop_index(flow)]
        assert hop is not None, "a flow names a freed hop index"
        return hop

    def hop_prefix(self, hop: Address) -> bytes | None:
        """The 2 bytes every flow to ``hop`` starts with, or None if no flow names it."""
        return self._hop_prefixes.get(hop)

    def _hop_prefix(self, hop: Address) -> bytes | None:
        prefix = self._hop_prefixes.get(hop)
        if prefix is not None:
            return prefix
        if not self._free_hops and len(self.hops) >= self._max_hops:
            self._compact_hops()
        if self._free_hops:
            index = self._free_hops.pop()
            self.hops[index] = hop
        elif len(self.hops) < self._max_hops:
            index = len(self.hops)
            self.hops.append(hop)
        else:
            return None  # every index names a hop some live flow uses
        prefix = self._hop_prefixes[hop] = index.to_bytes(HOP_INDEX_SIZE, "big")
        return prefix

    def _compact_hops(self) -> None:
        """Free the indices no live flow names (rare: once per ``max_hops`` new hops)."""
        used: set[int] = set()
        for generation in (self.by_ingress, self._previous):
            for flows in generation:
                for flow in flows.values():
                    used.add(flow[0] << 8 | flow[1])
        for index, hop in enumerate(self.hops):
            if hop is not None and index not in used:
                del self._hop_prefixes[hop]
                self.hops[index] = None
                self._free_hops.append(index)
        self.hop_epoch += 1

    # -- flows --------------------------------------------------------------

    def get(self, client: Address, ingress: int) -> Flow | None:
        """The client's flow; one found in the previous generation moves to current."""
        return self.get_key(client_key(client), ingress)

    def get_key(self, key: ClientKey, ingress: int) -> Flow | None:
        """``get`` by client key."""
        flow = self.by_ingress[ingress].get(key)
        if flow is None:
            flow = self._previous[ingress].pop(key, None)
            if flow is not None:
                self.by_ingress[ingress][key] = flow
        return flow

    def add(self, client: Address, ingress: int, hop: Address) -> Flow | None:
        """Create or re-target the flow; ``None`` when the table is full.

        Raises EncapError for an address the header cannot carry (port 0).
        """
        flows = self.by_ingress[ingress]
        key = client_key(client)
        flow = self.get_key(key, ingress)
        if flow is None and self._count >= self.capacity:
            self.refused += 1
            return None
        prefix = self._hop_prefix(hop)
        if prefix is None:
            self.refused += 1
            return None
        if flow is not None:
            if not flow.startswith(prefix):
                flow = prefix + flow[HOP_INDEX_SIZE:]
                flows[key] = flow
            return flow
        flow = prefix + pack_header(client, ingress)
        flows[key] = flow
        self._count += 1
        return flow

    def remove(self, client: Address, ingress: int) -> bool:
        key = client_key(client)
        if (
            self.by_ingress[ingress].pop(key, None) is None
            and self._previous[ingress].pop(key, None) is None
        ):
            return False
        self._count -= 1
        return True

    def sweep(self, now: float, limit: int = DEFAULT_SWEEP_LIMIT) -> int:
        """Rotate generations when one is due, free expired flows; returns flows expired.

        The first call starts the clock. Freeing walks the expired dicts at least
        ``limit`` entries per call (more when many wait, so it always finishes
        within a period), so no call costs time proportional to the table.
        """
        expired = 0
        if self._rotate_at is None:
            self._rotate_at = now + self.idle_timeout
        elif now >= self._rotate_at:
            self._rotate_at = now + self.idle_timeout
            for ingress, current in enumerate(self.by_ingress):
                old = self._previous[ingress]
                if old:
                    expired += len(old)
                    self._expiring.append(old)
                self._previous[ingress] = current
                self.by_ingress[ingress] = {}
            self._count -= expired
            self.expired += expired
        self._free_expired(limit)
        return expired

    @property
    def awaiting_free(self) -> int:
        """Expired flows not yet freed (already out of ``len`` and every lookup)."""
        return sum(len(flows) for flows in self._expiring)

    def _free_expired(self, limit: int) -> None:
        budget = max(limit, self.awaiting_free // 8)
        while self._expiring and budget > 0:
            flows = self._expiring[-1]
            count = min(budget, len(flows))
            for _ in range(count):
                flows.popitem()
            budget -= count
            if not flows:
                self._expiring.pop()

    def flows(self) -> Sequence[tuple[Address, int, Address]]:
        """Every live flow as (client, ingress, next hop); for tests and diagnostics."""
        return [
            (key_address(key), ingress, self.hop(flow))
            for generation in (self.by_ingress, self._previous)
            for ingress, flows in enumerate(generation)
            for key, flow in flows.items()
        ]
