"""A real relay process between a test client and a test "transceiver" socket on loopback."""

from __future__ import annotations

import random
import secrets
import select
import socket
import struct
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from talkwire import route_token, stun
from talkwire.encap import HEADER_SIZE, pack_header, unpack_header
from talkwire.secret_files import write_private

DTLS = bytes([22, 0xFE, 0xFD]) + b"client hello" + bytes(20)
RTP = bytes([0x80, 111, 0, 1]) + b"opus frame" + bytes(40)
# Loopback forwarding takes well under a millisecond; silence this long is a drop.
FIRST_PACKET_WAIT_S = 0.5

Relay = Any  # conftest.RelayProcess
Start = Callable[..., Relay]
Udp = Callable[..., socket.socket]
KeyringFixture = tuple[route_token.Keyring, Path]


def receive_forwarded(transceiver: socket.socket) -> tuple[tuple[str, int], int, bytes, Any]:
    """(client, ingress, payload, relay internal address) of one forwarded datagram."""
    data, relay_internal = transceiver.recvfrom(65536)
    header = unpack_header(data)
    return header.client, header.ingress, data[HEADER_SIZE:], relay_internal


def test_stun_opens_flow_then_dtls_rtp_and_return_path(
    relay_start: Start,
    relay_udp: Udp,
    relay_keyring: KeyringFixture,
    relay_stun: Callable[..., bytes],
) -> None:
    relay = relay_start()
    transceiver = relay_udp()
    client = relay_udp()
    ufrag = route_token.mint(relay_keyring[0], 0, transceiver.getsockname())
    request = relay_stun(ufrag)

    client.sendto(request, relay.public[0])
    who, ingress, payload, relay_internal = receive_forwarded(transceiver)
    assert who == client.getsockname() and ingress == 0 and payload == request
    assert relay_internal == relay.internal[0]

    for packet in (DTLS, RTP):
        client.sendto(packet, relay.public[0])
        assert receive_forwarded(transceiver)[:3] == (client.getsockname(), 0, packet)

    # Return path: header naming the client, sent to the address the packets came from.
    transceiver.sendto(pack_header(client.getsockname(), 0) + b"\x17server record", relay_internal)
    data, source = client.recvfrom(65536)
    assert data == b"\x17server record"
    assert source == relay.public[0]

    assert relay.metric("talkwire_relay_packets_total", direction="to_transceiver") == 3
    assert relay.metric("talkwire_relay_packets_total", direction="to_client") == 1
    assert relay.metric("talkwire_relay_flows_created_total", source="stun") == 1
    assert relay.metric("talkwire_relay_flows") == 1


def test_a_rotated_keyring_is_taken_live_and_the_old_key_ends_with_its_grace(
    relay_start: Start,
    relay_udp: Udp,
    relay_keyring: KeyringFixture,
    relay_stun: Callable[..., bytes],
) -> None:
    old, path = relay_keyring
    relay = relay_start(workers=2)  # each worker must take it
    transceiver = relay_udp()
    to = transceiver.getsockname()

    def opens_a_flow(keyring: route_token.Keyring) -> bool:
        client = relay_udp()  # a new client: only its first packet is checked
        client.sendto(relay_stun(route_token.mint(keyring, 0, to)), relay.public[0])
        readable, _, _ = select.select([transceiver], [], [], FIRST_PACKET_WAIT_S)
        return bool(readable) and receive_forwarded(transceiver)[0] == client.getsockname()

    live = relay_udp()  # a call from before the rotation
    live.sendto(relay_stun(route_token.mint(old, 0, to)), relay.public[0])
    receive_forwarded(transceiver)

    grace_s = 3.0
    new = old.rotated(2, secrets.token_bytes(32), grace_s, now=time.time())
    write_private(path, new.to_text())
    relay.wait_metric("talkwire_relay_keyring_current_key", lambda v: v == 2 * 2)
    assert relay.metric("talkwire_relay_keyring_reloads_total", result="ok") == 2
    assert opens_a_flow(new) and opens_a_flow(old)  # both keys, during the grace

    relay.wait_metric("talkwire_relay_keyring_keys", lambda v: v == 2 * 1, timeout=grace_s + 10)
    drops = relay.metric("talkwire_relay_drops_total", reason="unknown_key")
    assert not opens_a_flow(old)
    assert relay.metric("talkwire_relay_drops_total", reason="unknown_key") == drops + 1
    assert opens_a_flow(new)
    live.sendto(RTP, relay.public[0])  # flows are not re-checked: the old call goes on
    assert receive_forwarded(transceiver)[:3] == (live.getsockname(), 0, RTP)

    path.write_text("1 nothex current\n")  # a bad edit: refused, the keys in use stay
    relay.wait_metric("talkwire_relay_keyring_reloads_total", lambda v: v == 2, result="error")
    assert relay.metric("talkwire_relay_keyring_current_key") == 2 * 2
    assert opens_a_flow(new)
    assert "keyring not reloaded" in relay.log() and new.keys[2].hex() not in relay.log()


