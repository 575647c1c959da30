"""A relay worker: its sockets and the forwarding loop.

``forward`` is the whole data plane of one worker and needs nothing but bound
sockets, a Router and a stop fd, so a benchmark can run it in-process. The
loop waits in epoll and then drains each ready socket (bounded per wake-up so
no socket starves the others) into one preallocated buffer of slots:

- batched (default, Linux): one ``recvmmsg`` takes whatever is queued, up to a
  batch, without waiting for more (MSG_DONTWAIT); each datagram's flow is
  found by the client key read straight from the kernel's address buffer; the
  batch goes out with one ``sendmmsg`` per run of datagrams to the same
  destination (next hop, or public socket on the way back).
- one datagram per call (``batch=1``): ``recvfrom_into`` and ``send``/``sendto``.

Client -> transceiver: a datagram lands behind room for its flow (hop index +
header); the flow's 26 bytes are copied in front and header + payload leave
from byte 2 on the hop's connected socket. Transceiver -> client: the payload
leaves from behind the header, to the client's address. Counters are local,
written to the shared-memory row once per wake-up.
"""

from __future__ import annotations

import ctypes
import errno
import logging
import os
import select
import socket
import struct
import time
from collections.abc import Callable, MutableSequence, Sequence
from dataclasses import dataclass, field

from talkwire.encap import HEADER_SIZE, with_ingress
from talkwire.keyring_watch import KeyringWatch
from talkwire.relay import mmsg
from talkwire.relay.flows import (
    FLOW_SIZE,
    HOP_INDEX_SIZE,
    SOCKADDR_SIZE,
    Address,
    Flow,
    client_key,
    key_address,
    key_sockaddr,
)
from talkwire.relay.metrics import Slot, publish_router
from talkwire.relay.router import STUN_FIRST_BYTE_END, Drop, ReturnRoute, Router

log = logging.getLogger(__name__)

# Room for the flow (hop index + header) plus any UDP payload: never truncated.
BUFFER_SIZE = FLOW_SIZE + 65536
SLOT_SIZE = (BUFFER_SIZE + 63) // 64 * 64
DEFAULT_TICK = 0.25
DEFAULT_DRAIN_LIMIT = 512
# Datagrams per recvmmsg/sendmmsg; 1 = recvfrom_into/send per datagram. Read
# when forward() is called without ``batch``.
DEFAULT_BATCH = 64
MAX_BATCH = 1024
# Next hops are transceivers and cluster ingresses: few. Past this, sendto.
DEFAULT_CONNECTED_HOPS = 1024
_PEER_MESSAGE_MAX = 128
_PUBLIC, _INTERNAL, _PEER, _STOP, _BACKBONE = range(5)


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
    # Clients forwarded by global relays arrive here (``--backbone``).
    backbone: socket.socket | None = None

    def close(self) -> None:
        backbone = (self.backbone,) if self.backbone is not None else ()
        for sock in (*self.public, self.internal, *self.peer_tx, *backbone):
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
    public: Sequence[Address],
    internal: Address,
    socket_buffer: int = 0,
    backbone: Address | None = None,
) -> WorkerSockets:
    """Bind every public address, the internal one and the backbone one if any;
    OSError names nothing, callers do."""
    opened: list[socket.socket] = []
    try:
        for address in public:
            opened.append(open_public(address, socket_buffer))
        internal_sock = open_internal(internal, socket_buffer)
        opened.append(internal_sock)
        backbone_sock = open_public(backbone, socket_buffer) if backbone is not None else None
        return WorkerSockets(
            opened[:-1], internal_sock, socket_buffer=socket_buffer, backbone=backbone_sock
        )
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


class _HopOut:
    """Where datagrams for one next hop go: a connected socket, or (past the
    limit, or if connecting failed) ``sendto`` on the internal socket."""

    __slots__ = ("address", "fd", "send")

    def __init__(self, address: Address, fd: int, send: Callable[[memoryview], int]) -> None:
        self.address = address
        self.fd = fd  # -1: not connected
        self.send = send


_EMPTY_PAGE: list[_HopOut | None] = [None] * 256


