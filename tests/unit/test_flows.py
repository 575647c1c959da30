"""talkwire.relay.flows: creation, capacity, incremental idle expiry, memory per flow."""

from __future__ import annotations

import gc
import tracemalloc

import pytest

from talkwire.encap import pack_header, unpack_header
from talkwire.relay.flows import FlowTable, NullFlowStore, StoredFlow, normalize_address

HOP = ("127.0.0.1", 5000)


def test_add_builds_header_and_interns_hop() -> None:
    table = FlowTable(2)
    a = table.add(("192.0.2.1", 4000), 0, ("127.0.0.1", 5000), now=1.0)
    b = table.add(("192.0.2.2", 4001), 1, ("127.0.0.1", 5000), now=2.0)
    assert a is not None and b is not None
    assert a.header == pack_header(("192.0.2.1", 4000), 0)
    header = unpack_header(b.header)
    assert (header.client, header.ingress) == (("192.0.2.2", 4001), 1)
    assert a.hop is b.hop  # one shared tuple for every flow to that transceiver
    assert (a.seen, b.seen) == (1.0, 2.0)
    assert len(table) == 2
    assert table.get(("192.0.2.1", 4000), 0) is a
    assert table.get(("192.0.2.1", 4000), 1) is None  # flows are per ingress socket


def test_re_adding_retargets_in_place() -> None:
    table = FlowTable(1)
    first = table.add(("192.0.2.1", 4000), 0, HOP, now=1.0)
    again = table.add(("192.0.2.1", 4000), 0, ("127.0.0.2", 6000), now=5.0)
    assert again is first
    assert first is not None and first.hop == ("127.0.0.2", 6000) and first.seen == 5.0
    assert len(table) == 1


def test_ipv6_flow_uses_the_recvfrom_key_form() -> None:
    table = FlowTable(1)
    client = normalize_address("::1", 4000)
    assert client == ("::1", 4000, 0, 0)
    flow = table.add(client, 0, normalize_address("::1", 5000), now=0.0)
    assert flow is not None
    assert table.by_ingress[0][("::1", 4000, 0, 0)] is flow
    assert unpack_header(flow.header).client == ("::1", 4000)


def test_full_table_refuses_new_flows_and_keeps_old_ones() -> None:
    table = FlowTable(1, capacity=2)
    old = [table.add(("192.0.2.1", p), 0, HOP, now=0.0) for p in (1, 2)]
    assert table.add(("192.0.2.1", 3), 0, HOP, now=100.0) is None
    assert table.refused == 1
    assert [table.get(("192.0.2.1", p), 0) for p in (1, 2)] == old
    # A known client is not new: it may still be re-targeted when full.
    assert table.add(("192.0.2.1", 1), 0, ("127.0.0.9", 9), now=1.0) is old[0]
    assert table.remove(("192.0.2.1", 2), 0)
    assert table.add(("192.0.2.1", 3), 0, HOP, now=2.0) is not None
    assert len(table) == 2


def test_sweep_expires_only_idle_flows() -> None:
    table = FlowTable(2, idle_timeout=30.0)
    table.add(("192.0.2.1", 1), 0, HOP, now=0.0)
    busy = table.add(("192.0.2.1", 2), 1, HOP, now=0.0)
    assert busy is not None
    busy.seen = 20.0  # what the forwarding loop does on every packet
    assert sum(table.sweep(29.0) for _ in range(4)) == 0
    # Passes start at most every quarter timeout: 29 + 7.5 <= 37.
    expired = sum(table.sweep(37.0) for _ in range(4))
    assert expired == 1
    assert table.get(("192.0.2.1", 1), 0) is None
    assert table.get(("192.0.2.1", 2), 1) is busy
    assert sum(table.sweep(51.0) for _ in range(4)) == 1
    assert len(table) == 0 and table.expired == 2


def test_sweep_is_incremental_and_bounded() -> None:
    table = FlowTable(1, idle_timeout=1.0)
    for port in range(1, 1001):
        table.add(("192.0.2.1", port), 0, HOP, now=0.0)
    calls = []
    for _ in range(20):
        calls.append(table.sweep(5.0, limit=100))
        if not len(table):
            break
    assert max(calls) == 100  # never more work than the limit in one call
    assert sum(calls) == 1000 and len(table) == 0


def test_flow_touched_during_a_pass_survives() -> None:
    table = FlowTable(1, idle_timeout=1.0)
    flows = [table.add(("192.0.2.1", port), 0, HOP, now=0.0) for port in range(1, 201)]
    assert table.sweep(2.0, limit=50) == 50
    last = flows[-1]
    assert last is not None
    last.seen = 2.0
    while table.sweep(2.0, limit=50):
        pass
    assert len(table) == 1 and table.get(("192.0.2.1", 200), 0) is last


def test_new_pass_waits_a_quarter_timeout() -> None:
    table = FlowTable(1, idle_timeout=8.0)
    table.add(("192.0.2.1", 1), 0, HOP, now=0.0)
    table.sweep(1.0)  # a pass starts (nothing due), the next may start at 3.0
    assert table.sweep(1.5) == 0
    flow = table.get(("192.0.2.1", 1), 0)
    assert flow is not None
    assert table.sweep(9.0) == 1


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
            table.add(_client(i, shared_ip), 0, HOP, now=0.0)
        gc.collect()
        per_flow = (tracemalloc.get_traced_memory()[0] - before) / n
    finally:
        tracemalloc.stop()
    assert len(table) == n
    with capsys.disabled():
        print(f"\nflow table: {per_flow:.0f} bytes per flow at 100k flows ({shared_ip=})")
    # The target is 256; this bound only catches a regression (e.g. a __dict__ per flow).
    assert per_flow < 400
