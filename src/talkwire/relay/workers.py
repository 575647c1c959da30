"""A relay worker: its sockets and the forwarding loop.

``forward`` is the whole data plane of one worker and needs nothing but bound
sockets, a Router and a stop fd, so a benchmark can run it in-process. The
loop waits in epoll, then drains each ready socket with ``recvfrom_into`` into
one preallocated buffer until it would block (bounded per wake-up so no socket
starves the others). Client -> transceiver: the datagram lands behind room for
the flow (hop index + header), the flow's 26 bytes are copied in front and the
header + payload go out in one ``send`` on the hop's connected socket;
transceiver -> client with ``sendto`` of a view past the header. Counters are
local ints, written to the shared-memory row once per batch.
"""

from __future__ import annotations

import logging
import os
import select
import socket
import time
from collections.abc import Callable, MutableSequence, Sequence
from dataclasses import dataclass, field

from talkwire.encap import HEADER_SIZE
from talkwire.relay.flows import FLOW_SIZE, HOP_INDEX_SIZE, Address, FlowTable
from talkwire.relay.metrics import Slot, publish_router
from talkwire.relay.router import Drop, ReturnRoute, Router

log = logging.getLogger(__name__)

# Room for the flow (hop index + header) plus any UDP payload: never truncated.
BUFFER_SIZE = FLOW_SIZE + 65536
DEFAULT_TICK = 0.25
DEFAULT_DRAIN_LIMIT = 512
# Next hops are transceivers and cluster ingresses: few. Past this, sendto.
DEFAULT_CONNECTED_HOPS = 1024
_PEER_MESSAGE_MAX = 128
_PUBLIC, _INTERNAL, _PEER, _STOP = range(4)


@dataclass
class WorkerSockets:
    """One worker's sockets. ``public[i]`` is ingress index ``i`` in every header."""

    public: list[socket.socket]
    internal: socket.socket
    # Sibling channel: receive announcements on peer_rx, send on each peer_tx.
    peer_rx: socket.socket | None = None
    peer_tx: list[socket.socket] = field(default_factory=list)
    # Applied to the connected per-hop sockets the loop opens later.
    socket_buffer: int = 0

    def close(self) -> None:
        for sock in (*self.public, self.internal, *self.peer_tx):
            sock.close()
        if self.peer_rx is not None:
            self.peer_rx.close()


def _family(address: Address) -> socket.AddressFamily:
    return socket.AF_INET6 if ":" in address[0] else socket.AF_INET


def _udp_socket(address: Address, socket_buffer: int) -> socket.socket:
    sock = socket.socket(_family(address), socket.SOCK_DGRAM)
    try:
        if sock.family == socket.AF_INET6:
            # One family per socket: a v4-mapped client on a v6 socket would
            # need a second key form in the flow table.
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        if socket_buffer > 0:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, socket_buffer)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, socket_buffer)
        sock.setblocking(False)
    except OSError:
        sock.close()
        raise
    return sock


def open_public(address: Address, socket_buffer: int = 0) -> socket.socket:
    """A public socket sharing its port with the other workers (SO_REUSEPORT)."""
    sock = _udp_socket(address, socket_buffer)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind(address)
    except OSError:
        sock.close()
        raise
    return sock


def open_internal(address: Address, socket_buffer: int = 0) -> socket.socket:
    """This worker's transceiver-facing socket; replies come back to its address.

    SO_REUSEPORT lets the loop add one connected socket per next hop on the
    same address (only sockets of the same user may join the group).
    """
    sock = _udp_socket(address, socket_buffer)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind(address)
    except OSError:
        sock.close()
        raise
    return sock


def open_worker_sockets(
    public: Sequence[Address], internal: Address, socket_buffer: int = 0
) -> WorkerSockets:
    """Bind every public address and the internal one; OSError names nothing, callers do."""
    opened: list[socket.socket] = []
    try:
        for address in public:
            opened.append(open_public(address, socket_buffer))
        internal_sock = open_internal(internal, socket_buffer)
        return WorkerSockets(opened, internal_sock, socket_buffer=socket_buffer)
    except OSError:
        for sock in opened:
            sock.close()
        raise


class _Announcer:
    """Sends flow announcements to sibling workers; never blocks, counts failures."""

    def __init__(self, peers: Sequence[socket.socket]) -> None:
        self._sends = [peer.send for peer in peers]
        self.errors = 0

    def send(self, messages: list[bytes]) -> None:
        for message in messages:
            for send in self._sends:
                try:
                    send(message)
                except OSError:
                    self.errors += 1
        messages.clear()