class _Hops:
    """One connected socket per next hop, each bound to the worker's internal address.

    ``send`` on a connected socket skips the address parsing and route lookup
    of ``sendto`` (about a tenth of the per-packet cost, measured on loopback).
    Replies from a hop arrive on its connected socket, since the kernel prefers
    the exact 4-tuple in a SO_REUSEPORT group, so on that socket the source is
    known without reading it.

    ``pages[high][low]`` maps a flow's hop index (its first two bytes) to the
    hop's ``_HopOut``: two list subscripts per datagram, cheaper than building
    an int key. Reset when the table reuses hop indices (``hop_epoch``).
    """

    def __init__(self, internal: socket.socket, socket_buffer: int, limit: int) -> None:
        self._internal = internal
        self._address: Address = internal.getsockname()
        self._socket_buffer = socket_buffer
        self._limit = limit
        self.sockets: list[socket.socket] = []
        self.outs: dict[Address, _HopOut] = {}
        self.pages: list[list[_HopOut | None]] = [_EMPTY_PAGE] * 256

    def out(self, address: Address) -> tuple[_HopOut, socket.socket | None]:
        """The hop's output, and its socket if one was connected just now."""
        out = self.outs.get(address)
        if out is not None:
            return out, None
        sock = self._connect(address)
        if sock is None:
            sendto = self._internal.sendto

            def send_unconnected(data: memoryview) -> int:
                return sendto(data, address)

            out = _HopOut(address, -1, send_unconnected)
        else:
            out = _HopOut(address, sock.fileno(), sock.send)
        self.outs[address] = out
        return out, sock

    def _connect(self, hop: Address) -> socket.socket | None:
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
        return sock

    def set_page(self, index: int, out: _HopOut) -> None:
        high, low = divmod(index, 256)
        if self.pages[high] is _EMPTY_PAGE:
            self.pages[high] = [None] * 256
        self.pages[high][low] = out

    def clear_pages(self) -> None:
        self.pages[:] = [_EMPTY_PAGE] * 256

    def close(self) -> None:
        for sock in self.sockets:
            sock.close()
        self.sockets.clear()
        self.outs.clear()


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
    batch: int | None = None,
    keys: KeyringWatch | None = None,
) -> None:
    """Forward until ``stop_fd`` is readable (a byte written, or EOF when its writer dies).

    ``row`` receives the counters (see ``metrics.Slot``); every ``tick`` seconds
    the flow table is swept for idle flows. ``batch``: datagrams per system
    call (default ``DEFAULT_BATCH``); 1, or a platform without recvmmsg, means
    one ``recvfrom_into``/``send`` per datagram. ``keys``, polled on the same
    tick, hands the router each new keyring (a rotation, or a grace that ended).
    """
    size = DEFAULT_BATCH if batch is None else batch
    if not 1 <= size <= MAX_BATCH:
        raise ValueError(f"batch must be in 1..{MAX_BATCH}")
    loop = _Loop(socks, router, stop_fd, row, tick, drain_limit, max_connected_hops, clock, keys)
    try:
        loop.run(size if mmsg.AVAILABLE else 1)
    finally:
        loop.close()


_V4_KEY = struct.Struct("!H4s")
_DONTWAIT = mmsg.MSG_DONTWAIT
_NO_ROUTE = ReturnRoute(0, ("", 0))
_AGAIN = (errno.EAGAIN, errno.EWOULDBLOCK)
# The socket's buffer is full: the rest of a batch would fail the same way.
_FULL = (errno.EAGAIN, errno.EWOULDBLOCK, errno.ENOBUFS)


