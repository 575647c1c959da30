"""Fuzz every datagram decoder, then a live relay: no crash, no flow, no reply.

The corpus is a third each of random bytes, random bytes behind a STUN
header (the cookie, a plausible length), and valid first binding requests
(a real route token and MESSAGE-INTEGRITY) with one to four bytes changed or
the tail cut. Every changed request fails its MESSAGE-INTEGRITY or
FINGERPRINT (FINGERPRINT's own type is left alone: see ``corpus``), so a
router that checks integrity must create no flow from any of them. The
decoders' documented errors (StunError, EncapError, TokenError) are the
expected outcome; anything else raised is a crash.

  .venv/bin/python bench/fuzz.py                     # 1 000 000 datagrams, ~1 minute
  .venv/bin/python bench/fuzz.py --count 20000 --out x.json
"""

from __future__ import annotations

import argparse
import collections
import random
import select
import socket
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import common
import relay_lab
from relay_lab import Relay, binding_request

from talkwire import encap, route_token, stun
from talkwire.errors import EncapError, StunError, TokenError
from talkwire.relay.flows import FlowTable
from talkwire.relay.router import Router, RouterSettings, decode_peer_flow
from talkwire.secret_files import write_private
from talkwire.transceiver.demux import Delivery, Demux

EXPECTED = (StunError, EncapError, TokenError)
SEED = 20261207
MAX_EXAMPLES = 5
SENDERS = 16  # source addresses the live relay sees the corpus from
CHUNK = 1000  # datagrams sent before waiting for the relay's socket to drain
DRAIN_TIMEOUT_S = 10.0
SENTINEL_TIMEOUT_S = 30.0
PASSWORD_OF_SESSION = "p" * 22


def corpus(count: int, base: bytes, rng: random.Random) -> Iterator[bytes]:
    header = stun.HEADER_SIZE
    for i in range(count):
        kind = i % 3
        if kind == 0:
            yield rng.randbytes(rng.randrange(0, 300))
        elif kind == 1:
            length = rng.randrange(0, 64) * 4
            msg_type = rng.choice((0x0001, 0x0101, 0x0111, 0x0003, rng.randrange(0, 0x3FFF)))
            head = msg_type.to_bytes(2, "big") + length.to_bytes(2, "big")
            yield head + stun.MAGIC_COOKIE.to_bytes(4, "big") + rng.randbytes(12 + length)
        else:
            data = bytearray(base)
            if rng.random() < 0.2:
                yield bytes(data[: rng.randrange(0, len(data))])
                continue
            # Not FINGERPRINT's type and length: renamed, it becomes an attribute
            # after MESSAGE-INTEGRITY, which STUN ignores, and the rest is authentic.
            positions = (*range(len(data) - 8), *range(len(data) - 4, len(data)))
            for position in rng.sample(positions, rng.randrange(1, 5)):  # distinct: no undo
                data[position] ^= rng.randrange(1, 256)
            yield bytes(data[:header] if rng.random() < 0.01 else data)


