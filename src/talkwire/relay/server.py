"""The relay supervisor: starts the workers, serves /metrics, stops on SIGTERM/SIGINT.

Worker 0 binds first so that port 0 in ``--listen`` resolves to one concrete
port the others then share through SO_REUSEPORT. Workers are forked; each
holds its own sockets, reads a stop pipe (EOF also arrives if the supervisor
is killed, so no worker outlives it) and writes its counters to one row of a
shared-memory array. Sibling workers exchange flow announcements over unix
datagram socket pairs created here before forking: private to the relay, no
names in any namespace.
"""

from __future__ import annotations

import ctypes
import json
import logging
import multiprocessing
import multiprocessing.connection
import os
import signal
import socket
import sys
import time
from collections.abc import MutableSequence
from dataclasses import dataclass
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess
from types import FrameType
from typing import Any, TextIO, cast

from talkwire.config import format_address
from talkwire.errors import ConfigError
from talkwire.keyring_watch import KeyringWatch
from talkwire.relay.config import RelayConfig
from talkwire.relay.flows import FlowStore, FlowTable
from talkwire.relay.metrics import SLOTS
from talkwire.relay.router import Router, RouterSettings, ingress_count
from talkwire.relay.status import StatusServer
from talkwire.relay.workers import forward, open_worker_sockets
from talkwire.route_token import Keyring

log = logging.getLogger(__name__)

STARTUP_TIMEOUT = 30.0
STOP_TIMEOUT = 5.0
_Row = ctypes.c_uint64 * SLOTS


def build_router(config: RelayConfig, keyring: Keyring, store: FlowStore | None = None) -> Router:
    """The router a worker runs with (also what a benchmark builds in-process)."""
    table = FlowTable(
        ingress_count(len(config.listen), len(config.backbone_peers)),
        capacity=config.max_flows,
        idle_timeout=config.idle_timeout,
    )
    settings = RouterSettings(
        keyring=keyring,
        cluster=config.cluster,
        ingress_families=config.ingress_families,
        internal_family=config.internal_family,
        cluster_ingress=config.cluster_ingress,
        trusted=config.trusted,
        verify_integrity=config.verify_integrity,
        new_flows_per_prefix=config.new_flows_per_prefix,
        backbone_peers=config.backbone_peers,
    )
    return Router(settings, table, store=store)


@dataclass
class _WorkerPlan:
    """What one forked worker needs; everything else inherited is closed."""

    index: int
    listen: tuple[tuple[str, int], ...]
    backbone: tuple[str, int] | None
    ready: Connection
    peer_rx: socket.socket | None
    peer_tx: list[socket.socket]
    close_after_fork: list[socket.socket]


def _row(stats: Any, index: int) -> MutableSequence[int]:
    # A ctypes view of one worker's row: indexable and slice-assignable like a
    # list, which is all the workers and the collector use.
    return cast(MutableSequence[int], _Row.from_buffer(stats, index * ctypes.sizeof(_Row)))


def _worker_main(
    plan: _WorkerPlan, config: RelayConfig, keyring: Keyring, stats: Any, stop_r: int, stop_w: int
) -> None:
    # Only the supervisor reacts to signals; workers stop when the stop pipe says so.
    signal.set_wakeup_fd(-1)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    os.close(stop_w)  # else the pipe would never report EOF when the supervisor dies
    for sock in plan.close_after_fork:
        sock.close()
    if config.pin_cpus:
        cpus = sorted(os.sched_getaffinity(0))
        os.sched_setaffinity(0, {cpus[plan.index % len(cpus)]})
    internal = config.internal_address(plan.index)
    try:
        socks = open_worker_sockets(
            plan.listen, internal, config.socket_buffer, backbone=plan.backbone
        )
    except OSError as exc:
        backbone = (plan.backbone,) if plan.backbone else ()
        wanted = ", ".join(format_address(a) for a in (*plan.listen, internal, *backbone))
        plan.ready.send(("error", f"cannot bind {wanted}: {exc.strerror or exc}"))
        return
    socks.peer_rx = plan.peer_rx
    socks.peer_tx = plan.peer_tx
    store = None
    if config.flow_cache is not None:
        # Here, after the fork: the cache owns a thread, which a fork would not carry.
        from talkwire.relay.flow_cache import RedisFlowCache  # noqa: PLC0415 (optional extra)

        store = RedisFlowCache(config.flow_cache, config.cluster)
        store.start()
    # The watch's keyring, not the raw one: a key whose grace ended before this
    # start must not be accepted until the file next changes.
    keys = KeyringWatch(config.keyring_path, keyring)
    router = build_router(config, keys.keyring, store)
    row = _row(stats, plan.index)
    plan.ready.send(
        (
            "ready",
            [sock.getsockname()[:2] for sock in socks.public],
            socks.internal.getsockname()[:2],
            socks.backbone.getsockname()[:2] if socks.backbone is not None else None,
        )
    )
    plan.ready.close()
    try:
        forward(socks, router, stop_r, row, keys=keys)
    finally:
        socks.close()
        if store is not None:
            store.close()