def test_a_new_call_from_a_reused_client_address_reaches_its_own_transceiver(
    relay_start: Start,
    relay_udp: Udp,
    relay_keyring: KeyringFixture,
    relay_stun: Callable[..., bytes],
    relay_silence: Callable[..., None],
) -> None:
    keyring = relay_keyring[0]
    relay = relay_start()
    old, new = relay_udp(), relay_udp()  # the transceivers of the ended and the new call
    client = relay_udp()  # one address, as a NAT (or the OS) hands it out again
    client.sendto(relay_stun(route_token.mint(keyring, 0, old.getsockname())), relay.public[0])
    receive_forwarded(old)
    check = relay_stun(route_token.mint(keyring, 0, new.getsockname()))
    client.sendto(check, relay.public[0])  # the new call's first check, within the idle timeout
    assert receive_forwarded(new)[:3] == (client.getsockname(), 0, check)
    client.sendto(DTLS, relay.public[0])
    assert receive_forwarded(new)[:3] == (client.getsockname(), 0, DTLS)
    # The old call's transceiver still sends until its call times out: it must not
    # reach the new call's client, nor pull the flow back.
    old.sendto(pack_header(client.getsockname(), 0) + b"\x17old call", relay.internal[0])
    client.sendto(DTLS, relay.public[0])
    assert receive_forwarded(new)[:3] == (client.getsockname(), 0, DTLS)
    relay_silence(old, client)
    assert relay.wait_metric("talkwire_relay_drops_total", lambda v: v >= 1, reason="stale_hop")


def test_a_relay_started_after_a_grace_ended_refuses_that_key(
    relay_start: Start,
    relay_udp: Udp,
    relay_keyring: KeyringFixture,
    relay_stun: Callable[..., bytes],
    relay_silence: Callable[..., None],
) -> None:
    old, path = relay_keyring
    ended = old.rotated(2, secrets.token_bytes(32), grace_s=10, now=time.time() - 60)
    write_private(path, ended.to_text())  # the file still lists key 1, with a past until=
    relay = relay_start()
    transceiver = relay_udp()
    client = relay_udp()
    client.sendto(relay_stun(route_token.mint(old, 0, transceiver.getsockname())), relay.public[0])
    relay_silence(transceiver)
    assert relay.wait_metric("talkwire_relay_drops_total", lambda v: v == 1, reason="unknown_key")
    assert relay.metric("talkwire_relay_keyring_keys") == 1


def test_ipv6_listener(
    relay_start: Start,
    relay_udp: Udp,
    relay_keyring: KeyringFixture,
    relay_stun: Callable[..., bytes],
) -> None:
    relay = relay_start(listen=("127.0.0.1:0", "[::1]:0"))
    transceiver = relay_udp()
    client = relay_udp("::1")
    ufrag = route_token.mint(relay_keyring[0], 0, transceiver.getsockname())
    client.sendto(relay_stun(ufrag), relay.public[1])
    who, ingress, _, relay_internal = receive_forwarded(transceiver)
    assert who == client.getsockname()[:2] and ingress == 1
    client.sendto(DTLS, relay.public[1])
    assert receive_forwarded(transceiver)[:3] == (client.getsockname()[:2], 1, DTLS)
    transceiver.sendto(pack_header(client.getsockname(), 1) + b"reply", relay_internal)
    data, source = client.recvfrom(65536)
    assert data == b"reply" and source[:2] == relay.public[1]


