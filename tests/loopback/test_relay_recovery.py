"""Relay restarts, several workers, and the command line."""

from __future__ import annotations

import json
import os
import select
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import redis

from talkwire import route_token
from talkwire.config import format_address
from talkwire.encap import HEADER_SIZE, pack_header, unpack_header
from talkwire.secret_files import write_private

DTLS = bytes([22, 0xFE, 0xFD]) + b"record" + bytes(20)

Start = Callable[..., Any]
Udp = Callable[..., socket.socket]
KeyringFixture = tuple[route_token.Keyring, Path]


def forwarded(transceiver: socket.socket) -> tuple[tuple[str, int], bytes, Any]:
    data, relay_internal = transceiver.recvfrom(65536)
    return unpack_header(data).client, data[HEADER_SIZE:], relay_internal


def restart_same_ports(relay: Any, start: Start, *extra: str) -> Any:
    """Kill the whole relay (SIGKILL) and start a new one on the very same ports."""
    relay.kill()
    (public,) = relay.public
    (internal,) = relay.internal
    return start(*extra, listen=(format_address(public),), internal=format_address(internal))


def test_restart_recovers_from_next_stun(
    relay_start: Start,
    relay_udp: Udp,
    relay_keyring: KeyringFixture,
    relay_stun: Callable[..., bytes],
    relay_silence: Callable[..., None],
) -> None:
    relay = relay_start()
    transceiver = relay_udp()
    client = relay_udp()
    request = relay_stun(route_token.mint(relay_keyring[0], 0, transceiver.getsockname()))
    client.sendto(request, relay.public[0])
    forwarded(transceiver)

    relay = restart_same_ports(relay, relay_start)
    client.sendto(DTLS, relay.public[0])
    relay_silence(transceiver)  # the new relay has no flow yet
    client.sendto(request, relay.public[0])  # the client's next consent check
    assert forwarded(transceiver)[:2] == (client.getsockname(), request)
    client.sendto(DTLS, relay.public[0])
    assert forwarded(transceiver)[:2] == (client.getsockname(), DTLS)


def _cached_flows(url: str) -> int:
    with redis.Redis.from_url(url) as client:
        return len(client.keys("talkwire:flow:*"))


def test_a_restarted_relay_with_the_flow_cache_forwards_media_before_any_stun(
    relay_start: Start,
    relay_udp: Udp,
    relay_keyring: KeyringFixture,
    relay_stun: Callable[..., bytes],
    redis_server: Any,
) -> None:
    cache = ("--flow-cache", redis_server.url)
    relay = relay_start(*cache)
    transceiver = relay_udp()
    client = relay_udp()
    request = relay_stun(route_token.mint(relay_keyring[0], 0, transceiver.getsockname()))
    client.sendto(request, relay.public[0])
    forwarded(transceiver)
    for _ in range(100):  # 5 s: the write happens on the cache's thread
        if _cached_flows(redis_server.url) == 1:
            break
        time.sleep(0.05)
    assert _cached_flows(redis_server.url) == 1

    relay = restart_same_ports(relay, relay_start, *cache)
    sent = 0
    for sent in range(1, 11):  # media every 20 ms, as a call sends it; no STUN, no return
        client.sendto(DTLS + bytes([sent]), relay.public[0])
        readable, _, _ = select.select([transceiver], [], [], 0.02)
        if readable:
            break
    who, payload, _ = forwarded(transceiver)
    assert who == client.getsockname() and payload.startswith(DTLS)
    assert sent <= 3, f"media resumed only at packet {sent}"  # the first asks the cache
    assert relay.metric("talkwire_relay_flows_created_total", source="store") == 1
    assert relay.metric("talkwire_relay_flows_created_total", source="stun") == 0


def test_a_relay_whose_flow_cache_is_down_forwards_all_the_same(
    relay_start: Start,
    relay_udp: Udp,
    relay_keyring: KeyringFixture,
    relay_stun: Callable[..., bytes],
    redis_server: Any,
) -> None:
    redis_server.kill()  # a cache that is configured but not there
    relay = relay_start("--flow-cache", redis_server.url)
    transceiver = relay_udp()
    client = relay_udp()
    request = relay_stun(route_token.mint(relay_keyring[0], 0, transceiver.getsockname()))
    client.sendto(request, relay.public[0])
    assert forwarded(transceiver)[:2] == (client.getsockname(), request)
    for index in range(50):
        client.sendto(DTLS + bytes([index]), relay.public[0])
        assert forwarded(transceiver)[1] == DTLS + bytes([index])
    relay_udp().sendto(DTLS, relay.public[0])  # an unknown client: asks the absent cache
    relay.wait_metric("talkwire_relay_flow_cache_errors_total", lambda v: v >= 1)
    assert relay.metric("talkwire_relay_workers_alive") == 1


def test_restart_recovers_from_first_return_packet(
    relay_start: Start,
    relay_udp: Udp,
    relay_keyring: KeyringFixture,
    relay_stun: Callable[..., bytes],
) -> None:
    relay = relay_start()
    transceiver = relay_udp()
    client = relay_udp()
    client.sendto(
        relay_stun(route_token.mint(relay_keyring[0], 0, transceiver.getsockname())),
        relay.public[0],
    )
    relay_internal = forwarded(transceiver)[2]

    relay = restart_same_ports(relay, relay_start)
    # The transceiver keeps sending where it always did; no STUN from the client.
    transceiver.sendto(pack_header(client.getsockname(), 0) + b"\x17data", relay_internal)
    data, source = client.recvfrom(65536)
    assert (data, source) == (b"\x17data", relay.public[0])
    client.sendto(DTLS, relay.public[0])
    assert forwarded(transceiver)[:2] == (client.getsockname(), DTLS)
    assert relay.metric("talkwire_relay_flows_created_total", source="return") == 1
    assert relay.metric("talkwire_relay_flows_created_total", source="stun") == 0


