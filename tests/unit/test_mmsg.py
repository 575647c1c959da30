"""talkwire.relay.mmsg: recvmmsg/sendmmsg through preallocated ctypes vectors, real sockets."""

from __future__ import annotations

import errno
import socket
from collections.abc import Iterator

import pytest

from talkwire.relay import mmsg
from talkwire.relay.flows import SOCKADDR_SIZE, client_key, key_sockaddr

pytestmark = pytest.mark.skipif(not mmsg.AVAILABLE, reason="recvmmsg/sendmmsg need Linux")

SLOT = 2048


@pytest.fixture
def udp() -> Iterator[list[socket.socket]]:
    opened: list[socket.socket] = []
    yield opened
    for sock in opened:
        sock.close()


def _bound(opened: list[socket.socket], host: str) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_DGRAM)
    opened.append(sock)
    sock.bind((host, 0))
    sock.settimeout(5)
    return sock


@pytest.mark.parametrize("host", ["127.0.0.1", "::1"])
def test_one_call_receives_every_queued_datagram_with_its_source(
    host: str, udp: list[socket.socket]
) -> None:
    batch = mmsg.Batch(8, SLOT)
    name_size = mmsg.SOCKADDR_IPV4 if ":" not in host else SOCKADDR_SIZE
    rx = batch.receiver(26, name_size)
    server = _bound(udp, host)
    clients = [_bound(udp, host) for _ in range(3)]
    sent = [bytes([i]) * (10 + i) for i in range(5)]
    for i, payload in enumerate(sent):
        clients[i % 3].sendto(payload, server.getsockname())
    n = batch.recvmmsg(server.fileno(), rx.entries[0], batch.count, mmsg.MSG_DONTWAIT, None)
    assert n == 5
    assert rx.lengths(n) == tuple(len(p) for p in sent)
    keys = rx.keys(n)
    for i, payload in enumerate(sent):
        assert batch.buffer[i * SLOT + 26 : i * SLOT + 26 + len(payload)] == payload
        assert keys[i] == client_key(clients[i % 3].getsockname())
    # Nothing waits: the next call returns at once with EAGAIN, not after a fill.
    assert batch.recvmmsg(server.fileno(), rx.entries[0], batch.count, mmsg.MSG_DONTWAIT, None) < 0
    assert batch.errno() == errno.EAGAIN


@pytest.mark.parametrize("host", ["127.0.0.1", "::1"])
def test_addressed_send_reaches_each_entrys_own_destination(
    host: str, udp: list[socket.socket]
) -> None:
    batch = mmsg.Batch(4, SLOT)
    tx = batch.sender(24, addressed=True)
    sender = _bound(udp, host)
    receivers = [_bound(udp, host) for _ in range(3)]
    for i, receiver in enumerate(receivers):
        at = i * SLOT + 24
        batch.buffer[at : at + 5] = f"hi {i} ".encode()
        tx.iov_words[2 * i + 1] = 5
        name = key_sockaddr(client_key(receiver.getsockname()))
        batch.tx_names_view[i * SOCKADDR_SIZE : (i + 1) * SOCKADDR_SIZE] = name
    assert batch.sendmmsg(sender.fileno(), tx.entries[0], 3, 0) == 3
    for i, receiver in enumerate(receivers):
        assert receiver.recvfrom(64) == (f"hi {i} ".encode(), sender.getsockname())


def test_connected_send_from_a_later_entry(udp: list[socket.socket]) -> None:
    batch = mmsg.Batch(4, SLOT)
    tx = batch.sender(2, addressed=False)
    receiver = _bound(udp, "127.0.0.1")
    sender = _bound(udp, "127.0.0.1")
    sender.connect(receiver.getsockname())
    for i in range(4):
        batch.buffer[i * SLOT + 2 : i * SLOT + 3] = bytes([65 + i])
        tx.iov_words[2 * i + 1] = 1
    assert batch.sendmmsg(sender.fileno(), tx.entries[2], 2, 0) == 2
    assert [receiver.recv(8) for _ in range(2)] == [b"C", b"D"]


def test_a_datagram_as_large_as_udp_allows_is_not_truncated(udp: list[socket.socket]) -> None:
    batch = mmsg.Batch(2, 26 + 65536)
    rx = batch.receiver(26, mmsg.SOCKADDR_IPV4)
    server = _bound(udp, "127.0.0.1")
    server.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
    client = _bound(udp, "127.0.0.1")
    big = bytes(range(256)) * 255 + b"end"  # 65283 bytes
    client.sendto(big, server.getsockname())
    assert batch.recvmmsg(server.fileno(), rx.entries[0], 2, mmsg.MSG_DONTWAIT, None) == 1
    assert rx.lengths(1) == (len(big),)
    assert not rx.flags(0) & mmsg.MSG_TRUNC
    assert batch.buffer[26 : 26 + len(big)] == big


def test_rejects_an_empty_batch() -> None:
    with pytest.raises(ValueError):
        mmsg.Batch(0, SLOT)