class Supervisor:
    """Owns the worker processes, the status server and the shutdown."""

    def __init__(self, config: RelayConfig, keyring: Keyring, out: TextIO = sys.stdout) -> None:
        self.config = config
        self.keyring = keyring
        self.out = out
        self._ctx = multiprocessing.get_context("fork")
        self._stats = self._ctx.RawArray(ctypes.c_uint64, config.workers * SLOTS)
        self.rows = [_row(self._stats, i) for i in range(config.workers)]
        self.processes: list[BaseProcess] = []
        self._signalled: int | None = None
        self._status: StatusServer | None = None

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        self._signalled = signum

    def alive(self) -> list[bool]:
        return [p.is_alive() for p in self.processes]

    def run(self) -> int:
        wake_r, wake_w = socket.socketpair()
        wake_r.setblocking(False)
        wake_w.setblocking(False)
        previous = {
            sig: signal.signal(sig, self._on_signal) for sig in (signal.SIGTERM, signal.SIGINT)
        }
        old_wakeup = signal.set_wakeup_fd(wake_w.fileno())
        stop_r, stop_w = os.pipe()
        try:
            info = self._start(stop_r, stop_w, [wake_r, wake_w])
            os.close(stop_r)
            stop_r = -1
            if info is None:
                return 0  # signalled during startup
            self._announce(info)
            return self._wait(wake_r)
        finally:
            os.close(stop_w)  # EOF: every worker leaves its loop
            if stop_r >= 0:
                os.close(stop_r)
            self._stop_workers()
            if self._status is not None:
                self._status.close()
            signal.set_wakeup_fd(old_wakeup)
            for sig, handler in previous.items():
                signal.signal(sig, handler)
            wake_r.close()
            wake_w.close()
            if self.config.ready_file:
                _remove(self.config.ready_file)

    def _start(
        self, stop_r: int, stop_w: int, wake: list[socket.socket]
    ) -> dict[str, object] | None:
        n = self.config.workers
        pairs = (
            [socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM) for _ in range(n)]
            if n > 1
            else []
        )
        for rx, tx in pairs:
            rx.setblocking(False)
            tx.setblocking(False)
        every = [s for pair in pairs for s in pair]
        try:
            listen = self.config.listen
            backbone = self.config.backbone
            internal: list[tuple[str, int]] = []
            public: list[tuple[str, int]] = []
            for index in range(n):
                keep = (
                    [pairs[index][0], *(pairs[j][1] for j in range(n) if j != index)]
                    if pairs
                    else []
                )
                reply_r, reply_w = self._ctx.Pipe(duplex=False)
                plan = _WorkerPlan(
                    index=index,
                    listen=listen,
                    backbone=backbone,
                    ready=reply_w,
                    peer_rx=pairs[index][0] if pairs else None,
                    peer_tx=keep[1:],
                    close_after_fork=[s for s in every if s not in keep] + wake,
                )
                process = self._ctx.Process(
                    target=_worker_main,
                    args=(plan, self.config, self.keyring, self._stats, stop_r, stop_w),
                    name=f"talkwire-relay-{index}",
                    daemon=True,
                )
                process.start()
                self.processes.append(process)
                reply_w.close()
                reply = self._await_ready(reply_r, process, wake[0])
                reply_r.close()
                if reply is None:
                    return None
                public, internal_address, backbone = reply
                internal.append(internal_address)
                # Port 0 resolved by worker 0; the others must share those exact ports.
                listen = tuple(public)
        finally:
            for sock in every:
                sock.close()
        if self.config.metrics:
            try:
                self._status = StatusServer(self.config.metrics, self.rows, self.alive)
            except OSError as exc:
                where = format_address(self.config.metrics)
                raise ConfigError(f"cannot bind --metrics {where}: {exc.strerror or exc}") from None
            self._status.start()
        return {
            "public": [format_address(a) for a in public],
            "internal": [format_address(a) for a in internal],
            "backbone": format_address(backbone) if backbone is not None else None,
            "metrics": format_address(self._status.address) if self._status else None,
            "pids": [p.pid for p in self.processes],
        }

    def _await_ready(
        self, reply: Connection, process: BaseProcess, wake: socket.socket
    ) -> tuple[list[tuple[str, int]], tuple[str, int], tuple[str, int] | None] | None:
        deadline = time.monotonic() + STARTUP_TIMEOUT
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise ConfigError(f"worker {process.name} did not start in {STARTUP_TIMEOUT} s")
            ready = multiprocessing.connection.wait(
                [reply, process.sentinel, wake], timeout=remaining
            )
            if self._signalled is not None:
                return None
            if reply in ready:
                try:
                    kind, *rest = reply.recv()
                except EOFError:
                    raise ConfigError(f"worker {process.name} exited during startup") from None
                if kind == "error":
                    raise ConfigError(str(rest[0]))
                public, internal, backbone = rest
                return (
                    [tuple(a) for a in public],
                    tuple(internal),
                    tuple(backbone) if backbone is not None else None,
                )
            if process.sentinel in ready:
                raise ConfigError(f"worker {process.name} exited during startup")
            _drain(wake)

    def _announce(self, info: dict[str, object]) -> None:
        text = json.dumps(info, sort_keys=True)
        if self.config.ready_file:
            tmp = f"{self.config.ready_file}.tmp"
            try:
                with open(tmp, "w", encoding="utf-8") as f:
                    f.write(text + "\n")
                os.replace(tmp, self.config.ready_file)
            except OSError as exc:
                raise ConfigError(
                    f"cannot write --ready-file {self.config.ready_file}: {exc.strerror or exc}"
                ) from None
        print(f"ready {text}", file=self.out, flush=True)
        log.info("relay ready: %s", text)

    def _wait(self, wake: socket.socket) -> int:
        sentinels = {p.sentinel: p for p in self.processes}
        while self._signalled is None:
            ready = multiprocessing.connection.wait([*sentinels, wake])
            for item in ready:
                if item in sentinels:
                    process = sentinels[item]
                    log.error(
                        "relay worker %s exited with %s; stopping the relay",
                        process.name,
                        process.exitcode,
                    )
                    return 1
            _drain(wake)
        log.info("relay stopping on signal %d", self._signalled)
        return 0

    def _stop_workers(self) -> None:
        deadline = time.monotonic() + STOP_TIMEOUT
        for process in self.processes:
            process.join(max(0.0, deadline - time.monotonic()))
        for process in self.processes:
            if process.is_alive():
                log.warning("relay worker %s did not stop; killing it", process.name)
                process.kill()
                process.join()


def _drain(sock: socket.socket) -> None:
    try:
        while sock.recv(64):
            pass
    except BlockingIOError:
        return


def _remove(path: str) -> None:
    try:
        os.remove(path)
    except FileNotFoundError:
        return


def serve(config: RelayConfig, out: TextIO = sys.stdout) -> int:
    """Run a relay until SIGTERM/SIGINT (0) or a worker dies (1)."""
    keyring = Keyring.from_file(config.keyring_path)
    return Supervisor(config, keyring, out).run()