class _Loop:
    """One worker's forwarding state. Hot paths bind what they use to locals."""

    def __init__(
        self,
        socks: WorkerSockets,
        router: Router,
        stop_fd: int,
        row: MutableSequence[int] | None,
        tick: float,
        drain_limit: int,
        max_connected_hops: int,
        clock: Callable[[], float],
        keys: KeyringWatch | None,
    ) -> None:
        self.socks = socks
        self.router = router
        self.table = router.table
        self.drops = router.drops
        self.row = row
        self.tick = tick
        self.drain_limit = drain_limit
        self.clock = clock
        self.stop_fd = stop_fd
        self.hops = _Hops(socks.internal, socks.socket_buffer, max_connected_hops)
        self.hop_epoch = self.table.hop_epoch
        self.announcer = _Announcer(socks.peer_tx)
        self.peer_rx = socks.peer_rx
        self.public_families = [sock.family for sock in socks.public]
        # Internal sockets: the bound one (any source), then one per connected
        # hop (source known: the hop).
        self.internal: list[tuple[socket.socket, Address | None]] = [(socks.internal, None)]
        self.internal_family = socks.internal.family
        self.roles: dict[int, tuple[int, int]] = {}
        self.epoll = select.epoll()
        for index, sock in enumerate(socks.public):
            self.roles[sock.fileno()] = (_PUBLIC, index)
        self.roles[socks.internal.fileno()] = (_INTERNAL, 0)
        if self.peer_rx is not None:
            self.roles[self.peer_rx.fileno()] = (_PEER, 0)
        self.public_count = len(socks.public)
        if socks.backbone is not None:
            self.roles[socks.backbone.fileno()] = (_BACKBONE, 0)
            self.backbone_buf = bytearray(BUFFER_SIZE)
            self.backbone_view = memoryview(self.backbone_buf)
        self.roles[stop_fd] = (_STOP, 0)
        for fd in self.roles:
            self.epoll.register(fd, select.EPOLLIN)
        self.now = 0.0
        self.slow = False
        self.failures = 0
        self.to_t_packets = self.to_t_bytes = self.to_c_packets = self.to_c_bytes = 0
        # Sources seen on the bound internal socket, by sockaddr key (batched).
        self.sources: dict[bytes, Address] = {}
        self.keys = keys

    def close(self) -> None:
        self.epoll.close()
        self.hops.close()

    def run(self, batch: int) -> None:
        public, internal = self.prepare(batch)
        table = self.table
        router = self.router
        roles = self.roles
        row = self.row
        next_tick = self.clock()
        while True:
            events = self.epoll.poll(self.tick)
            now = self.now = self.clock()
            self.slow = False
            if table.hop_epoch != self.hop_epoch:
                self._check_hop_epoch()
            for fd, _mask in events:
                role, index = roles[fd]
                if role == _PUBLIC:
                    public(index)
                elif role == _INTERNAL:
                    internal(index)
                elif role == _PEER:
                    self._drain_peers()
                    self.slow = True
                elif role == _BACKBONE:
                    self._from_backbone()
                else:
                    return
            if now >= next_tick:
                table.sweep(now)
                next_tick = now + self.tick
                self.slow = True
                if self.keys is not None and self.keys.poll(now):
                    router.set_keyring(self.keys.keyring)
            if row is not None:
                row[Slot.TO_TRANSCEIVER_PACKETS] = self.to_t_packets
                row[Slot.TO_TRANSCEIVER_BYTES] = self.to_t_bytes
                row[Slot.TO_CLIENT_PACKETS] = self.to_c_packets
                row[Slot.TO_CLIENT_BYTES] = self.to_c_bytes
                if self.slow:
                    publish_router(row, router, self.announcer.errors, self.keys)

    def prepare(self, batch: int) -> tuple[Callable[[int], None], Callable[[int], None]]:
        """Allocate the buffers; returns the (public, internal) socket drains."""
        if batch > 1:
            self.batch = mmsg.Batch(batch, SLOT_SIZE)
            b = self.batch
            self.public_rx = {
                family: b.receiver(FLOW_SIZE, _sockaddr_size(family))
                for family in set(self.public_families)
            }
            self.internal_rx = b.receiver(0, _sockaddr_size(self.internal_family))
            self.to_hop = b.sender(HOP_INDEX_SIZE, addressed=False)
            self.to_client = b.sender(HEADER_SIZE, addressed=True)
            self.to_hop_entries = self.to_hop.entries
            self.to_client_entries = self.to_client.entries
            self.sendmmsg = b.sendmmsg
            self.public_sendto = [sock.sendto for sock in self.socks.public]
            self.public_fds = [sock.fileno() for sock in self.socks.public]
            self.to_hop_words = self.to_hop.iov_words
            self.to_client_words = self.to_client.iov_words
            rx = self.internal_rx
            self.internal_io = (
                rx.entries[0],
                rx.keys,
                rx.lengths,
                b.slice_reader(0, HEADER_SIZE),
            )
            # What every drain call needs, bound once: (count, slot size,
            # buffer, recvmmsg, receives per wake-up) and per public socket
            # (fd, first rx entry, key reader, length reader).
            rounds = -(-self.drain_limit // batch)
            self.batch_setup = (b.count, b.slot, b.buffer, b.recvmmsg, rounds)
            self.public_io = []
            for sock, family in zip(self.socks.public, self.public_families, strict=True):
                rx = self.public_rx[family]
                self.public_io.append((sock.fileno(), rx.entries[0], rx.keys, rx.lengths))
            public, internal = self._public_batch, self._internal_batch
        else:
            self.buf = bytearray(BUFFER_SIZE)
            self.view = memoryview(self.buf)
            self.behind_flow = self.view[FLOW_SIZE:]
            self.public_sendto = [sock.sendto for sock in self.socks.public]
            self.one_io = [
                (sock.recvfrom_into, family == socket.AF_INET)
                for sock, family in zip(self.socks.public, self.public_families, strict=True)
            ]
            public, internal = self._public_one, self._internal_one
        return public, internal

    # -- shared slow paths ---------------------------------------------------

    def _check_hop_epoch(self) -> None:
        if self.table.hop_epoch != self.hop_epoch:  # the table reused hop indices
            self.hops.clear_pages()
            self.hop_epoch = self.table.hop_epoch

    def _hop_out(self, flow: Flow) -> _HopOut:
        """The output for a flow's hop, connecting a socket on first use."""
        self.slow = True
        index = flow[0] << 8 | flow[1]
        address = self.table.hops[index]
        assert address is not None, "a live flow names a freed hop index"
        out, sock = self.hops.out(address)
        if sock is not None:
            self.roles[sock.fileno()] = (_INTERNAL, len(self.internal))
            self.internal.append((sock, address))
            self.epoll.register(sock.fileno(), select.EPOLLIN)
        self.hops.set_page(index, out)
        return out

    def _known_stun(self, data: memoryview, client: Address, ingress: int, flow: Flow) -> Flow:
        """A consent check, or a new call from a reused client address (the router decides)."""
        self.slow = True
        try:
            moved = self.router.from_known_stun(data, client, ingress, flow, self.now)
        except Exception:
            self._internal_error()
            return flow
        if moved is not flow:
            # A new hop may have compacted the hop indices: refresh the pages now.
            self._check_hop_epoch()
        return moved

    def _new_client(
        self, data: memoryview, key: bytes | None, client: Address | None, ingress: int
    ) -> Flow | None:
        """A client not in the current generation: a sibling's, an idle one, or new."""
        self.slow = True
        if self.peer_rx is not None:
            # A sibling may have just announced this client (it sent the
            # announcement before the reply that prompted this packet).
            self._drain_peers()
        try:
            if key is not None:
                flow = self.table.get_key(key, ingress)
                if flow is not None:
                    return flow
                client = key_address(key)
            assert client is not None
            decision = self.router.from_new_client(data, client, ingress, self.now)
        except Exception:
            self._internal_error()
            return None
        self._check_hop_epoch()
        return decision if type(decision) is bytes else None

    def _route_back(self, data: memoryview, source: Address) -> ReturnRoute | None:
        """The router's full return path; announcements leave before the reply."""
        self.slow = True
        try:
            route = self.router.from_internal(data, source, self.now)
        except Exception:
            self._internal_error()
            return None
        self._check_hop_epoch()
        if type(route) is not ReturnRoute:
            return None
        if self.router.announcements:
            # Before the reply: the client's answer may hash to a sibling.
            self.announcer.send(self.router.announcements)
        return route

    def _drain_peers(self) -> None:
        assert self.peer_rx is not None
        recv = self.peer_rx.recv
        for _ in range(self.drain_limit):
            try:
                message = recv(_PEER_MESSAGE_MAX)
            except BlockingIOError:
                return
            self.router.learn_from_peer(message, self.now)

    def _from_backbone(self) -> None:
        """Clients a global relay forwards, encapsulated. Few next to the public
        sockets' clients, so one datagram per call, all of it the slow path."""
        assert self.socks.backbone is not None
        self.slow = True
        buf, view = self.backbone_buf, self.backbone_view
        # The datagram lands where the flow goes: its 24-byte header is then
        # overwritten with the flow's own, in place.
        into = view[HOP_INDEX_SIZE:]
        recv = self.socks.backbone.recvfrom_into
        for _ in range(self.drain_limit):
            try:
                n, source = recv(into)
            except BlockingIOError:
                break
            except OSError:
                continue
            try:
                decision = self.router.from_backbone(into[:n], source, self.now)
            except Exception:
                self._internal_error()
                continue
            self._check_hop_epoch()
            if isinstance(decision, Drop):
                continue
            flow = decision[0]
            buf[:FLOW_SIZE] = flow
            out = self.hops.pages[flow[0]][flow[1]]
            if out is None:
                out = self._hop_out(flow)
            try:
                out.send(view[HOP_INDEX_SIZE : HOP_INDEX_SIZE + n])
            except OSError:
                self.drops[Drop.SEND_FAILED] += 1
                continue
            self.to_t_packets += 1
            self.to_t_bytes += n - HEADER_SIZE

    def _to_backbone(self, datagram: memoryview, route: ReturnRoute) -> None:
        """A reply for a client a global relay forwarded: back to that relay,
        the header naming its own public socket (it sends the payload on)."""
        self.slow = True
        assert self.socks.backbone is not None
        peer, socket_index = self.router.backbone_route(route.ingress)
        try:
            self.socks.backbone.sendto(with_ingress(datagram, socket_index), peer)
        except OSError:
            self.drops[Drop.SEND_FAILED] += 1
            return
        self.to_c_packets += 1
        self.to_c_bytes += len(datagram) - HEADER_SIZE

    def _internal_error(self) -> None:
        # A bug, not bad input (the router drops that): keep the worker alive,
        # count it, and say so once rather than per packet.
        self.drops[Drop.INTERNAL_ERROR] += 1
        if self.failures == 0:
            log.exception("relay worker %d: unexpected error routing a datagram", os.getpid())
        self.failures += 1

    # -- one datagram per call ------------------------------------------------

    def _public_one(self, index: int) -> None:
        buf = self.buf
        view = self.view
        behind_flow = self.behind_flow
        recv, v4 = self.one_io[index]
        flows = self.table.by_ingress[index]
        pages = self.hops.pages
        pack_v4 = _V4_KEY.pack
        aton = socket.inet_aton
        packets = octets = 0
        for _ in range(self.drain_limit):
            try:
                n, client = recv(behind_flow)
            except BlockingIOError:
                break
            except OSError:
                continue
            flow = flows.get(pack_v4(client[1], aton(client[0])) if v4 else client_key(client))
            if flow is None:
                flow = self._new_client(behind_flow[:n], None, client, index)
                if flow is None:
                    continue
            elif behind_flow[0] < STUN_FIRST_BYTE_END:
                flow = self._known_stun(behind_flow[:n], client, index, flow)
            buf[:FLOW_SIZE] = flow
            out = pages[flow[0]][flow[1]]
            if out is None:
                out = self._hop_out(flow)
            try:
                out.send(view[HOP_INDEX_SIZE : n + FLOW_SIZE])
            except OSError:
                # ENOBUFS, or ECONNREFUSED on a connected socket after an ICMP
                # unreachable from a hop that went away.
                self.drops[Drop.SEND_FAILED] += 1
                self.slow = True
                continue
            packets += 1
            octets += n
        self.to_t_packets += packets
        self.to_t_bytes += octets

    def _internal_one(self, index: int) -> None:
        buf = self.buf
        view = self.view
        recv = self.internal[index][0].recvfrom_into
        public_sendto = self.public_sendto
        from_internal = self.router.from_internal
        packets = octets = 0
        for _ in range(self.drain_limit):
            try:
                n, source = recv(buf)
            except BlockingIOError:
                break
            except OSError:
                continue  # a pending ICMP error on a connected socket
            try:
                route = from_internal(view[:n], source, self.now)
            except Exception:
                self._internal_error()
                continue
            if type(route) is not ReturnRoute:
                self.slow = True
                continue
            if self.router.announcements:
                self.announcer.send(self.router.announcements)
                self.slow = True
            if route.ingress >= self.public_count:
                self._to_backbone(view[:n], route)
                continue
            try:
                public_sendto[route.ingress](view[HEADER_SIZE:n], route.client)
            except OSError:
                self.drops[Drop.SEND_FAILED] += 1
                self.slow = True
                continue
            packets += 1
            octets += n - HEADER_SIZE
        self.to_c_packets += packets
        self.to_c_bytes += octets

    # -- batched ---------------------------------------------------------------

    def _public_batch(self, index: int) -> None:
        count, slot, buffer, recvmmsg, rounds = self.batch_setup
        fd, rx_at, keys_of, lengths_of = self.public_io[index]
        flows = self.table.by_ingress[index]
        pages = self.hops.pages
        tx_words = self.to_hop_words
        flush = self._flush_to_hops
        for _ in range(rounds):
            n = recvmmsg(fd, rx_at, count, _DONTWAIT, None)
            if n <= 0:
                if n < 0 and self.batch.errno() not in _AGAIN:
                    continue  # a pending error (ICMP), now consumed
                return
            keys = keys_of(n)
            lengths = lengths_of(n)
            run: _HopOut | None = None
            start = 0
            for i in range(n):
                flow = flows.get(keys[i])
                if flow is None:
                    at = i * slot + FLOW_SIZE
                    flow = self._new_client(buffer[at : at + lengths[i]], keys[i], None, index)
                    if flow is None:
                        if run is not None:
                            flush(run, start, i, lengths)
                            run = None
                        continue
                elif buffer[i * slot + FLOW_SIZE] < STUN_FIRST_BYTE_END:
                    at = i * slot + FLOW_SIZE
                    client = key_address(keys[i])
                    flow = self._known_stun(buffer[at : at + lengths[i]], client, index, flow)
                at = i * slot
                buffer[at : at + FLOW_SIZE] = flow
                tx_words[2 * i + 1] = lengths[i] + HEADER_SIZE
                out = pages[flow[0]][flow[1]]
                if out is None:
                    out = self._hop_out(flow)
                if out is not run:
                    if run is not None:
                        flush(run, start, i, lengths)
                    run = out
                    start = i
            if run is not None:
                flush(run, start, n, lengths)
            if n < count:
                return  # drained: no extra call just to hear EAGAIN

    def _flush_to_hops(self, out: _HopOut, start: int, end: int, lengths: tuple[int, ...]) -> None:
        if end - start == 1 and out.fd >= 0:
            # One datagram: send is cheaper than a sendmmsg of one (~2 us here).
            at = start * self.batch.slot + HOP_INDEX_SIZE
            try:
                out.send(self.batch.buffer[at : at + HEADER_SIZE + lengths[start]])
            except OSError:
                self.drops[Drop.SEND_FAILED] += 1
                self.slow = True
                return
            self.to_t_packets += 1
            self.to_t_bytes += lengths[start]
            return
        if out.fd >= 0:
            m = self.sendmmsg(out.fd, self.to_hop_entries[start], end - start, 0)
            if m == end - start:
                self.to_t_packets += m
                self.to_t_bytes += sum(lengths[start:end])
                return
            sent, octets = self._send_rest(out.fd, self.to_hop_entries, start, end, lengths, m)
        else:
            sent = octets = 0
            buffer = self.batch.buffer
            for i in range(start, end):
                at = i * self.batch.slot + HOP_INDEX_SIZE
                try:
                    out.send(buffer[at : at + HEADER_SIZE + lengths[i]])
                except OSError:
                    self.drops[Drop.SEND_FAILED] += 1
                    continue
                sent += 1
                octets += lengths[i]
        self.to_t_packets += sent
        self.to_t_bytes += octets

    def _send_rest(
        self,
        fd: int,
        entries: list[ctypes.c_void_p],
        start: int,
        end: int,
        lengths: tuple[int, ...],
        m: int,
    ) -> tuple[int, int]:
        """After ``sendmmsg`` of entries [start, end) returned ``m`` short: finish.

        Returns (datagrams sent, their received sizes). The kernel stops at the
        first datagram it refuses: that one counts as ``send_failed`` and the
        rest are tried again, unless the socket buffer is full (they would
        fail alike; all count as dropped).
        """
        sendmmsg = self.sendmmsg
        sent = octets = 0
        i = start
        while True:
            if m > 0:
                octets += sum(lengths[i : i + m])
                sent += m
                i += m
            else:
                self.slow = True
                if self.batch.errno() in _FULL:
                    self.drops[Drop.SEND_FAILED] += end - i
                    break
                self.drops[Drop.SEND_FAILED] += 1
                i += 1
            if i >= end:
                break
            m = sendmmsg(fd, entries[i], end - i, 0)
        return sent, octets

    def _internal_batch(self, index: int) -> None:
        count, slot, buffer, recvmmsg, rounds = self.batch_setup
        rx_at, keys_of, lengths_of, headers_of = self.internal_io
        sock, hop = self.internal[index]
        fd = sock.fileno()
        known: Address = hop if hop is not None else ("", 0)
        cache = self.router.return_cache
        flows_by_ingress = self.table.by_ingress
        names = self.batch.tx_names_view
        tx_words = self.to_client_words
        flush = self._flush_to_clients
        public_count = self.public_count
        for _ in range(rounds):
            n = recvmmsg(fd, rx_at, count, _DONTWAIT, None)
            if n <= 0:
                if n < 0 and self.batch.errno() not in _AGAIN:
                    continue  # a pending ICMP error on a connected socket, now consumed
                return
            lengths = lengths_of(n)
            headers = headers_of(n)
            sources = None if hop is not None else keys_of(n)
            run = -1
            start = 0
            first = _NO_ROUTE  # the route of the run's first datagram
            for i in range(n):
                length = lengths[i]
                source = known if sources is None else self._source(sources[i])
                cached = cache.get(headers[i]) if length >= HEADER_SIZE else None
                if cached is not None:
                    ingress, key, flow, cached_source, sockaddr, route = cached
                    if cached_source != source or flows_by_ingress[ingress].get(key) is not flow:
                        cached = None
                if cached is None:
                    at = i * slot
                    found = self._route_back(buffer[at : at + length], source)
                    if found is None:
                        if run >= 0:
                            flush(run, start, i, lengths, first)
                            run = -1
                        continue
                    route = found
                    ingress = route.ingress
                    sockaddr = key_sockaddr(client_key(route.client))
                if ingress >= public_count:  # through a global relay: not a public socket
                    if run >= 0:
                        flush(run, start, i, lengths, first)
                        run = -1
                    at = i * slot
                    self._to_backbone(buffer[at : at + length], route)
                    continue
                at = i * SOCKADDR_SIZE
                names[at : at + SOCKADDR_SIZE] = sockaddr
                tx_words[2 * i + 1] = length - HEADER_SIZE
                if ingress != run:
                    if run >= 0:
                        flush(run, start, i, lengths, first)
                    run = ingress
                    start = i
                    first = route
            if run >= 0:
                flush(run, start, n, lengths, first)
            if n < count:
                return

    def _flush_to_clients(
        self, ingress: int, start: int, end: int, lengths: tuple[int, ...], first: ReturnRoute
    ) -> None:
        if end - start == 1:
            # One datagram: sendto is cheaper than a sendmmsg of one.
            at = start * self.batch.slot + HEADER_SIZE
            try:
                self.public_sendto[ingress](
                    self.batch.buffer[at : at - HEADER_SIZE + lengths[start]], first.client
                )
            except OSError:
                self.drops[Drop.SEND_FAILED] += 1
                self.slow = True
                return
            self.to_c_packets += 1
            self.to_c_bytes += lengths[start] - HEADER_SIZE
            return
        fd = self.public_fds[ingress]
        entries = self.to_client_entries
        m = self.sendmmsg(fd, entries[start], end - start, 0)
        if m == end - start:
            sent, octets = m, sum(lengths[start:end])
        else:
            sent, octets = self._send_rest(fd, entries, start, end, lengths, m)
        self.to_c_packets += sent
        self.to_c_bytes += octets - HEADER_SIZE * sent

    def _source(self, key: bytes) -> Address:
        """A source on the bound internal socket as recvfrom would name it (cached)."""
        source = self.sources.get(key)
        if source is None:
            if len(self.sources) >= _SOURCE_CACHE_SIZE:
                self.sources.clear()
            source = self.sources[key] = key_address(key)
        return source


# Bounded: sources on the internal port are transceivers, but anyone may send.
_SOURCE_CACHE_SIZE = 4096


def _sockaddr_size(family: int) -> int:
    return mmsg.SOCKADDR_IPV4 if family == socket.AF_INET else SOCKADDR_SIZE
