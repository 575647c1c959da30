"""Routing decisions for the relay, sans-IO: bytes, addresses and time in, decisions out.

Public side: a datagram from a client either follows its flow (``Flow``: next
hop and the precomputed encapsulation header) or is dropped (``Drop``, a
reason). Only a STUN binding request whose server ufrag verifies as a route
token creates a flow. Internal side: a datagram from a trusted transceiver
network names the client in its header; it is sent on (``ReturnRoute``) and
(re)creates that client's flow, which is how a restarted relay recovers.

Nothing here raises on bad input, answers a source, or logs: every refusal is
a ``Drop`` counted in ``drops``.
"""

from __future__ import annotations

import enum
import ipaddress
import socket
import struct
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import NamedTuple

from talkwire import encap, route_token, stun
from talkwire.errors import EncapError, StunError, StunMissingUsername, TokenError
from talkwire.rate_limit import Rate, RateLimiter
from talkwire.relay.flows import (
    Address,
    ClientKey,
    Flow,
    FlowStore,
    FlowTable,
    NullFlowStore,
    StoredFlow,
    client_key,
    flow_header,
    key_sockaddr,
)

Network = ipaddress.IPv4Network | ipaddress.IPv6Network

LOOPBACK: tuple[Network, ...] = (
    ipaddress.ip_network("127.0.0.0/8"),
    ipaddress.ip_network("::1/128"),
)
# Bounded so a flood from many untrusted sources cannot grow it without limit.
_TRUST_CACHE_SIZE = 4096
_ROUTE_CACHE_SIZE = 16384
# RFC 7983: a first byte below 4 is STUN (the I/O layer tests known flows' packets with it).
STUN_FIRST_BYTE_END = 4
_STUN_FIRST_BYTES = range(STUN_FIRST_BYTE_END)
# How long a moved flow ignores its old hop's return traffic: past the old
# call's ICE consent timeout (30 s), after which that transceiver stops sending.
MOVED_HOLD_S = 60.0
_MOVED_LIMIT = 65536
_PORT = struct.Struct("!H")


class Drop(enum.IntEnum):
    """Why a datagram was not forwarded. Values index ``Router.drops``."""

    TOO_SHORT = 0
    NOT_STUN = 1
    NOT_BINDING_REQUEST = 2
    MALFORMED_STUN = 3
    NO_USERNAME = 4
    BAD_USERNAME = 5
    BAD_TOKEN = 6
    UNKNOWN_KEY = 7
    BAD_MAC = 8
    UNKNOWN_CLUSTER = 9
    BAD_INTEGRITY = 10
    WRONG_FAMILY = 11
    TABLE_FULL = 12
    UNTRUSTED_SOURCE = 13
    BAD_HEADER = 14
    UNKNOWN_INGRESS = 15
    SEND_FAILED = 16  # counted by the I/O layer: the socket refused the datagram
    INTERNAL_ERROR = 17  # counted by the I/O layer: a bug caught so the worker lives
    RATE_LIMITED = 18  # a new flow from a network prefix over its rate
    STALE_HOP = 19  # return traffic from the transceiver a client's new call moved away from

    @property
    def label(self) -> str:
        return self.name.lower()


class FlowSource(enum.IntEnum):
    """How a flow came to be. Values index ``Router.created``."""

    STUN = 0
    RETURN = 1
    PEER = 2  # announced by a sibling worker that learned it from return traffic
    STORE = 3  # found in the shared flow cache

    @property
    def label(self) -> str:
        return self.name.lower()


class ReturnRoute(NamedTuple):
    """Send ``data[HEADER_SIZE:]`` to ``client`` from public socket ``ingress``; an
    ingress past the public sockets is a global relay's (``Router.backbone_route``)."""

    ingress: int
    client: Address


class CachedReturn(NamedTuple):
    """A return header seen before, for the fast path of ``from_internal`` (and a
    batching loop's own): valid while ``source`` sends it and the client's
    current flow is still this very object (flows are immutable, so the same
    object means the same hop)."""

    ingress: int
    key: ClientKey
    flow: Flow
    source: Address  # trusted: entries are made only after the trust check
    sockaddr: bytes  # the client as a 28-byte sockaddr, for sendmmsg
    route: ReturnRoute