def test_forged_tokens_produce_nothing_anywhere(
    relay_start: Start,
    relay_udp: Udp,
    relay_keyring: KeyringFixture,
    relay_stun: Callable[..., bytes],
    relay_silence: Callable[..., None],
) -> None:
    relay = relay_start()
    transceiver = relay_udp()
    client = relay_udp()
    address = transceiver.getsockname()
    genuine = route_token.mint(relay_keyring[0], 0, address)
    forged = {
        "bad_mac": genuine[:-1] + ("A" if genuine[-1] != "A" else "B"),
        "other secret": route_token.mint(route_token.Keyring.generate(1), 0, address),
        "unknown_cluster": route_token.mint(relay_keyring[0], 9, address),
        "unknown_key": route_token.mint(route_token.Keyring.generate(4), 0, address),
    }
    for ufrag in forged.values():
        client.sendto(relay_stun(ufrag), relay.public[0])
    client.sendto(DTLS, relay.public[0])  # no flow: must not pass either
    relay_silence(transceiver, client)

    client.sendto(relay_stun(genuine), relay.public[0])  # the relay still works
    assert receive_forwarded(transceiver)[0] == client.getsockname()
    assert relay.metric("talkwire_relay_drops_total", reason="bad_mac") == 2
    assert relay.metric("talkwire_relay_drops_total", reason="unknown_cluster") == 1
    assert relay.metric("talkwire_relay_drops_total", reason="unknown_key") == 1
    assert relay.metric("talkwire_relay_drops_total", reason="not_stun") == 1


def test_untrusted_return_source_reaches_no_one(
    relay_start: Start,
    relay_udp: Udp,
    relay_keyring: KeyringFixture,
    relay_stun: Callable[..., bytes],
    relay_silence: Callable[..., None],
) -> None:
    relay = relay_start("--trust", "127.0.0.1/32")
    transceiver = relay_udp("127.0.0.1")
    attacker = relay_udp("127.0.0.2")  # loopback too, but outside the trusted /32
    client = relay_udp()
    client.sendto(
        relay_stun(route_token.mint(relay_keyring[0], 0, transceiver.getsockname())),
        relay.public[0],
    )
    relay_internal = receive_forwarded(transceiver)[3]

    spoof = pack_header(client.getsockname(), 0) + b"spoofed"
    attacker.sendto(spoof, relay_internal)
    relay_silence(client, attacker, transceiver)

    transceiver.sendto(pack_header(client.getsockname(), 0) + b"genuine", relay_internal)
    assert client.recvfrom(65536)[0] == b"genuine"
    assert relay.metric("talkwire_relay_drops_total", reason="untrusted_source") == 1


def test_other_cluster_is_forwarded_to_its_ingress(
    relay_start: Start,
    relay_udp: Udp,
    relay_keyring: KeyringFixture,
    relay_stun: Callable[..., bytes],
) -> None:
    ingress_2 = relay_udp()
    host, port = ingress_2.getsockname()
    relay = relay_start("--cluster", "1", "--cluster-ingress", f"2={host}:{port}")
    client = relay_udp()
    # The token names a transceiver inside cluster 2; this relay cannot reach it directly.
    ufrag = route_token.mint(relay_keyring[0], 2, ("10.2.0.7", 3479))
    request = relay_stun(ufrag)
    client.sendto(request, relay.public[0])
    who, ingress, payload, _ = receive_forwarded(ingress_2)
    assert (who, ingress, payload) == (client.getsockname(), 0, request)
    client.sendto(RTP, relay.public[0])
    assert receive_forwarded(ingress_2)[2] == RTP


