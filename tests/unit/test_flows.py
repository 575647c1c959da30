"""talkwire.relay.flows: creation, capacity, generational idle expiry, hop indices, memory."""

from __future__ import annotations

import ctypes
import gc
import itertools
import socket
import tracemalloc

import pytest

from talkwire.encap import pack_header, unpack_header
from talkwire.relay.flows import (
    FLOW_SIZE,
    SOCKADDR_SIZE,
    FlowTable,
    NullFlowStore,
    StoredFlow,
    client_key,
    flow_header,
    key_address,
    key_sockaddr,
    normalize_address,
)

HOP = ("127.0.0.1", 5000)
OTHER_HOP = ("127.0.0.2", 6000)


def test_add_builds_header_and_shares_hop() -> None:
    table = FlowTable(2)
    a = table.add(("192.0.2.1", 4000), 0, HOP)
    b = table.add(("192.0.2.2", 4001), 1, ("127.0.0.1", 5000))
    assert a is not None and b is not None
    assert len(a) == FLOW_SIZE
    assert flow_header(a) == pack_header(("192.0.2.1", 4000), 0)
    header = unpack_header(flow_header(b))
    assert (header.client, header.ingress) == (("192.0.2.2", 4001), 1)
    assert a[:2] == b[:2] == table.hop_prefix(HOP)  # one hop index for every flow to it
    assert table.hop(a) == table.hop(b) == HOP
    assert len(table) == 2
    assert table.get(("192.0.2.1", 4000), 0) == a
    assert table.get(("192.0.2.1", 4000), 1) is None  # flows are per ingress socket
    assert table.flows() == [(("192.0.2.1", 4000), 0, HOP), (("192.0.2.2", 4001), 1, HOP)]


@pytest.mark.parametrize(
    ("family", "address"),
    [(socket.AF_INET, ("127.0.0.1", 0)), (socket.AF_INET6, ("::1", 0, 0, 0))],
    ids=["ipv4", "ipv6"],
)
def test_client_key_is_what_the_kernel_writes_into_a_sockaddr(
    family: socket.AddressFamily, address: tuple[str, int] | tuple[str, int, int, int]
) -> None:
    # A real sockaddr from the kernel (getsockname fills the same structure
    # recvmmsg does), read raw through a ctypes buffer.
    with socket.socket(family, socket.SOCK_DGRAM) as sock:
        sock.bind(address)
        raw = ctypes.create_string_buffer(SOCKADDR_SIZE)
        size = ctypes.c_uint32(SOCKADDR_SIZE)
        libc = ctypes.CDLL(None, use_errno=True)
        assert libc.getsockname(sock.fileno(), raw, ctypes.byref(size)) == 0
        name = raw.raw[: size.value]
        bound = sock.getsockname()
    key = client_key(bound)
    assert name[2 : 2 + len(key)] == key
    assert key_sockaddr(key)[: size.value] == name
    assert key_address(key) == bound


def test_client_key_rejects_non_addresses() -> None:
    for bad in [("not an ip", 1), ("192.0.2.1", 70000), ("1.2.3", 1), ("192.0.2.1", 1, 0, 0)]:
        with pytest.raises(ValueError):
            client_key(bad)  # type: ignore[arg-type]


def test_re_adding_retargets() -> None:
    table = FlowTable(1)
    first = table.add(("192.0.2.1", 4000), 0, HOP)
    again = table.add(("192.0.2.1", 4000), 0, OTHER_HOP)
    assert first is not None and again is not None
    assert table.hop(again) == OTHER_HOP and flow_header(again) == flow_header(first)
    assert table.get(("192.0.2.1", 4000), 0) == again
    assert table.add(("192.0.2.1", 4000), 0, OTHER_HOP) == again  # same hop: unchanged
    assert len(table) == 1


def test_ipv6_flow_uses_the_recvfrom_key_form() -> None:
    table = FlowTable(1)
    client = normalize_address("::1", 4000)
    assert client == ("::1", 4000, 0, 0)
    flow = table.add(client, 0, normalize_address("::1", 5000))
    assert flow is not None
    assert table.by_ingress[0][client_key(("::1", 4000, 0, 0))] == flow
    assert len(client_key(client)) == 22 and len(client_key(("192.0.2.1", 1))) == 6
    assert unpack_header(flow_header(flow)).client == ("::1", 4000)


def test_full_table_refuses_new_flows_and_keeps_old_ones() -> None:
    table = FlowTable(1, capacity=2)
    old = [table.add(("192.0.2.1", p), 0, HOP) for p in (1, 2)]
    assert table.add(("192.0.2.1", 3), 0, HOP) is None
    assert table.refused == 1
    assert [table.get(("192.0.2.1", p), 0) for p in (1, 2)] == old
    # A known client is not new: it may still be re-targeted when full.
    moved = table.add(("192.0.2.1", 1), 0, ("127.0.0.9", 9))
    assert moved is not None and table.hop(moved) == ("127.0.0.9", 9)
    assert table.remove(("192.0.2.1", 2), 0)
    assert table.add(("192.0.2.1", 3), 0, HOP) is not None
    assert len(table) == 2


