"""Fixtures for driving a real ``talkwire relay`` process over loopback UDP.

Relay fixtures and helpers are prefixed ``relay_``/``Relay`` so other
components' loopback fixtures can live beside them.
"""

from __future__ import annotations

import contextlib
import json
import os
import select
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import aioice.stun
import pytest
import pytest_asyncio
from prometheus_client.parser import text_string_to_metric_families
from servers import RedisServer

from talkwire import route_token
from talkwire.config import parse_address
from talkwire.secret_files import write_private
from talkwire.stack import Stack, StackConfig

RELAY_START_TIMEOUT = 20.0
RELAY_RECV_TIMEOUT = 2.0
# How long "nothing arrives" is awaited: the one place a timeout is the assertion.
RELAY_SILENCE = 0.3


class RelayProcess:
    """A relay subprocess in its own session (so a test can kill it whole)."""

    def __init__(self, args: list[str], log_path: Path) -> None:
        self.args = args
        self.log_path = log_path
        self._log = open(log_path, "ab")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "talkwire.cli", "relay", *args],
            stdout=subprocess.PIPE,
            stderr=self._log,
            start_new_session=True,
        )
        self.info = self._await_ready()
        self.public = [parse_address(a, allow_port_zero=False) for a in self.info["public"]]
        self.internal = [parse_address(a) for a in self.info["internal"]]
        self.metrics_address = (
            parse_address(self.info["metrics"]) if self.info.get("metrics") else None
        )
        self.pids: list[int] = [self.proc.pid, *self.info["pids"]]

    def _await_ready(self) -> dict[str, list[str]]:
        assert self.proc.stdout is not None
        deadline = time.monotonic() + RELAY_START_TIMEOUT
        line = b""
        while not line.endswith(b"\n"):
            remaining = deadline - time.monotonic()
            readable, _, _ = select.select([self.proc.stdout], [], [], max(0.0, remaining))
            if not readable:
                self.kill()
                raise AssertionError(f"relay not ready in time; log:\n{self.log()}")
            chunk = os.read(self.proc.stdout.fileno(), 4096)
            if not chunk:
                self.proc.wait(5)
                raise AssertionError(
                    f"relay exited ({self.proc.returncode}) before ready; log:\n{self.log()}"
                )
            line += chunk
        word, _, payload = line.decode().partition(" ")
        assert word == "ready", line
        info: dict[str, list[str]] = json.loads(payload)
        return info

    def log(self) -> str:
        self._log.flush()
        return self.log_path.read_text(errors="replace")

    def metrics(self) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
        """Every sample, keyed by (name, sorted labels without ``worker``), summed over workers."""
        assert self.metrics_address is not None, "start the relay with --metrics"
        host, port = self.metrics_address
        with urllib.request.urlopen(f"http://{host}:{port}/metrics", timeout=5) as reply:
            text = reply.read().decode()
        samples: dict[tuple[str, tuple[tuple[str, str], ...]], float] = {}
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                labels = tuple(sorted((k, v) for k, v in sample.labels.items() if k != "worker"))
                key = (sample.name, labels)
                samples[key] = samples.get(key, 0.0) + sample.value
        return samples

    def metric(self, name: str, **labels: str) -> float:
        """Sum of the samples of ``name`` whose labels include ``labels`` (all workers)."""
        wanted = set(labels.items())
        return sum(
            value
            for (sample, have), value in self.metrics().items()
            if sample == name and wanted <= set(have)
        )

    def wait_metric(
        self, name: str, predicate: Callable[[float], bool], timeout: float = 10.0, **labels: str
    ) -> float:
        """Poll /metrics (bounded) until ``predicate`` holds; counters publish every tick."""
        deadline = time.monotonic() + timeout
        while True:
            value = self.metric(name, **labels)
            if predicate(value):
                return value
            if time.monotonic() > deadline:
                raise AssertionError(f"{name}{labels} stayed at {value}")
            time.sleep(0.05)

    def terminate(self, sig: int = signal.SIGTERM, timeout: float = 10.0) -> int:
        self.proc.send_signal(sig)
        code = self.proc.wait(timeout)
        self.wait_gone()
        return code

    def kill(self) -> None:
        """SIGKILL every process of the relay at once, as a crash or an OOM kill would."""
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(10)
        self.wait_gone()

    def wait_gone(self, timeout: float = 10.0) -> None:
        # Workers must be gone before a restart binds the same SO_REUSEPORT ports,
        # or the kernel would hash some packets to a dying socket.
        deadline = time.monotonic() + timeout
        while any(_running(pid) for pid in self.pids):
            if time.monotonic() > deadline:
                raise AssertionError(f"relay processes {self.pids} still running")
            time.sleep(0.02)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.kill()
        else:
            self.wait_gone()
        if self.proc.stdout is not None:
            self.proc.stdout.close()
        self._log.close()