def test_a_global_relay_carries_a_client_to_the_region_and_its_replies_back(
    relay_start: Start,
    relay_udp: Udp,
    relay_keyring: KeyringFixture,
    relay_stun: Callable[..., bytes],
) -> None:
    # The global relay's internal port is fixed first: the region relay names it as its peer.
    probe = relay_udp()
    global_internal = probe.getsockname()
    probe.close()
    g_host, g_port = global_internal
    region = relay_start(
        "--cluster", "1",
        "--backbone", "127.0.0.1:0",
        "--backbone-peer", f"{g_host}:{g_port}",
    )  # fmt: skip
    backbone = region.info["backbone"]
    entry = relay_start(
        "--cluster", "0", "--cluster-ingress", f"1={backbone}",
        listen=("127.0.0.1:0", "127.0.0.2:0"),
        internal=f"{g_host}:{g_port}",
    )  # fmt: skip
    transceiver = relay_udp()
    client = relay_udp()
    request = relay_stun(route_token.mint(relay_keyring[0], 1, transceiver.getsockname()))

    # In through the global relay's second socket, out of the region relay to the
    # transceiver, the header naming the client and a virtual ingress.
    client.sendto(request, entry.public[1])
    who, ingress, payload, region_internal = receive_forwarded(transceiver)
    assert (who, payload) == (client.getsockname(), request)
    assert ingress == 1 + 0 * 16 + 1  # past the region's one socket: peer 0, its socket 1
    assert region_internal == region.internal[0]

    # The reply goes back the same way and leaves from the socket the client used.
    transceiver.sendto(pack_header(who, ingress) + b"\x17reply", region_internal)
    data, source = client.recvfrom(65536)
    assert (data, source) == (b"\x17reply", entry.public[1])

    # Media follows both flows, no STUN needed.
    client.sendto(RTP, entry.public[1])
    assert receive_forwarded(transceiver)[:3] == (client.getsockname(), ingress, RTP)
    assert region.metric("talkwire_relay_flows_created_total", source="stun") == 1
    assert entry.metric("talkwire_relay_flows_created_total", source="stun") == 1


def test_the_backbone_takes_only_its_peers(
    relay_start: Start,
    relay_udp: Udp,
    relay_keyring: KeyringFixture,
    relay_stun: Callable[..., bytes],
) -> None:
    region = relay_start("--backbone", "127.0.0.1:0", "--backbone-peer", "127.0.0.9:3479")
    host, _, port = region.info["backbone"].rpartition(":")
    stranger, transceiver = relay_udp(), relay_udp()
    request = relay_stun(route_token.mint(relay_keyring[0], 0, transceiver.getsockname()))
    stranger.sendto(pack_header(("198.51.100.1", 5000), 0) + request, (host, int(port)))
    region.wait_metric("talkwire_relay_drops_total", lambda v: v == 1, reason="untrusted_source")
    assert region.metric("talkwire_relay_flows") == 0


def test_verify_integrity_option(
    relay_start: Start,
    relay_udp: Udp,
    relay_keyring: KeyringFixture,
    relay_stun: Callable[..., bytes],
    relay_silence: Callable[..., None],
) -> None:
    relay = relay_start("--verify-integrity")
    transceiver = relay_udp()
    client = relay_udp()
    ufrag = route_token.mint(relay_keyring[0], 0, transceiver.getsockname())
    client.sendto(relay_stun(ufrag, password="wrong-password-wrong-password-xx"), relay.public[0])
    relay_silence(transceiver)
    client.sendto(
        relay_stun(ufrag, password=route_token.ice_password(relay_keyring[0], ufrag)),
        relay.public[0],
    )
    assert receive_forwarded(transceiver)[0] == client.getsockname()
    assert relay.metric("talkwire_relay_drops_total", reason="bad_integrity") == 1


def test_full_table_refuses_third_client_keeps_first_two(
    relay_start: Start,
    relay_udp: Udp,
    relay_keyring: KeyringFixture,
    relay_stun: Callable[..., bytes],
    relay_silence: Callable[..., None],
) -> None:
    relay = relay_start("--max-flows", "2")
    transceiver = relay_udp()
    ufrag = route_token.mint(relay_keyring[0], 0, transceiver.getsockname())
    clients = [relay_udp() for _ in range(3)]
    for client in clients[:2]:
        client.sendto(relay_stun(ufrag), relay.public[0])
        assert receive_forwarded(transceiver)[0] == client.getsockname()
    clients[2].sendto(relay_stun(ufrag), relay.public[0])
    relay_silence(transceiver)
    for client in clients[:2]:
        client.sendto(DTLS, relay.public[0])
        assert receive_forwarded(transceiver)[:3] == (client.getsockname(), 0, DTLS)
    assert relay.metric("talkwire_relay_drops_total", reason="table_full") == 1
    assert relay.metric("talkwire_relay_flows") == 2


