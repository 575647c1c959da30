"""The relay's flow table: client address (per ingress socket) -> next hop.

Sans-IO: time is always a parameter. The forwarding loop reads ``by_ingress``
directly (one dict lookup per packet, keyed by the very address tuple that
``recvfrom_into`` returned, so the fast path builds no key); everything else
(creation, expiry, capacity) goes through methods.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from talkwire.encap import pack_header

# (ip, port) for IPv4; (ip, port, flowinfo, scope_id) for IPv6, exactly as
# `socket.recvfrom` returns them, so that a received address is a dict key as-is.
Address = tuple[str, int] | tuple[str, int, int, int]

DEFAULT_IDLE_TIMEOUT = 30.0
DEFAULT_CAPACITY = 1_000_000
# How much of a sweep pass one call may do; the server calls sweep every tick.
DEFAULT_SWEEP_LIMIT = 4096
_IP_CACHE_SIZE = 1024


class Flow:
    """One client's route. Mutable in place so the hot path allocates nothing.

    ``seen`` is assigned the loop's per-batch clock value, a float shared by
    every flow touched in that batch, so keeping it costs one pointer per flow.
    """

    __slots__ = ("header", "hop", "seen")

    def __init__(self, header: bytes, hop: Address, seen: float) -> None:
        self.header = header
        self.hop = hop
        self.seen = seen

    def __repr__(self) -> str:
        return f"Flow(hop={self.hop!r}, seen={self.seen!r})"


@dataclass(frozen=True, slots=True)
class StoredFlow:
    """What a shared flow cache keeps about a flow (no per-packet state)."""

    client: Address
    ingress: int
    next_hop: Address


class FlowStore(Protocol):
    """A cache shared between relays (Redis in a later issue).

    The relay calls ``record`` once when it creates a flow and ``lookup`` only
    when a non-STUN packet arrives from a client it has no flow for; never per
    forwarded packet.
    """

    def record(self, flow: StoredFlow) -> None: ...

    def lookup(self, client: Address, ingress: int) -> StoredFlow | None: ...


class NullFlowStore:
    """The default: no shared cache."""

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
    """Flows per ingress socket, with a hard capacity and incremental idle expiry.

    A full table refuses new flows (``refused`` counts them) and never evicts a
    live one: a flood of new clients cannot push out calls in progress.
    """

    def __init__(
        self,
        ingress_count: int,
        *,
        capacity: int = DEFAULT_CAPACITY,
        idle_timeout: float = DEFAULT_IDLE_TIMEOUT,
    ) -> None:
        if ingress_count < 1:
            raise ValueError("a flow table needs at least one ingress")
        if capacity < 0:
            raise ValueError("capacity must be >= 0")
        if idle_timeout <= 0:
            raise ValueError("idle timeout must be > 0")
        self.capacity = capacity
        self.idle_timeout = idle_timeout
        # One dict per ingress so the hot path never builds a (client, ingress) key.
        self.by_ingress: list[dict[Address, Flow]] = [{} for _ in range(ingress_count)]
        self.refused = 0
        self.expired = 0
        self._count = 0
        # Next hops are few (transceivers, cluster ingresses) and shared by many flows.
        self._hops: dict[Address, Address] = {}
        self._ips: dict[str, str] = {}
        # Incremental sweep state: a snapshot of one ingress's keys at a time.
        self._sweep_ingress = 0
        self._sweep_keys: list[Address] = []
        self._sweep_pos = 0
        self._in_pass = False
        self._next_pass = float("-inf")

    def __len__(self) -> int:
        return self._count

    def get(self, client: Address, ingress: int) -> Flow | None:
        return self.by_ingress[ingress].get(client)

    def intern_hop(self, hop: Address) -> Address:
        shared = self._hops.get(hop)
        if shared is None:
            # Bounded by the number of distinct next hops ever routed to, which
            # only signed tokens, the cluster table and trusted sources produce.
            shared = self._hops.setdefault(hop, hop)
        return shared

    def add(self, client: Address, ingress: int, hop: Address, now: float) -> Flow | None:
        """Create or re-target the flow; ``None`` when the table is full."""
        flows = self.by_ingress[ingress]
        flow = flows.get(client)
        hop = self.intern_hop(hop)
        if flow is not None:
            flow.hop = hop
            flow.seen = now
            return flow
        if self._count >= self.capacity:
            self.refused += 1
            return None
        flow = Flow(pack_header(client, ingress), hop, now)
        flows[self._share_ip(client)] = flow
        self._count += 1
        return flow

    def _share_ip(self, client: Address) -> Address:
        """The key to store: clients behind one NAT (or a benchmark) share one IP string.

        A small cache, not ``sys.intern``: interning every distinct client IP
        would cost more per flow than sharing saves.
        """
        ip = self._ips.get(client[0])
        if ip is None:
            if len(self._ips) >= _IP_CACHE_SIZE:
                self._ips.clear()
            self._ips[client[0]] = client[0]
            return client
        if ip is client[0]:
            return client
        if len(client) == 2:
            return (ip, client[1])
        return (ip, client[1], client[2], client[3])

    def remove(self, client: Address, ingress: int) -> bool:
        if self.by_ingress[ingress].pop(client, None) is None:
            return False
        self._count -= 1
        return True

    def sweep(self, now: float, limit: int = DEFAULT_SWEEP_LIMIT) -> int:
        """Expire up to ``limit`` examined flows idle for ``idle_timeout``; returns expired.

        A pass walks a snapshot of each ingress's keys a slice per call, so no
        call costs more than ``limit`` lookups; a new pass starts at most every
        quarter timeout, so a flow lives at most ~1.25 timeouts plus one pass.
        """
        if self._sweep_pos >= len(self._sweep_keys) and not self._advance_pass(now):
            return 0
        flows = self.by_ingress[self._sweep_ingress]
        end = min(self._sweep_pos + limit, len(self._sweep_keys))
        deadline = now - self.idle_timeout
        expired = 0
        for key in self._sweep_keys[self._sweep_pos : end]:
            flow = flows.get(key)
            if flow is not None and flow.seen <= deadline:
                del flows[key]
                expired += 1
        self._sweep_pos = end
        self._count -= expired
        self.expired += expired
        return expired

    def _advance_pass(self, now: float) -> bool:
        """Move the sweep to the next ingress, or start a new pass if one is due."""
        if self._in_pass and self._sweep_ingress + 1 < len(self.by_ingress):
            self._sweep_ingress += 1
        else:
            self._in_pass = False
            if now < self._next_pass:
                return False
            self._in_pass = True
            self._next_pass = now + self.idle_timeout / 4
            self._sweep_ingress = 0
        self._sweep_keys = list(self.by_ingress[self._sweep_ingress])
        self._sweep_pos = 0
        return True

    def flows(self) -> Sequence[tuple[Address, int, Flow]]:
        """Every flow as (client, ingress, flow); for tests and diagnostics, not the hot path."""
        return [
            (client, ingress, flow)
            for ingress, flows in enumerate(self.by_ingress)
            for client, flow in flows.items()
        ]