class _HopSenders:
    """One connected socket per next hop, each bound to the worker's internal address.

    ``send`` on a connected socket skips the address parsing and route lookup
    of ``sendto`` (about a tenth of the per-packet cost, measured on loopback).
    Replies from a hop arrive on its connected socket, since the kernel prefers
    the exact 4-tuple in a SO_REUSEPORT group; the loop treats every internal
    socket alike, so a delivery to another one would be harmless.
    """

    def __init__(self, internal: socket.socket, socket_buffer: int, limit: int) -> None:
        self._address: Address = internal.getsockname()
        self._socket_buffer = socket_buffer
        self._limit = limit
        self.sockets: list[socket.socket] = []
        self.sends: dict[Address, Callable[[memoryview], int]] = {}

    def connect(self, hop: Address) -> socket.socket | None:
        """A new connected socket for ``hop``; None past the limit or on error."""
        if len(self.sockets) >= self._limit:
            return None
        try:
            sock = open_internal(self._address, self._socket_buffer)
        except OSError:
            return None
        try:
            sock.connect(hop)
        except OSError:
            sock.close()
            return None
        self.sockets.append(sock)
        self.sends[hop] = sock.send
        return sock

    def close(self) -> None:
        for sock in self.sockets:
            sock.close()
        self.sockets.clear()
        self.sends.clear()


_Send = Callable[[memoryview], int]


class _HopPages:
    """Hop index -> send function, in 256 pages of 256, filled on first use."""

    def __init__(self) -> None:
        self._empty: list[_Send | None] = [None] * 256
        self.pages: list[list[_Send | None]] = [self._empty] * 256

    def set(self, index: int, send: _Send) -> None:
        high, low = divmod(index, 256)
        if self.pages[high] is self._empty:
            self.pages[high] = [None] * 256
        self.pages[high][low] = send

    def clear(self) -> None:
        self.pages[:] = [self._empty] * 256