def test_two_workers_share_flows_learned_from_return_traffic(
    relay_start: Start, relay_udp: Udp
) -> None:
    relay = relay_start(workers=2)
    assert len(relay.internal) == 2 and relay.internal[0] != relay.internal[1]
    transceiver = relay_udp()
    clients = [relay_udp() for _ in range(16)]
    # Everything returns through worker 0, as after a restart where the
    # transceiver still talks to the port worker 0 now owns.
    for client in clients:
        transceiver.sendto(pack_header(client.getsockname(), 0) + b"hello", relay.internal[0])
        assert client.recvfrom(65536) == (b"hello", relay.public[0])
    via = set()
    for client in clients:
        client.sendto(DTLS, relay.public[0])
        who, payload, relay_internal = forwarded(transceiver)
        assert (who, payload) == (client.getsockname(), DTLS)
        via.add(relay_internal)
    # The kernel hashed some clients to worker 1, which only knew them from worker 0.
    assert via == set(relay.internal)
    assert relay.metric("talkwire_relay_flows_created_total", source="peer") >= 1


def test_two_workers_stun_and_return(
    relay_start: Start,
    relay_udp: Udp,
    relay_keyring: KeyringFixture,
    relay_stun: Callable[..., bytes],
) -> None:
    relay = relay_start(workers=2)
    transceiver = relay_udp()
    ufrag = route_token.mint(relay_keyring[0], 0, transceiver.getsockname())
    for _ in range(8):
        client = relay_udp()
        client.sendto(relay_stun(ufrag), relay.public[0])
        who, _, relay_internal = forwarded(transceiver)
        assert who == client.getsockname()
        transceiver.sendto(pack_header(who, 0) + b"answer", relay_internal)
        assert client.recvfrom(65536) == (b"answer", relay.public[0])


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "talkwire.cli", "relay", *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--listen", "1.2.3:9"], "--listen host '1.2.3' is not an IP address"),
        (["--listen", "::1:9"], "--listen"),
        (["--internal", "127.0.0.1:99999"], "--internal port 99999"),
        (["--trust", "10.0.0.0/33"], "--trust '10.0.0.0/33'"),
        (["--trust", "10.0.0.1/8"], "--trust '10.0.0.1/8'"),
        (["--cluster-ingress", "2:10.0.0.1:5"], "--cluster-ingress"),
        (["--cluster-ingress", "0=127.0.0.1:5"], "own cluster"),
        (["--cluster-ingress", "2=[::1]:5"], "address family"),
        (["--workers", "0"], "--workers 0"),
        (["--idle-timeout", "0"], "--idle-timeout"),
        (["--max-flows", "0"], "--max-flows"),
        (["--listen", "192.0.2.1:3478", "--internal", "127.0.0.1:0"], "cannot bind"),
    ],
)
def test_bad_flags_one_line_error(
    relay_keyring: KeyringFixture, flags: list[str], message: str
) -> None:
    result = run_cli("--keyring", str(relay_keyring[1]), "--workers", "1", *flags)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("talkwire relay: error:"), result.stderr
    assert message in lines[0]


def test_missing_keyring_one_line_error(tmp_path: Path) -> None:
    result = run_cli("--keyring", str(tmp_path / "absent"))
    assert result.returncode == 2
    assert result.stderr.strip().count("\n") == 0 and "--keyring" in result.stderr


def test_bad_keyring_one_line_error(tmp_path: Path) -> None:
    path = tmp_path / "keyring"
    write_private(path, "1 abcd current\n")
    result = run_cli("--keyring", str(path))
    assert result.returncode == 2
    assert result.stderr.strip().count("\n") == 0 and "secret is 2 bytes" in result.stderr


def test_metrics_port_in_use_one_line_error(relay_keyring: KeyringFixture, relay_udp: Udp) -> None:
    taken = socket.socket()
    try:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        where = format_address(taken.getsockname())
        result = run_cli(
            "--keyring",
            str(relay_keyring[1]),
            "--listen",
            "127.0.0.1:0",
            "--internal",
            "127.0.0.1:0",
            "--workers",
            "1",
            "--metrics",
            where,
        )
    finally:
        taken.close()
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith(f"talkwire relay: error: cannot bind --metrics {where}")


def test_ready_file_and_pinned_workers(relay_start: Start, tmp_path: Path) -> None:
    ready = tmp_path / "relay.ready"
    relay = relay_start("--ready-file", str(ready), "--pin-cpus", workers=2)
    assert json.loads(ready.read_text()) == relay.info
    allowed = sorted(os.sched_getaffinity(0))
    pinned = [os.sched_getaffinity(pid) for pid in relay.info["pids"]]
    assert pinned == [{allowed[i % len(allowed)]} for i in range(2)]
    assert relay.terminate() == 0
    assert not ready.exists()  # a stale ready file would mislead the next waiter


def test_worker_death_stops_the_relay(relay_start: Start) -> None:
    relay = relay_start(workers=2)
    os.kill(relay.info["pids"][1], signal.SIGKILL)
    assert relay.proc.wait(10) == 1
    relay.wait_gone()