class Decoders:
    """Each decoder, and what counts as a crash of it."""

    def __init__(self, keyring: route_token.Keyring) -> None:
        self.keyring = keyring
        settings = RouterSettings(
            keyring=keyring, cluster=0, ingress_families=(4,), verify_integrity=True
        )
        self.router = Router(settings, FlowTable(1, capacity=1_000_000))
        self.demux: Demux[str] = Demux()
        self.demux.register("AAAAsession1", PASSWORD_OF_SESSION, {0: "one"})
        self.crashes: collections.Counter[str] = collections.Counter()
        self.examples: list[dict[str, str]] = []
        self.delivered = 0
        self.calls: dict[str, Callable[[bytes], object]] = {
            "stun.binding_request_username": stun.binding_request_username,
            "stun.is_request": stun.is_request,
            "stun.verify_message_integrity": lambda d: stun.verify_message_integrity(
                d, PASSWORD_OF_SESSION
            ),
            "stun.parse_message": stun.parse_message,
            "stun.split_username": lambda d: stun.split_username(d[:80]),
            "encap.unpack_header": encap.unpack_header,
            "route_token.verify": lambda d: route_token.verify(self.keyring, d[:64]),
            "router.from_public": lambda d: self.router.from_public(
                d, ("192.0.2.1", 1 + len(d)), 0, 0.0
            ),
            "router.from_internal": lambda d: self.router.from_internal(
                d, ("127.0.0.1", 3479), 0.0
            ),
            "router.decode_peer_flow": decode_peer_flow,
            "demux.route": self._demux,
        }

    def _demux(self, data: bytes) -> object:
        routed = self.demux.route(data, ("127.0.0.1", 3479))
        routed_wrapped = self.demux.route(
            encap.pack_header(("192.0.2.1", 5000), 0) + data, ("127.0.0.1", 3479)
        )
        self.delivered += isinstance(routed, Delivery) + isinstance(routed_wrapped, Delivery)
        return routed

    def feed(self, data: bytes) -> None:
        for name, call in self.calls.items():
            try:
                call(data)
            except EXPECTED:
                pass
            except Exception as exc:  # a crash: what the fuzz is looking for
                self.crashes[name] += 1
                if len(self.examples) < MAX_EXAMPLES:
                    self.examples.append(
                        {"decoder": name, "error": repr(exc), "datagram": data.hex()}
                    )

    def public_flows(self) -> int:
        return int(self.router.created[0])  # FlowSource.STUN


def fuzz_decoders(datagrams: list[bytes], keyring: route_token.Keyring) -> dict[str, Any]:
    decoders = Decoders(keyring)
    began = time.process_time()
    for data in datagrams:
        decoders.feed(data)
    cpu = time.process_time() - began
    return {
        "datagrams": len(datagrams),
        "decoders": sorted(decoders.calls),
        "crashes": dict(decoders.crashes),
        "crash_examples": decoders.examples,
        "flows_from_public": decoders.public_flows(),
        "router_drops": sum(decoders.router.drops),  # public and internal side
        "cpu_s": round(cpu, 2),
        "decoder_calls_per_cpu_s": round(len(datagrams) * len(decoders.calls) / cpu),
    }


def socket_queue(port: int) -> tuple[int, int]:
    """(bytes waiting, datagrams the kernel dropped) of the UDP socket on ``port``,
    from /proc/net/udp: the relay is fed no faster than it reads, so every
    datagram of the corpus reaches it."""
    with open("/proc/net/udp") as table:
        next(table)
        for line in table:
            fields = line.split()
            if int(fields[1].rpartition(":")[2], 16) == port:
                return int(fields[4].partition(":")[2], 16), int(fields[12])
    raise SystemExit(f"fuzz: no UDP socket on port {port}")


def wait_drained(port: int) -> int:
    deadline = time.monotonic() + DRAIN_TIMEOUT_S
    while True:
        waiting, dropped = socket_queue(port)
        if waiting == 0:
            return dropped
        if time.monotonic() > deadline:
            raise SystemExit(f"fuzz: the relay stopped reading ({waiting} bytes waiting)")
        time.sleep(0.0005)