def test_unused_flows_expire_a_generation_later() -> None:
    table = FlowTable(2, idle_timeout=30.0)
    assert table.sweep(0.0) == 0  # starts the clock: rotations at 30, 60, 90 ...
    table.add(("192.0.2.1", 1), 0, HOP)
    busy = table.add(("192.0.2.1", 2), 1, HOP)
    assert busy is not None
    assert table.sweep(29.0) == 0
    assert table.sweep(30.0) == 0  # both move to the previous generation
    # The loop looks in the current generation only; a miss goes through get().
    assert client_key(("192.0.2.1", 2)) not in table.by_ingress[1]
    assert table.get(("192.0.2.1", 2), 1) == busy  # used: made current again
    assert table.by_ingress[1][client_key(("192.0.2.1", 2))] == busy
    assert table.sweep(59.0) == 0
    assert table.sweep(60.0) == 1
    assert table.get(("192.0.2.1", 1), 0) is None
    assert table.get(("192.0.2.1", 2), 1) == busy
    assert len(table) == 1 and table.expired == 1
    assert table.sweep(90.0) == 0 and table.sweep(120.0) == 1  # busy idles from 60
    assert len(table) == 0 and table.expired == 2


@pytest.mark.parametrize("last_use", [0.1, 29.9, 30.0, 30.1, 44.0, 59.9])
def test_expiry_comes_between_one_and_two_timeouts_after_last_use(last_use: float) -> None:
    table = FlowTable(1, idle_timeout=30.0)
    tick = 0.25
    table.add(("192.0.2.1", 1), 0, HOP)
    now = 0.0
    expired_at = None
    for step in range(1000):  # the loop's ticks, 250 s worth
        now = step * tick
        if table.sweep(now):
            expired_at = now
            break
        if now <= last_use < now + tick:
            table.get(("192.0.2.1", 1), 0)  # the client's last packet, between two ticks
    assert expired_at is not None
    assert 30.0 < expired_at - last_use <= 60.0 + 2 * tick


def test_expired_flows_are_freed_a_slice_per_sweep() -> None:
    table = FlowTable(1, idle_timeout=1.0)
    table.sweep(0.0)
    for port in range(1, 1001):
        table.add(("192.0.2.1", port), 0, HOP)
    table.sweep(1.0)
    assert table.sweep(2.0, limit=100) == 1000  # counted at once...
    assert len(table) == 0
    freed = [table.awaiting_free]  # ...but freed in slices
    while table.awaiting_free:
        table.sweep(2.0, limit=100)
        freed.append(table.awaiting_free)
        assert len(freed) < 20
    steps = [a - b for a, b in itertools.pairwise(freed)]
    assert max(steps) <= 125  # max(limit, waiting // 8): never the whole table at once
    assert freed[0] == 1000 - 125 and freed[-1] == 0


def test_hop_indices_are_reused_once_no_flow_names_them() -> None:
    table = FlowTable(1, max_hops=2)
    a = table.add(("192.0.2.1", 1), 0, HOP)
    b = table.add(("192.0.2.1", 2), 0, OTHER_HOP)
    assert a is not None and b is not None and a[:2] != b[:2]
    assert table.add(("192.0.2.1", 3), 0, ("127.0.0.3", 7000)) is None  # both indices live
    assert table.refused == 1
    epoch = table.hop_epoch
    assert table.remove(("192.0.2.1", 1), 0)
    c = table.add(("192.0.2.1", 3), 0, ("127.0.0.3", 7000))
    assert c is not None and c[:2] == a[:2]  # HOP's index, now free, reused
    assert table.hop_epoch == epoch + 1  # callers caching per index must refresh
    assert table.hop_prefix(HOP) is None
    assert table.hop(c) == ("127.0.0.3", 7000) and table.hop(b) == OTHER_HOP


def test_rejects_nonsense_settings() -> None:
    with pytest.raises(ValueError):
        FlowTable(0)
    with pytest.raises(ValueError):
        FlowTable(1, idle_timeout=0)


def test_null_store_is_a_no_op() -> None:
    store = NullFlowStore()
    store.record(StoredFlow(("192.0.2.1", 1), 0, HOP))
    assert store.lookup(("192.0.2.1", 1), 0) is None


def _client(i: int, shared_ip: bool) -> tuple[str, int]:
    # Built fresh, as each recvfrom returns a new tuple and a new str.
    if shared_ip:  # a NAT or a loopback benchmark: few IPs, many ports
        return (f"127.0.0.{1 + i // 60000}", 1024 + i % 60000)
    return (f"10.{i >> 16 & 255}.{i >> 8 & 255}.{i & 255}", 40000 + i % 20000)


@pytest.mark.parametrize("shared_ip", [False, True], ids=["distinct-ips", "few-ips"])
def test_memory_per_flow_at_100k(shared_ip: bool, capsys: pytest.CaptureFixture[str]) -> None:
    n = 100_000
    table = FlowTable(1, capacity=n)
    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        for i in range(n):
            table.add(_client(i, shared_ip), 0, HOP)
        gc.collect()
        per_flow = (tracemalloc.get_traced_memory()[0] - before) / n
    finally:
        tracemalloc.stop()
    assert len(table) == n
    with capsys.disabled():
        print(f"\nflow table: {per_flow:.0f} bytes per flow at 100k flows ({shared_ip=})")
    # Issue 3's target, for the public-relay case (every client its own IP).
    assert per_flow <= 256