@dataclass(frozen=True, slots=True)
class RouterSettings:
    """Everything the router decides with. Families are 4 or 6."""

    keyring: route_token.Keyring
    cluster: int
    ingress_families: Sequence[int]
    internal_family: int = 4
    cluster_ingress: Mapping[int, tuple[str, int]] = field(default_factory=dict)
    trusted: Sequence[Network] = LOOPBACK
    verify_integrity: bool = False
    # New flows from STUN per client prefix (/24, /64); None: unlimited.
    new_flows_per_prefix: Rate | None = None
    # Global relays that forward clients here (their internal addresses, in
    # --backbone-peer order): each gets a block of virtual ingress indices.
    backbone_peers: Sequence[tuple[str, int]] = ()


# A client a global relay forwards here keeps the global relay's public socket
# in its header: peer p's socket g is virtual ingress P + p * VIRTUAL_PER_PEER + g
# (P: this relay's own public sockets), so replies find their way back.
VIRTUAL_PER_PEER = 16


def ingress_count(public_sockets: int, backbone_peers: int) -> int:
    """Ingress indices a relay has: its public sockets, then each peer's block."""
    return public_sockets + VIRTUAL_PER_PEER * backbone_peers


def client_prefix(ip: str) -> str | bytes:
    """The network a client is counted in: its /24 (IPv4) or /64 (IPv6), the
    blocks one customer or one spoofing host usually holds."""
    if ":" not in ip:
        return ip.rpartition(".")[0]
    return ipaddress.IPv6Address(ip).packed[:8]


def _family(ip: str) -> int:
    return 6 if ":" in ip else 4


def _address(ip: str, port: int, family: int) -> Address | None:
    """The dict key a socket of ``family`` would have produced, or None on a mismatch.
    Family 0 (a virtual ingress: a global relay's socket) takes either."""
    if family == 0:
        family = _family(ip)
    elif _family(ip) != family:
        return None
    return (ip, port) if family == 4 else (ip, port, 0, 0)


def encode_peer_flow(header: bytes, hop: Address) -> bytes:
    """A flow announcement between sibling workers: encap header + hop IP + hop port."""
    af = socket.AF_INET6 if _family(hop[0]) == 6 else socket.AF_INET
    return header + socket.inet_pton(af, hop[0]) + _PORT.pack(hop[1])


def decode_peer_flow(message: bytes) -> tuple[encap.EncapHeader, Address] | None:
    size = len(message) - encap.HEADER_SIZE - _PORT.size
    if size not in (4, 16):
        return None
    try:
        header = encap.unpack_header(message)
    except EncapError:
        return None
    af = socket.AF_INET if size == 4 else socket.AF_INET6
    ip = socket.inet_ntop(af, message[encap.HEADER_SIZE : encap.HEADER_SIZE + size])
    (port,) = _PORT.unpack_from(message, encap.HEADER_SIZE + size)
    hop = _address(ip, port, 4 if size == 4 else 6)
    return (header, hop) if hop is not None and port else None