def _running(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return False
    return state not in ("Z", "X")


@pytest.fixture
def relay_keyring(tmp_path: Path) -> tuple[route_token.Keyring, Path]:
    keyring = route_token.Keyring.generate(key_id=1)
    path = tmp_path / "relay-keyring.txt"
    write_private(path, keyring.to_text())
    return keyring, path


@pytest.fixture
def relay_start(
    relay_keyring: tuple[route_token.Keyring, Path], tmp_path: Path
) -> Iterator[Callable[..., RelayProcess]]:
    """Start relays; every one is killed at teardown. Defaults: one worker, loopback, ephemeral."""
    started: list[RelayProcess] = []

    def start(
        *extra: str,
        listen: tuple[str, ...] = ("127.0.0.1:0",),
        workers: int = 1,
        internal: str = "127.0.0.1:0",
        metrics: bool = True,
    ) -> RelayProcess:
        args = [
            "--keyring",
            str(relay_keyring[1]),
            "--internal",
            internal,
            "--workers",
            str(workers),
        ]
        for address in listen:
            args += ["--listen", address]
        if metrics:
            args += ["--metrics", "127.0.0.1:0"]
        relay = RelayProcess([*args, *extra], tmp_path / f"relay-{len(started)}.log")
        started.append(relay)
        return relay

    yield start
    for relay in started:
        relay.stop()


@pytest.fixture
def relay_udp() -> Iterator[Callable[[str], socket.socket]]:
    """UDP sockets bound to an ephemeral loopback port, closed at teardown."""
    opened: list[socket.socket] = []

    def make(host: str = "127.0.0.1") -> socket.socket:
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_DGRAM)
        opened.append(sock)
        sock.bind((host, 0))
        sock.settimeout(RELAY_RECV_TIMEOUT)
        return sock

    yield make
    for sock in opened:
        sock.close()


def _binding_request(ufrag: str, password: str | None = None) -> bytes:
    """A client's first check: binding request with USERNAME '<server ufrag>:abcd'."""
    message = aioice.stun.Message(
        message_method=aioice.stun.Method.BINDING, message_class=aioice.stun.Class.REQUEST
    )
    message.attributes["USERNAME"] = f"{ufrag}:abcd"
    message.attributes["PRIORITY"] = 1853824767
    message.attributes["ICE-CONTROLLING"] = 1
    if password is None:
        message.add_fingerprint()
    else:
        message.add_message_integrity(password.encode("ascii"))
    return bytes(message)


def _silence(*socks: socket.socket, timeout: float = RELAY_SILENCE) -> None:
    """Assert that nothing arrives on any of ``socks`` within ``timeout``."""
    readable, _, _ = select.select(list(socks), [], [], timeout)
    got = [(s.getsockname(), s.recvfrom(65536)) for s in readable]
    assert not got, f"unexpected datagrams: {got}"


@pytest.fixture
def relay_stun() -> Callable[..., bytes]:
    """Builds a binding request (aioice's encoder) for a server ufrag, optionally signed."""
    return _binding_request


@pytest.fixture
def relay_silence() -> Callable[..., None]:
    """Asserts that no datagram reaches the given sockets within a short wait."""
    return _silence


BENCH_DIR = Path(__file__).resolve().parents[2] / "bench"
BENCH_TIMEOUT = 240.0


def _run_bench(script: str, args: list[str]) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(
        [sys.executable, str(BENCH_DIR / script), *args],
        capture_output=True,
        text=True,
        timeout=BENCH_TIMEOUT,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return done


@pytest.fixture
def bench_run() -> Callable[[str, list[str]], subprocess.CompletedProcess[str]]:
    """Runs ``bench/<script>`` with ``args`` to the end; fails with its stderr if it fails."""
    return _run_bench


def free_tcp_port() -> int:
    """A loopback TCP port nothing listens on now (for servers that cannot take port 0)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


@pytest.fixture
def tcp_port() -> int:
    return free_tcp_port()


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path, port=free_tcp_port())
    yield server
    server.kill()


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def stack() -> AsyncIterator[Stack]:
    """The one-machine stack with its defaults, shared by a module (modules may override it)."""
    stack = Stack(StackConfig(http_port=0, relay_port=0, demo=False))
    await stack.start()
    yield stack
    await stack.stop()
