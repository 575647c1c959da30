"""The forwarding loop called in-process, as a benchmark does: sockets, router, stop fd."""

from __future__ import annotations

import os
import socket
import threading
from collections.abc import Callable

from talkwire import route_token
from talkwire.encap import HEADER_SIZE, pack_header, unpack_header
from talkwire.relay.flows import FlowTable
from talkwire.relay.metrics import SLOTS, Slot
from talkwire.relay.router import Router, RouterSettings
from talkwire.relay.workers import forward, open_worker_sockets


def test_forward_in_a_thread_and_stop(
    relay_udp: Callable[..., socket.socket], relay_stun: Callable[..., bytes]
) -> None:
    keyring = route_token.Keyring.generate()
    socks = open_worker_sockets([("127.0.0.1", 0)], ("127.0.0.1", 0))
    router = Router(RouterSettings(keyring=keyring, cluster=0, ingress_families=(4,)), FlowTable(1))
    row = [0] * SLOTS
    stop_r, stop_w = os.pipe()
    thread = threading.Thread(target=forward, args=(socks, router, stop_r, row), daemon=True)
    thread.start()
    try:
        transceiver = relay_udp()
        client = relay_udp()
        public = socks.public[0].getsockname()
        request = relay_stun(route_token.mint(keyring, 0, transceiver.getsockname()))
        client.sendto(request, public)
        data, relay_internal = transceiver.recvfrom(65536)
        assert unpack_header(data).client == client.getsockname()
        assert data[HEADER_SIZE:] == request
        assert relay_internal == socks.internal.getsockname()
        transceiver.sendto(pack_header(client.getsockname(), 0) + b"back", relay_internal)
        assert client.recvfrom(65536) == (b"back", public)
    finally:
        os.write(stop_w, b"x")
        thread.join(10)
        os.close(stop_r)
        os.close(stop_w)
        socks.close()
    assert not thread.is_alive()
    assert row[Slot.TO_TRANSCEIVER_PACKETS] == 1 and row[Slot.TO_CLIENT_PACKETS] == 1
