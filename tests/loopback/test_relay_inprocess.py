"""The forwarding loop called in-process, as a benchmark does: sockets, router, stop fd.

Every test runs both loops: batched (recvmmsg/sendmmsg) and one datagram per
call. Bursts are queued on the sockets *before* the loop starts, with flows
made through the router beforehand, so the batched loop's first receive
takes the whole burst: grouping per destination, drops in the middle of a
batch and send failures are then exercised deterministically.
"""

from __future__ import annotations

import ipaddress
import os
import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import pytest

from talkwire import route_token
from talkwire.encap import HEADER_SIZE, pack_header, unpack_header
from talkwire.relay import mmsg
from talkwire.relay.flows import FlowTable
from talkwire.relay.metrics import SLOTS, Slot
from talkwire.relay.router import LOOPBACK, Drop, Network, Router, RouterSettings
from talkwire.relay.workers import WorkerSockets, forward, open_worker_sockets

Udp = Callable[..., socket.socket]
BATCHES = [pytest.param(1, id="one-per-call"), pytest.param(64, id="batched")]
DTLS = bytes([23, 0xFE, 0xFD]) + bytes(20)


@contextmanager
def running(
    socks: WorkerSockets, router: Router, batch: int, **options: int
) -> Iterator[list[int]]:
    """The loop in a thread until the block ends; yields its counter row."""
    row = [0] * SLOTS
    stop_r, stop_w = os.pipe()
    thread = threading.Thread(
        target=forward,
        args=(socks, router, stop_r, row),
        kwargs={"batch": batch, **options},
        daemon=True,
    )
    thread.start()
    try:
        yield row
    finally:
        os.write(stop_w, b"x")
        thread.join(10)
        os.close(stop_r)
        os.close(stop_w)
        socks.close()
    assert not thread.is_alive()


def wait_for(predicate: Callable[[], bool], timeout: float = 10.0) -> None:
    """Poll (bounded) a counter the loop publishes once per wake-up."""
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "the loop never got there"
        time.sleep(0.01)


def make_router(
    families: tuple[int, ...] = (4,), trusted: tuple[Network, ...] = LOOPBACK
) -> Router:
    keyring = route_token.Keyring.generate()
    settings = RouterSettings(
        keyring=keyring, cluster=0, ingress_families=families, trusted=trusted
    )
    return Router(settings, FlowTable(len(families)))


def open_flow(
    router: Router,
    stun: Callable[..., bytes],
    client: socket.socket,
    hop: socket.socket,
    ingress: int = 0,
) -> None:
    """The flow a first STUN would make, made through the router directly."""
    ufrag = route_token.mint(router.settings.keyring, 0, hop.getsockname()[:2])
    flow = router.from_public(stun(ufrag), client.getsockname(), ingress, 0.0)
    assert isinstance(flow, bytes)


def received(sock: socket.socket, count: int) -> list[tuple[bytes, object]]:
    return [sock.recvfrom(65536) for _ in range(count)]


@pytest.mark.parametrize("batch", BATCHES)
def test_forward_in_a_thread_and_stop(
    batch: int, relay_udp: Udp, relay_stun: Callable[..., bytes]
) -> None:
    router = make_router()
    socks = open_worker_sockets([("127.0.0.1", 0)], ("127.0.0.1", 0))
    public = socks.public[0].getsockname()
    with running(socks, router, batch) as row:
        transceiver = relay_udp()
        client = relay_udp()
        request = relay_stun(
            route_token.mint(router.settings.keyring, 0, transceiver.getsockname())
        )
        client.sendto(request, public)
        data, relay_internal = transceiver.recvfrom(65536)
        assert unpack_header(data).client == client.getsockname()
        assert data[HEADER_SIZE:] == request
        assert relay_internal == socks.internal.getsockname()
        transceiver.sendto(pack_header(client.getsockname(), 0) + b"back", relay_internal)
        assert client.recvfrom(65536) == (b"back", public)
        wait_for(lambda: row[Slot.TO_CLIENT_PACKETS] == 1)
    assert row[Slot.TO_TRANSCEIVER_PACKETS] == 1 and row[Slot.TO_CLIENT_PACKETS] == 1
    assert row[Slot.TO_TRANSCEIVER_BYTES] == len(request) and row[Slot.TO_CLIENT_BYTES] == 4


