"""Relay counters: a shared-memory layout the workers write and a Prometheus collector.

Each worker owns one row of a ``multiprocessing.RawArray`` of uint64 and
overwrites it with its plain local counters once per drained batch; the
supervisor reads every row when ``/metrics`` is scraped. Single writer per
row and aligned 64-bit stores: no lock is needed.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Iterator, MutableSequence, Sequence

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from talkwire.keyring_watch import KeyringWatch
from talkwire.relay.router import Drop, FlowSource, Router


class Slot(enum.IntEnum):
    """Fixed columns of a worker's row; created and drop counters follow."""

    TO_TRANSCEIVER_PACKETS = 0
    TO_TRANSCEIVER_BYTES = 1
    TO_CLIENT_PACKETS = 2
    TO_CLIENT_BYTES = 3
    FLOWS = 4
    FLOWS_EXPIRED = 5
    PEER_SYNC_ERRORS = 6
    KEYRING_CURRENT = 7
    KEYRING_RELOADS = 8
    KEYRING_ERRORS = 9
    KEYRING_KEYS = 10
    FLOW_CACHE_ERRORS = 11
    FLOW_CACHE_OVERFLOWS = 12


CREATED_BASE = len(Slot)
DROPS_BASE = CREATED_BASE + len(FlowSource)
SLOTS = DROPS_BASE + len(Drop)

DIRECTIONS = (
    ("to_transceiver", Slot.TO_TRANSCEIVER_PACKETS, Slot.TO_TRANSCEIVER_BYTES),
    ("to_client", Slot.TO_CLIENT_PACKETS, Slot.TO_CLIENT_BYTES),
)


def publish_router(
    row: MutableSequence[int], router: Router, peer_errors: int, keys: KeyringWatch | None = None
) -> None:
    """Copy the router's slow-path counters into a worker's row (not per packet)."""
    row[Slot.KEYRING_CURRENT] = router.keyring.current
    row[Slot.KEYRING_KEYS] = len(router.keyring.keys)
    row[Slot.FLOW_CACHE_ERRORS] = router.store.errors
    row[Slot.FLOW_CACHE_OVERFLOWS] = router.store.overflows
    if keys is not None:
        row[Slot.KEYRING_RELOADS] = keys.reloads
        row[Slot.KEYRING_ERRORS] = keys.errors
    row[Slot.FLOWS] = len(router.table)
    row[Slot.FLOWS_EXPIRED] = router.table.expired
    row[Slot.PEER_SYNC_ERRORS] = peer_errors
    row[CREATED_BASE:DROPS_BASE] = router.created
    row[DROPS_BASE:SLOTS] = router.drops


class RelayCollector(Collector):
    """Exposes every worker's row with a ``worker`` label (sum in PromQL to aggregate)."""

    def __init__(self, rows: Sequence[Sequence[int]], alive: Callable[[], Sequence[bool]]) -> None:
        self._rows = rows
        self._alive = alive

    def collect(self) -> Iterator[Metric]:
        packets = CounterMetricFamily(
            "talkwire_relay_packets",
            "Datagrams forwarded, by direction",
            labels=["worker", "direction"],
        )
        octets = CounterMetricFamily(
            "talkwire_relay_bytes",
            "Payload bytes forwarded (without the encapsulation header), by direction",
            labels=["worker", "direction"],
        )
        flows = GaugeMetricFamily(
            "talkwire_relay_flows", "Flows in the worker's table", labels=["worker"]
        )
        created = CounterMetricFamily(
            "talkwire_relay_flows_created",
            "Flows created, by what created them",
            labels=["worker", "source"],
        )
        expired = CounterMetricFamily(
            "talkwire_relay_flows_expired", "Flows removed after idling", labels=["worker"]
        )
        drops = CounterMetricFamily(
            "talkwire_relay_drops", "Datagrams dropped, by reason", labels=["worker", "reason"]
        )
        sync_errors = CounterMetricFamily(
            "talkwire_relay_peer_sync_errors",
            "Flow announcements to sibling workers that could not be sent",
            labels=["worker"],
        )
        keyring_current = GaugeMetricFamily(
            "talkwire_relay_keyring_current_key",
            "Key id new route tokens are expected to carry (the keyring's current key)",
            labels=["worker"],
        )
        keyring_keys = GaugeMetricFamily(
            "talkwire_relay_keyring_keys",
            "Keys a first packet may be signed with (current and those in their grace)",
            labels=["worker"],
        )
        keyring_reloads = CounterMetricFamily(
            "talkwire_relay_keyring_reloads",
            "Keyring file changes: taken (ok) or refused and the old keys kept (error)",
            labels=["worker", "result"],
        )
        cache_errors = CounterMetricFamily(
            "talkwire_relay_flow_cache_errors",
            "Shared flow cache rounds that failed (Redis away, slow or junk); forwarding goes on",
            labels=["worker"],
        )
        cache_overflows = CounterMetricFamily(
            "talkwire_relay_flow_cache_overflows",
            "Flow cache writes or lookups skipped because the cache thread was behind",
            labels=["worker"],
        )
        for index, row in enumerate(self._rows):
            worker = str(index)
            for direction, packet_slot, byte_slot in DIRECTIONS:
                packets.add_metric([worker, direction], row[packet_slot])
                octets.add_metric([worker, direction], row[byte_slot])
            flows.add_metric([worker], row[Slot.FLOWS])
            expired.add_metric([worker], row[Slot.FLOWS_EXPIRED])
            sync_errors.add_metric([worker], row[Slot.PEER_SYNC_ERRORS])
            keyring_current.add_metric([worker], row[Slot.KEYRING_CURRENT])
            keyring_keys.add_metric([worker], row[Slot.KEYRING_KEYS])
            cache_errors.add_metric([worker], row[Slot.FLOW_CACHE_ERRORS])
            cache_overflows.add_metric([worker], row[Slot.FLOW_CACHE_OVERFLOWS])
            keyring_reloads.add_metric([worker, "ok"], row[Slot.KEYRING_RELOADS])
            keyring_reloads.add_metric([worker, "error"], row[Slot.KEYRING_ERRORS])
            for source in FlowSource:
                created.add_metric([worker, source.label], row[CREATED_BASE + source])
            for reason in Drop:
                drops.add_metric([worker, reason.label], row[DROPS_BASE + reason])
        alive = GaugeMetricFamily("talkwire_relay_workers_alive", "Worker processes running")
        alive.add_metric([], sum(self._alive()))
        yield from (packets, octets, flows, created, expired, drops, sync_errors, alive)
        yield from (keyring_current, keyring_keys, keyring_reloads, cache_errors, cache_overflows)