def test_a_flood_of_valid_first_packets_from_many_addresses_evicts_no_live_flow(
    relay_start: Start,
    relay_udp: Udp,
    relay_keyring: KeyringFixture,
    relay_stun: Callable[..., bytes],
) -> None:
    """Each flooder holds a real token (sniffed off the wire), so each request
    would create a flow; all of 127/8 is loopback, so the addresses are real."""
    relay = relay_start("--max-flows", "40", "--new-flows-per-prefix", "5/10")
    transceiver = relay_udp()
    request = relay_stun(route_token.mint(relay_keyring[0], 0, transceiver.getsockname()))
    live = relay_udp()
    live.sendto(request, relay.public[0])
    assert receive_forwarded(transceiver)[0] == live.getsockname()
    one_prefix = [relay_udp(f"127.1.0.{i}") for i in range(1, 101)]  # one host's /24
    many_prefixes = [relay_udp(f"127.2.{i}.1") for i in range(60)]
    for flooder in one_prefix + many_prefixes:
        flooder.sendto(request, relay.public[0])
    full = relay.wait_metric("talkwire_relay_drops_total", lambda v: v > 0, reason="table_full")
    limited = relay.metric("talkwire_relay_drops_total", reason="rate_limited")
    # The /24 got its burst of 10 (plus what refilled while the flood went by)...
    assert 85 <= limited <= 90
    # ...the other prefixes filled the table, and the rest were refused, not evicting.
    assert relay.metric("talkwire_relay_flows") == 40
    assert limited + full == len(one_prefix) + len(many_prefixes) - 39
    live.sendto(DTLS, relay.public[0])
    for _ in range(41):  # the 39 admitted flooders' requests are ahead of it
        client, _, payload, _ = receive_forwarded(transceiver)
        if client == live.getsockname():
            assert payload == DTLS
            break
    else:
        raise AssertionError("the live flow's datagram was not forwarded")


def test_idle_flow_expires(
    relay_start: Start,
    relay_udp: Udp,
    relay_keyring: KeyringFixture,
    relay_stun: Callable[..., bytes],
    relay_silence: Callable[..., None],
) -> None:
    relay = relay_start("--idle-timeout", "1")
    transceiver = relay_udp()
    client = relay_udp()
    client.sendto(
        relay_stun(route_token.mint(relay_keyring[0], 0, transceiver.getsockname())),
        relay.public[0],
    )
    receive_forwarded(transceiver)
    relay.wait_metric("talkwire_relay_flows", lambda v: v == 1)
    relay.wait_metric("talkwire_relay_flows", lambda v: v == 0)
    assert relay.metric("talkwire_relay_flows_expired_total") == 1
    client.sendto(DTLS, relay.public[0])
    relay_silence(transceiver)
    assert relay.metric("talkwire_relay_drops_total", reason="not_stun") == 1


def _garbage(rng: random.Random, ufrag: str) -> bytes:
    """One hostile datagram: random bytes, or STUN-shaped with something wrong."""
    kind = rng.randrange(6)
    if kind == 0:
        return b""
    if kind == 1:
        return rng.randbytes(rng.randrange(1, 300))
    if kind == 2:  # DTLS/RTP-looking from a client without a flow
        return bytes([rng.choice((22, 23, 0x80, 0x90))]) + rng.randbytes(rng.randrange(40))
    body = rng.randbytes(4 * rng.randrange(12))
    length = len(body) if rng.random() < 0.5 else rng.randrange(65536)
    header = struct.pack("!HHI12s", 0x0001, length, stun.MAGIC_COOKIE, rng.randbytes(12))
    if kind == 3:  # bad lengths and attribute walks
        return header + body
    if kind == 4:  # a well-formed request with a random ice-char username
        chars = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
        name = "".join(rng.choice(chars) for _ in range(32)) + ":abcd"
    else:  # the genuine ufrag with one char changed
        i = rng.randrange(len(ufrag))
        name = ufrag[:i] + ("A" if ufrag[i] != "A" else "B") + ufrag[i + 1 :] + ":abcd"
    attr = name.encode()
    attr = struct.pack("!HH", 0x0006, len(attr)) + attr + bytes(-len(attr) % 4)
    return struct.pack("!HHI12s", 0x0001, len(attr), stun.MAGIC_COOKIE, rng.randbytes(12)) + attr