@pytest.mark.parametrize("batch", BATCHES)
def test_a_burst_goes_to_each_clients_hop_in_order_and_strangers_are_dropped(
    batch: int, relay_udp: Udp, relay_stun: Callable[..., bytes]
) -> None:
    router = make_router()
    socks = open_worker_sockets([("127.0.0.1", 0)], ("127.0.0.1", 0))
    public = socks.public[0].getsockname()
    hops = [relay_udp(), relay_udp()]
    clients = [relay_udp() for _ in range(4)]
    for i, client in enumerate(clients):
        open_flow(router, relay_stun, client, hops[i % 2])
    stranger = relay_udp()
    # Runs of one hop, alternations, and a drop in the middle of the batch.
    order = [0, 2, 1, 3, 3, 0, 1, 2, 2, 0]
    for n, i in enumerate(order):
        if n == 4:
            stranger.sendto(DTLS, public)
        clients[i].sendto(b"%d from %d" % (n, i), public)
    with running(socks, router, batch) as row:
        for h, hop in enumerate(hops):
            wanted = [(n, i) for n, i in enumerate(order) if i % 2 == h]
            got = [unpack_header(data) for data, _ in received(hop, len(wanted))]
            assert [header.client for header in got] == [
                clients[i].getsockname() for _, i in wanted
            ]
        for hop in hops:
            hop.settimeout(0.2)
            with pytest.raises(TimeoutError):
                hop.recvfrom(65536)
        wait_for(lambda: row[Slot.TO_TRANSCEIVER_PACKETS] == len(order))
    assert router.drops[Drop.NOT_STUN] == 1 and sum(router.drops) == 1
    assert row[Slot.TO_TRANSCEIVER_BYTES] == sum(
        len(b"%d from %d" % (n, i)) for n, i in enumerate(order)
    )


@pytest.mark.parametrize("batch", BATCHES)
def test_payloads_arrive_intact_behind_their_own_header(
    batch: int, relay_udp: Udp, relay_stun: Callable[..., bytes]
) -> None:
    router = make_router()
    socks = open_worker_sockets([("127.0.0.1", 0)], ("127.0.0.1", 0))
    public = socks.public[0].getsockname()
    hop = relay_udp()
    hop.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
    client = relay_udp()
    open_flow(router, relay_stun, client, hop)
    payloads = [bytes([i]) * size for i, size in enumerate([1, 1200, 60000, 3])]
    for payload in payloads:
        client.sendto(payload, public)
    with running(socks, router, batch):
        for payload in payloads:
            data, _ = hop.recvfrom(65536)
            assert data[:HEADER_SIZE] == pack_header(client.getsockname(), 0)
            assert data[HEADER_SIZE:] == payload


@pytest.mark.parametrize("batch", BATCHES)
def test_return_burst_to_v4_and_v6_clients_with_drops_in_between(
    batch: int, relay_udp: Udp, relay_stun: Callable[..., bytes]
) -> None:
    router = make_router(families=(4, 6), trusted=(ipaddress.ip_network("127.0.0.1/32"),))
    socks = open_worker_sockets([("127.0.0.1", 0), ("::1", 0)], ("127.0.0.1", 0))
    internal = socks.internal.getsockname()
    transceiver = relay_udp()
    untrusted = relay_udp("127.0.0.2")
    clients = [relay_udp(), relay_udp("::1"), relay_udp(), relay_udp("::1")]
    ingress = [0, 1, 0, 1]
    order = [0, 1, 1, 2, 3, 0, 2, 3]
    for n, i in enumerate(order):
        if n == 3:
            untrusted.sendto(pack_header(clients[0].getsockname(), 0) + b"forged", internal)
        if n == 5:
            transceiver.sendto(b"TW\x01", internal)  # shorter than a header
        header = pack_header(clients[i].getsockname(), ingress[i])
        transceiver.sendto(header + b"%d to %d" % (n, i), internal)
    with running(socks, router, batch) as row:
        for i, client in enumerate(clients):
            want = [b"%d to %d" % (n, j) for n, j in enumerate(order) if j == i]
            got = received(client, len(want))
            assert [data for data, _ in got] == want
            assert {source[:2] for _, source in got} == {socks.public[ingress[i]].getsockname()[:2]}
        wait_for(lambda: row[Slot.TO_CLIENT_PACKETS] == len(order))
    assert router.drops[Drop.UNTRUSTED_SOURCE] == 1 and router.drops[Drop.TOO_SHORT] == 1
    assert sum(router.drops) == 2
    # Every client's flow was learned from the return traffic.
    assert len(router.table) == 4