class Router:
    """Decides, counts, and keeps the flow table; the I/O layer only moves bytes."""

    def __init__(
        self,
        settings: RouterSettings,
        table: FlowTable,
        store: FlowStore | None = None,
    ) -> None:
        public = len(settings.ingress_families)
        if len(table.by_ingress) != ingress_count(public, len(settings.backbone_peers)):
            raise ValueError("flow table and settings disagree on the number of ingresses")
        self.settings = settings
        self.table = table
        self.store: FlowStore = store if store is not None else NullFlowStore()
        # Nothing to build per created flow when there is no shared cache.
        self._recording = type(self.store) is not NullFlowStore
        self.drops = [0] * len(Drop)
        self.created = [0] * len(FlowSource)
        # Flows learned from return traffic, for the I/O layer to announce to
        # sibling workers (the kernel may hash that client to one of them).
        self.announcements: list[bytes] = []
        self._keyring = settings.keyring
        # Flows a STUN check moved to a new hop: (client key, ingress) -> (old hop, until).
        self._moved: dict[tuple[bytes, int], tuple[Address, float]] = {}
        # Virtual ingresses (0) take clients of either family.
        self._families = (*settings.ingress_families, *[0] * (len(table.by_ingress) - public))
        self.public_count = public
        self._peer_index = {ip: i for i, (ip, _) in enumerate(settings.backbone_peers)}
        self._peers = tuple(
            _address(ip, port, _family(ip)) or (ip, port) for ip, port in settings.backbone_peers
        )
        self._hops: dict[int, Address] = {}
        for cluster, (ip, port) in settings.cluster_ingress.items():
            hop = _address(ip, port, _family(ip))
            assert hop is not None
            self._hops[cluster] = hop
        self._trust_cache: dict[str, bool] = {}
        rate = settings.new_flows_per_prefix
        self._new_flow_limit = RateLimiter(rate) if rate is not None else None
        # Keyed by the 24 header bytes; bounded, so memory does not grow with flows.
        self.return_cache: dict[bytes, CachedReturn] = {}

    # -- public side -------------------------------------------------------

    def from_public(
        self, data: bytes | bytearray | memoryview, client: Address, ingress: int, now: float
    ) -> Flow | Drop:
        """Route a client datagram: the flow to forward on, or why it is dropped.

        ``now`` is the sans-IO clock; the table itself only needs it in ``sweep``
        (a flow's freshness is the generation it sits in).
        """
        flow = self.table.by_ingress[ingress].get(client_key(client))
        if flow is not None:
            return flow
        return self.from_new_client(data, client, ingress, now)

    def from_new_client(
        self, data: bytes | bytearray | memoryview, client: Address, ingress: int, now: float
    ) -> Flow | Drop:
        """The slow path, for a client not in the current generation (the loop looked).

        A flow idle since the last rotation is found here and made current.
        """
        flow = self.table.get(client, ingress)
        if flow is not None:
            return flow
        decision = self._new_client(data, client, ingress, now)
        if isinstance(decision, Drop):
            self.drops[decision] += 1
        return decision

    def _new_client(
        self, data: bytes | bytearray | memoryview, client: Address, ingress: int, now: float
    ) -> Flow | Drop:
        if not data:
            return Drop.TOO_SHORT
        if data[0] not in _STUN_FIRST_BYTES:
            return self._from_store(client, ingress, now)
        hop = self._stun_hop(data)
        if isinstance(hop, Drop):
            return hop
        if self._over_new_flow_rate(client, now):
            return Drop.RATE_LIMITED
        return self._create(client, ingress, hop, now, FlowSource.STUN)

    def from_known_stun(
        self,
        data: bytes | bytearray | memoryview,
        client: Address,
        ingress: int,
        flow: Flow,
        now: float,
    ) -> Flow:
        """A STUN packet from a client that has a flow: the flow to forward on.

        Usually a consent check of the same call. But a NAT (or the OS) may give
        a client's address to a new call within the idle timeout, and that
        call's checks name another transceiver: a valid binding request whose
        token routes elsewhere re-targets the flow (pion's UDP mux routes STUN
        by ufrag first for the same reason). Anything else keeps the flow.
        """
        hop = self._stun_hop(data)
        if isinstance(hop, Drop):
            return flow
        prefix = self.table.hop_prefix(hop)
        if prefix is not None and flow.startswith(prefix):
            return flow
        # A move costs the same budget as a new flow: spoofed checks cannot churn flows.
        if self._over_new_flow_rate(client, now):
            self.drops[Drop.RATE_LIMITED] += 1
            return flow
        old_hop = self.table.hop(flow)
        retargeted = self.table.add(client, ingress, hop)
        if retargeted is None:
            return flow
        # The old transceiver keeps sending until its call times out; its return
        # traffic must not move the flow back (see _from_internal).
        if len(self._moved) >= _MOVED_LIMIT:
            self._moved = {k: v for k, v in self._moved.items() if v[1] > now}
        self._moved[(client_key(client), ingress)] = (old_hop, now + MOVED_HOLD_S)
        self.created[FlowSource.STUN] += 1
        if self._recording:
            self.store.record(StoredFlow(client, ingress, hop))
        return retargeted

    def _over_new_flow_rate(self, client: Address, now: float) -> bool:
        # Spent only by requests that would create or move a flow, so garbage
        # sent from a prefix does not spend its users' budget.
        limit = self._new_flow_limit
        return limit is not None and limit.take(client_prefix(client[0]), now) > 0

    def _stun_hop(self, data: bytes | bytearray | memoryview) -> Address | Drop:
        """The next hop a first binding request's token names, or why there is none."""
        try:
            username = stun.binding_request_username(data)
        except StunMissingUsername:
            return Drop.NO_USERNAME
        except StunError:
            return Drop.MALFORMED_STUN
        if username is None:
            return Drop.NOT_BINDING_REQUEST
        try:
            server_ufrag, _ = stun.split_username(username)
        except StunError:
            return Drop.BAD_USERNAME
        try:
            token = route_token.verify(self._keyring, server_ufrag)
        except TokenError:
            return self._token_failure(server_ufrag)
        if token.cluster == self.settings.cluster:
            ip, port = token.address
            hop = _address(ip, port, _family(ip))
        else:
            hop = self._hops.get(token.cluster)
            if hop is None:
                return Drop.UNKNOWN_CLUSTER
        if hop is None or _family(hop[0]) != self.settings.internal_family:
            return Drop.WRONG_FAMILY
        if self.settings.verify_integrity:
            password = route_token.ice_password(self._keyring, server_ufrag)
            try:
                if not stun.verify_message_integrity(data, password):
                    return Drop.BAD_INTEGRITY
            except StunError:
                return Drop.MALFORMED_STUN
        return hop

    def set_keyring(self, keyring: route_token.Keyring) -> None:
        """Verify with ``keyring`` from the next first packet on; live flows are untouched."""
        self._keyring = keyring

    @property
    def keyring(self) -> route_token.Keyring:
        return self._keyring

    def _token_failure(self, ufrag: bytes) -> Drop:
        # Only on the failure path: tell apart garbage, an unknown key and a forgery.
        try:
            token = route_token.decode_unverified(ufrag)
        except TokenError:
            return Drop.BAD_TOKEN
        if token.key_id not in self._keyring.keys:
            return Drop.UNKNOWN_KEY
        return Drop.BAD_MAC

    def _from_store(self, client: Address, ingress: int, now: float) -> Flow | Drop:
        stored = self.store.lookup(client, ingress)
        if stored is None:
            return Drop.NOT_STUN
        return self._create(client, ingress, stored.next_hop, now, FlowSource.STORE)

    def _create(
        self, client: Address, ingress: int, hop: Address, now: float, source: FlowSource
    ) -> Flow | Drop:
        try:
            flow = self.table.add(client, ingress, hop)
        except EncapError:
            return Drop.BAD_HEADER  # an address the header cannot carry (port 0)
        if flow is None:
            return Drop.TABLE_FULL
        self.created[source] += 1
        if self._recording and source in (FlowSource.STUN, FlowSource.RETURN):
            self.store.record(StoredFlow(client, ingress, hop))
        return flow

    # -- backbone side (clients a global relay forwards) ---------------------

    def from_backbone(
        self, data: bytes | bytearray | memoryview, source: Address, now: float
    ) -> tuple[Flow, int] | Drop:
        """A client datagram a global relay forwarded, encapsulated: the flow to
        forward its payload (``data[HEADER_SIZE:]``) on and its virtual ingress,
        or why it is dropped. The payload is routed exactly as from a public
        socket; the virtual ingress in the flow's header brings replies back
        through that global relay."""
        decision = self._from_backbone(data, source, now)
        if isinstance(decision, Drop):
            self.drops[decision] += 1
        return decision

    def _from_backbone(
        self, data: bytes | bytearray | memoryview, source: Address, now: float
    ) -> tuple[Flow, int] | Drop:
        peer = self._peer_index.get(source[0])
        if peer is None:
            return Drop.UNTRUSTED_SOURCE
        if len(data) <= encap.HEADER_SIZE:
            return Drop.TOO_SHORT
        try:
            header = encap.unpack_header(data)
        except EncapError:
            return Drop.BAD_HEADER
        if header.ingress >= VIRTUAL_PER_PEER:
            return Drop.UNKNOWN_INGRESS
        ingress = self.public_count + peer * VIRTUAL_PER_PEER + header.ingress
        client = _address(*header.client, 0)
        assert client is not None
        payload = data[encap.HEADER_SIZE :]
        flow = self.table.get(client, ingress)
        if flow is None:
            decision = self._new_client(payload, client, ingress, now)
            return decision if isinstance(decision, Drop) else (decision, ingress)
        if payload[0] in _STUN_FIRST_BYTES:
            flow = self.from_known_stun(payload, client, ingress, flow, now)
        return flow, ingress

    def backbone_route(self, ingress: int) -> tuple[Address, int]:
        """Where a reply for virtual ``ingress`` goes: the global relay's internal
        address, and the index of its public socket to put in the header."""
        block, socket_index = divmod(ingress - self.public_count, VIRTUAL_PER_PEER)
        return self._peers[block], socket_index

    # -- internal side -----------------------------------------------------

    def from_internal(
        self, data: bytes | bytearray | memoryview, source: Address, now: float
    ) -> ReturnRoute | Drop:
        """Route a transceiver datagram back to its client, or why it is dropped."""
        # Fast path: a header seen before, from the same (so trusted) source, for
        # a flow that is still current and unchanged (flows are immutable: the
        # same object means the same hop); decoding the header costs ~4x this.
        # A datagram shorter than a header makes a key no cached header equals.
        cached = self.return_cache.get(bytes(data[: encap.HEADER_SIZE]))
        if (
            cached is not None
            and cached.source == source
            and self.table.by_ingress[cached.ingress].get(cached.key) is cached.flow
        ):
            return cached.route
        decision = self._from_internal(data, source, now)
        if isinstance(decision, Drop):
            self.drops[decision] += 1
        return decision

    def _from_internal(
        self, data: bytes | bytearray | memoryview, source: Address, now: float
    ) -> ReturnRoute | Drop:
        if not self.is_trusted(source[0]):
            return Drop.UNTRUSTED_SOURCE
        if len(data) < encap.HEADER_SIZE:
            return Drop.TOO_SHORT
        try:
            header = encap.unpack_header(data)
        except EncapError:
            return Drop.BAD_HEADER
        ingress = header.ingress
        if ingress >= len(self._families):
            return Drop.UNKNOWN_INGRESS
        ip, port = header.client
        client = _address(ip, port, self._families[ingress])
        if client is None:
            return Drop.BAD_HEADER
        route = ReturnRoute(ingress, client)
        flow = self.table.get(client, ingress)
        if flow is None or self.table.hop(flow) != source:
            if flow is not None and self._moved:
                moved = self._moved.get((client_key(client), ingress))
                if moved is not None and moved[0] == source and now < moved[1]:
                    return Drop.STALE_HOP
            created = flow is None
            flow = self.table.add(client, ingress, source)
            if flow is None:
                # The return path is stateless: the packet still goes out; the
                # client's own packets will meet TABLE_FULL on the public side.
                return route
            if created:
                self.created[FlowSource.RETURN] += 1
                if self._recording:
                    self.store.record(StoredFlow(client, ingress, source))
            self.announcements.append(encode_peer_flow(flow_header(flow), source))
        if len(self.return_cache) >= _ROUTE_CACHE_SIZE:
            self.return_cache.clear()
        key = client_key(client)
        self.return_cache[bytes(data[: encap.HEADER_SIZE])] = CachedReturn(
            ingress, key, flow, source, key_sockaddr(key), route
        )
        return route

    def is_trusted(self, ip: str) -> bool:
        trusted = self._trust_cache.get(ip)
        if trusted is None:
            try:
                address = ipaddress.ip_address(ip)
            except ValueError:
                return False
            trusted = any(address in net for net in self.settings.trusted)
            if len(self._trust_cache) >= _TRUST_CACHE_SIZE:
                self._trust_cache.clear()
            self._trust_cache[ip] = trusted
        return trusted

    # -- sibling workers ---------------------------------------------------

    def learn_from_peer(self, message: bytes, now: float) -> bool:
        """Apply a sibling's announcement; False when it is unusable."""
        decoded = decode_peer_flow(message)
        if decoded is None:
            return False
        header, hop = decoded
        ingress = header.ingress
        if ingress >= len(self._families):
            return False
        ip, port = header.client
        client = _address(ip, port, self._families[ingress])
        if client is None:
            return False
        flow = self.table.get(client, ingress)
        if flow is not None and self.table.hop(flow) == hop:
            return True
        created = flow is None
        if self.table.add(client, ingress, hop) is None:
            return False
        if created:
            self.created[FlowSource.PEER] += 1
        return True