def forward(
    socks: WorkerSockets,
    router: Router,
    stop_fd: int,
    row: MutableSequence[int] | None = None,
    *,
    tick: float = DEFAULT_TICK,
    drain_limit: int = DEFAULT_DRAIN_LIMIT,
    max_connected_hops: int = DEFAULT_CONNECTED_HOPS,
    clock: Callable[[], float] = time.monotonic,
) -> None:
    """Forward until ``stop_fd`` is readable (a byte written, or EOF when its writer dies).

    ``row`` receives the counters (see ``metrics.Slot``); every ``tick`` seconds
    the flow table is swept for idle flows.
    """
    table = router.table
    drops = router.drops
    buf = bytearray(BUFFER_SIZE)
    view = memoryview(buf)
    # Client datagrams land behind room for the flow, which is then copied in
    # front (one 26-byte copy: hop index + header) and sent from the header on,
    # instead of a concatenation or a sendmsg iovec list.
    behind_flow = view[FLOW_SIZE:]
    flows_by_ingress = table.by_ingress
    public_recv = [sock.recvfrom_into for sock in socks.public]
    public_sendto = [sock.sendto for sock in socks.public]
    internal_recv = [socks.internal.recvfrom_into]
    internal_sendto = socks.internal.sendto
    hops = _HopSenders(socks.internal, socks.socket_buffer, max_connected_hops)
    # Hop index -> send, as pages[high byte][low byte]: two list subscripts
    # with the flow's first two bytes, cheaper per packet than building the
    # index for a dict. Reset when the table reuses indices (hop_epoch).
    hop_pages = _HopPages()
    hop_epoch = table.hop_epoch
    pages = hop_pages.pages
    new_client = router.from_new_client
    from_internal = router.from_internal
    announcements = router.announcements
    announcer = _Announcer(socks.peer_tx)
    peer_rx = socks.peer_rx
    roles: dict[int, tuple[int, int]] = {}
    epoll = select.epoll()
    for index, sock in enumerate(socks.public):
        roles[sock.fileno()] = (_PUBLIC, index)
    roles[socks.internal.fileno()] = (_INTERNAL, 0)
    if peer_rx is not None:
        roles[peer_rx.fileno()] = (_PEER, 0)
    roles[stop_fd] = (_STOP, 0)
    for fd in roles:
        epoll.register(fd, select.EPOLLIN)

    def connect_hop(index: int) -> Callable[[memoryview], int]:
        hop = _hop(table, index)
        send = hops.sends.get(hop)
        if send is None:
            sock = hops.connect(hop)
            if sock is None:
                # Past the limit (or connect failed): unconnected, like any UDP relay.
                def send_unconnected(data: memoryview) -> int:
                    return internal_sendto(data, hop)

                send = hops.sends[hop] = send_unconnected
            else:
                roles[sock.fileno()] = (_INTERNAL, len(internal_recv))
                internal_recv.append(sock.recvfrom_into)
                epoll.register(sock.fileno(), select.EPOLLIN)
                send = sock.send
        hop_pages.set(index, send)
        return send

    to_t_packets = to_t_bytes = to_c_packets = to_c_bytes = 0
    next_tick = clock()
    failures = 0
    try:
        while True:
            events = epoll.poll(tick)
            now = clock()
            slow = False
            if table.hop_epoch != hop_epoch:  # return or peer traffic reused hop indices
                hop_pages.clear()
                hop_epoch = table.hop_epoch
            for fd, _mask in events:
                role, index = roles[fd]
                if role == _PUBLIC:
                    recv = public_recv[index]
                    flows = flows_by_ingress[index]
                    for _ in range(drain_limit):
                        try:
                            n, client = recv(behind_flow)
                        except BlockingIOError:
                            break
                        except OSError:
                            continue
                        flow = flows.get(client)
                        if flow is None:
                            slow = True
                            if peer_rx is not None:
                                # A sibling may have just announced this client (it sent
                                # the announcement before the reply that prompted this packet).
                                _drain_peers(peer_rx, router, now, drain_limit)
                            try:
                                decision = new_client(behind_flow[:n], client, index, now)
                            except Exception:
                                failures = _internal_error(drops, failures)
                                continue
                            if type(decision) is not bytes:
                                continue
                            flow = decision
                            if table.hop_epoch != hop_epoch:
                                hop_pages.clear()
                                hop_epoch = table.hop_epoch
                        buf[:FLOW_SIZE] = flow
                        try:
                            send = pages[flow[0]][flow[1]]
                            if send is None:
                                slow = True
                                send = connect_hop(flow[0] << 8 | flow[1])
                            send(view[HOP_INDEX_SIZE : n + FLOW_SIZE])
                        except OSError:
                            # ENOBUFS, or ECONNREFUSED on a connected socket after an
                            # ICMP unreachable from a hop that went away.
                            drops[Drop.SEND_FAILED] += 1
                            slow = True
                            continue
                        to_t_packets += 1
                        to_t_bytes += n
                elif role == _INTERNAL:
                    recv = internal_recv[index]
                    for _ in range(drain_limit):
                        try:
                            n, source = recv(buf)
                        except BlockingIOError:
                            break
                        except OSError:
                            continue  # a pending ICMP error on a connected socket
                        try:
                            route = from_internal(view[:n], source, now)
                        except Exception:
                            failures = _internal_error(drops, failures)
                            continue
                        if type(route) is not ReturnRoute:
                            slow = True
                            continue
                        if announcements:
                            # Before the reply: the client's answer may hash to a sibling.
                            announcer.send(announcements)
                            slow = True
                        try:
                            public_sendto[route.ingress](view[HEADER_SIZE:n], route.client)
                        except OSError:
                            drops[Drop.SEND_FAILED] += 1
                            slow = True
                            continue
                        to_c_packets += 1
                        to_c_bytes += n - HEADER_SIZE
                elif role == _PEER:
                    assert peer_rx is not None
                    _drain_peers(peer_rx, router, now, drain_limit)
                    slow = True
                else:
                    return
            if now >= next_tick:
                table.sweep(now)
                next_tick = now + tick
                slow = True
            if row is not None:
                row[Slot.TO_TRANSCEIVER_PACKETS] = to_t_packets
                row[Slot.TO_TRANSCEIVER_BYTES] = to_t_bytes
                row[Slot.TO_CLIENT_PACKETS] = to_c_packets
                row[Slot.TO_CLIENT_BYTES] = to_c_bytes
                if slow:
                    publish_router(row, router, announcer.errors)
    finally:
        epoll.close()
        hops.close()


def _hop(table: FlowTable, index: int) -> Address:
    hop = table.hops[index]
    assert hop is not None, "a live flow names a freed hop index"
    return hop


def _drain_peers(peer_rx: socket.socket, router: Router, now: float, limit: int) -> None:
    for _ in range(limit):
        try:
            message = peer_rx.recv(_PEER_MESSAGE_MAX)
        except BlockingIOError:
            return
        router.learn_from_peer(message, now)


def _internal_error(drops: list[int], failures: int) -> int:
    # A bug, not bad input (the router drops that): keep the worker alive,
    # count it, and say so once rather than per packet.
    drops[Drop.INTERNAL_ERROR] += 1
    if failures == 0:
        log.exception("relay worker %d: unexpected error routing a datagram", os.getpid())
    return failures + 1