@pytest.mark.parametrize("batch", BATCHES)
def test_every_datagram_to_a_dead_hop_is_sent_or_counted(
    batch: int, relay_udp: Udp, relay_stun: Callable[..., bytes]
) -> None:
    router = make_router()
    socks = open_worker_sockets([("127.0.0.1", 0)], ("127.0.0.1", 0))
    public = socks.public[0].getsockname()
    hop = relay_udp()
    client = relay_udp()
    open_flow(router, relay_stun, client, hop)
    hop.close()  # each send now draws an ICMP port unreachable: the next send fails
    burst = 20
    for n in range(burst):
        client.sendto(b"x%d" % n, public)
    with running(socks, router, batch) as row:
        wait_for(lambda: row[Slot.TO_TRANSCEIVER_PACKETS] + router.drops[Drop.SEND_FAILED] == burst)
    # However the kernel interleaves the ICMP errors with a batch, no datagram
    # goes missing from the counts.
    assert row[Slot.TO_TRANSCEIVER_PACKETS] + router.drops[Drop.SEND_FAILED] == burst


@pytest.mark.parametrize("batch", BATCHES)
def test_a_refused_datagram_mid_batch_is_counted_and_the_rest_still_go(
    batch: int, relay_udp: Udp, relay_stun: Callable[..., bytes]
) -> None:
    router = make_router()
    socks = open_worker_sockets([("127.0.0.1", 0)], ("127.0.0.1", 0), socket_buffer=1 << 20)
    public = socks.public[0].getsockname()
    hop = relay_udp()
    client = relay_udp()
    open_flow(router, relay_stun, client, hop)
    # The largest IPv4 UDP payload arrives, but with the 24-byte header in
    # front it no longer fits: the kernel refuses exactly that one (EMSGSIZE).
    too_big = bytes(65507)
    for payload in (b"first", too_big, b"second", b"third"):
        client.sendto(payload, public)
    with running(socks, router, batch) as row:
        got = received(hop, 3)
        assert [data[HEADER_SIZE:] for data, _ in got] == [b"first", b"second", b"third"]
        wait_for(lambda: row[Slot.TO_TRANSCEIVER_PACKETS] == 3)
    assert router.drops[Drop.SEND_FAILED] == 1 and sum(router.drops) == 1
    assert row[Slot.TO_TRANSCEIVER_BYTES] == len(b"firstsecondthird")


@pytest.mark.parametrize("batch", BATCHES)
def test_past_the_connected_hop_limit_hops_get_sendto(
    batch: int, relay_udp: Udp, relay_stun: Callable[..., bytes]
) -> None:
    router = make_router()
    socks = open_worker_sockets([("127.0.0.1", 0)], ("127.0.0.1", 0))
    public = socks.public[0].getsockname()
    internal = socks.internal.getsockname()
    hop = relay_udp()
    client = relay_udp()
    open_flow(router, relay_stun, client, hop)
    for n in range(3):
        client.sendto(b"p%d" % n, public)
    with running(socks, router, batch, max_connected_hops=0):
        got = received(hop, 3)
        assert [data[HEADER_SIZE:] for data, _ in got] == [b"p0", b"p1", b"p2"]
        assert {source for _, source in got} == {internal}  # the bound socket, via sendto
        hop.sendto(pack_header(client.getsockname(), 0) + b"back", internal)
        assert client.recvfrom(64) == (b"back", public)


def test_batched_loop_is_there_to_test() -> None:
    assert mmsg.AVAILABLE  # else every "batched" case above silently ran one-per-call