def fuzz_live_relay(
    datagrams: list[bytes], keyring: route_token.Keyring, keyring_path: Path
) -> dict[str, Any]:
    transceiver = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    transceiver.bind(("127.0.0.1", 0))
    relay = Relay(keyring_path, verify=True, socket_buffer=8 * 1024 * 1024)
    public = (relay_lab.LOCAL, relay.public_port)
    senders = []
    try:
        for i in range(SENDERS):
            sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            sock.bind((f"127.5.0.{i + 1}", 0))
            sock.setblocking(False)
            senders.append(sock)
        began = time.monotonic()
        refused = 0
        dropped_before = socket_queue(relay.public_port)[1]
        for i, data in enumerate(datagrams):
            if i % CHUNK == 0:
                wait_drained(relay.public_port)
            sock = senders[i % SENDERS]
            while True:
                try:
                    sock.sendto(data, public)
                    break
                except BlockingIOError:
                    select.select([], [sock], [], 1.0)
                except OSError:  # e.g. a datagram the kernel will not send
                    refused += 1
                    break
        kernel_dropped = wait_drained(relay.public_port) - dropped_before
        sent_s = time.monotonic() - began
        # One genuine request last, from a new address: it reaches the
        # "transceiver" once the relay has worked through everything before it.
        genuine = binding_request(keyring, transceiver.getsockname())
        last = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        senders.append(last)
        last.sendto(genuine, public)
        transceiver.settimeout(SENTINEL_TIMEOUT_S)
        forwarded_before_genuine = 0
        while True:
            data, _ = transceiver.recvfrom(65536)
            if data[encap.HEADER_SIZE :] == genuine:
                break
            forwarded_before_genuine += 1
        replies = 0
        last.setblocking(False)
        for sock in senders:
            while True:
                try:
                    sock.recvfrom(65536)
                    replies += 1
                except BlockingIOError:
                    break
        # Counters reach /metrics on the worker's next tick.
        drops = relay.wait_metric("talkwire_relay_drops_total", len(datagrams) - refused, 5.0)
        return {
            "datagrams": len(datagrams),
            "not_sent": refused,
            "kernel_dropped": kernel_dropped,
            "send_s": round(sent_s, 2),
            "send_rate_pps": round(len(datagrams) / sent_s),
            "relay_drops_counted": int(drops),
            "forwarded": forwarded_before_genuine,
            "flows_created": int(relay.metric("talkwire_relay_flows_created_total")) - 1,
            "replies": replies,
            "relay_alive": relay.proc.proc.poll() is None,
        }
    finally:
        relay.stop()
        for sock in senders:
            sock.close()
        transceiver.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--count", type=int, default=1_000_000, help="datagrams (default 10^6)")
    parser.add_argument("--out", type=Path, help="JSON path (default bench/results/fuzz-*.json)")
    args = parser.parse_args(argv)
    if args.count < 1:
        parser.error("--count must be positive")
    rng = random.Random(SEED)
    keyring = route_token.Keyring.generate(1)
    with tempfile.TemporaryDirectory(prefix="talkwire-fuzz-") as tmp:
        keyring_path = Path(tmp) / "keyring"
        write_private(keyring_path, keyring.to_text())
        base = binding_request(keyring, ("127.0.0.1", 9))
        datagrams = list(corpus(args.count, base, rng))
        print(f"fuzz: {len(datagrams)} datagrams, seed {SEED}", flush=True)
        decoders = fuzz_decoders(datagrams, keyring)
        print(
            f"  decoders: {len(decoders['decoders'])} of them, crashes {decoders['crashes'] or 0},"
            f" flows from public {decoders['flows_from_public']},"
            f" {decoders['decoder_calls_per_cpu_s']} decoder calls per CPU-second",
            flush=True,
        )
        live = fuzz_live_relay(datagrams, keyring, keyring_path)
        print(
            f"  live relay: {live['datagrams']} sent in {live['send_s']} s"
            f" ({live['send_rate_pps']} pps), {live['relay_drops_counted']} dropped and counted,"
            f" {live['forwarded']} forwarded, {live['flows_created']} flows created,"
            f" {live['replies']} replies, alive {live['relay_alive']}",
            flush=True,
        )
    ok = (
        not decoders["crashes"]
        and decoders["flows_from_public"] == 0
        and live["flows_created"] == 0
        and live["forwarded"] == 0
        and live["replies"] == 0
        and live["relay_alive"]
        and live["kernel_dropped"] == 0
        and live["relay_drops_counted"] == live["datagrams"] - live["not_sent"]
    )
    results = {
        "bench": "fuzz",
        "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "host": common.machine(),
        "seed": SEED,
        "decoders": decoders,
        "live_relay": live,
        "ok": ok,
    }
    path = common.write_results("fuzz", results, args.out)
    print(f"  {'ok' if ok else 'FAILED'}; results: {path}", flush=True)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