def test_garbage_flood_leaves_relay_and_flow_intact(
    relay_start: Start,
    relay_udp: Udp,
    relay_keyring: KeyringFixture,
    relay_stun: Callable[..., bytes],
) -> None:
    relay = relay_start()
    transceiver = relay_udp()
    client = relay_udp()
    ufrag = route_token.mint(relay_keyring[0], 0, transceiver.getsockname())
    client.sendto(relay_stun(ufrag), relay.public[0])
    relay_internal = receive_forwarded(transceiver)[3]
    flooders = [relay_udp() for _ in range(8)]
    rng = random.Random(3)
    total, chunk = 20_000, 100
    for round_ in range(total // chunk):
        for i in range(chunk):
            flooders[i % len(flooders)].sendto(_garbage(rng, ufrag), relay.public[0])
        # Some garbage at the return port too, from a trusted source.
        transceiver.sendto(rng.randbytes(rng.randrange(60)), relay_internal)
        # The probe follows the chunk through the same socket queue: when it
        # arrives, the chunk has been handled, and the queue never overflows.
        probe = RTP + round_.to_bytes(4, "big")
        client.sendto(probe, relay.public[0])
        assert receive_forwarded(transceiver)[:3] == (client.getsockname(), 0, probe)

    transceiver.sendto(pack_header(client.getsockname(), 0) + b"still here", relay_internal)
    assert client.recvfrom(65536)[0] == b"still here"
    rounds = total // chunk
    # Every datagram of the flood was dropped and counted, none by the kernel.
    relay.wait_metric("talkwire_relay_drops_total", lambda v: v == total + rounds)
    metrics = relay.metrics()
    drops = {
        dict(labels)["reason"]: value
        for (name, labels), value in metrics.items()
        if name == "talkwire_relay_drops_total"
    }
    for reason in ("too_short", "not_stun", "malformed_stun", "bad_token", "bad_mac"):
        assert drops[reason] > 0, (reason, drops)
    assert metrics[("talkwire_relay_flows", ())] == 1
    assert metrics[("talkwire_relay_flows_created_total", (("source", "stun"),))] == 1
    assert relay.proc.poll() is None


def test_status_endpoints(relay_start: Start) -> None:
    import urllib.request

    relay = relay_start()
    host, port = relay.metrics_address
    with urllib.request.urlopen(f"http://{host}:{port}/healthz", timeout=5) as reply:
        assert reply.status == 200 and reply.read() == b"ok\n"
    assert relay.metric("talkwire_relay_workers_alive") == 1


@pytest.mark.parametrize("sig", ["SIGTERM", "SIGINT"])
def test_signal_stops_cleanly(relay_start: Start, sig: str) -> None:
    import signal

    relay = relay_start(workers=2)
    assert relay.terminate(getattr(signal, sig)) == 0


def test_a_config_file_configures_the_relay_and_the_command_line_wins(
    relay_start: Start, tmp_path: Path
) -> None:
    config = tmp_path / "talkwire.toml"
    config.write_text(
        "[relay]\n"
        'listen = ["127.0.0.1:0", "[::1]:0"]\n'
        'internal = "127.0.0.1:0"\n'
        "workers = 2\n"
        'metrics = "127.0.0.1:0"\n'
        "\n[transceiver]\n"  # another command's table: not the relay's business
        'region = "eu"\n'
    )
    # The fixture adds --keyring, --internal and --workers 1, nothing else.
    relay = relay_start("--config", str(config), listen=(), metrics=False)
    assert len(relay.public) == 2  # from the file
    assert len(relay.info["pids"]) == 1  # the command line's --workers 1 won
    assert relay.metric("talkwire_relay_workers_alive") == 1  # --metrics from the file
