"""The transceiver process: the shared UDP socket, its calls, capacity, drain."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import aiohttp
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from talkwire import route_token
from talkwire.internal_auth import bearer
from talkwire.keyring_watch import POLL_INTERVAL_S, KeyringWatch
from talkwire.relay.router import LOOPBACK, Network
from talkwire.route_token import Keyring
from talkwire.transceiver.demux import Address
from talkwire.transceiver.ice import RelayBinding
from talkwire.transceiver.load import LoadGauge, LoadLimits, measure
from talkwire.transceiver.session import Call
from talkwire.transceiver.udp import SharedSocket

log = logging.getLogger(__name__)


@dataclass
class TransceiverConfig:
    keyring: Keyring
    public_addresses: list[Address]  # the relay's, in its ingress order
    udp_listen: Address = ("127.0.0.1", 0)
    # Where relays reach this process (goes into every route token);
    # defaults to the bound UDP address.
    udp_advertise: Address | None = None
    cluster: int = 0
    capacity: int = 100
    connect_timeout: float = 10.0
    drain_timeout: float = 30.0
    region: str = "local"
    # Relay networks allowed to send to the UDP socket (the relay's --trust mirrored).
    trusted_relays: tuple[Network, ...] = LOOPBACK
    id: str = field(default_factory=lambda: "tx-" + secrets.token_hex(4))
    load_limits: LoadLimits = field(default_factory=LoadLimits)
    # Answering is CPU work (~7 ms) on the loop every live call's audio shares:
    # a burst of offers is answered a few at a time, and one past the queue is refused.
    concurrent_setups: int = 2
    queued_setups: int = 64
    # Required from signaling on /calls*, sent to agents (internal_auth); None: open.
    internal_secret: str | None = None
    # The keyring's file: polled, so a rotation reaches new calls without a restart.
    keyring_path: str | None = None


class Unavailable(Exception):
    """No new calls: draining, at capacity or overloaded (``reason`` names which)."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.calls = Counter(
            "talkwire_transceiver_calls", "Calls by how they ended", ["reason"],
            registry=self.registry,
        )  # fmt: skip
        self.active = Gauge(
            "talkwire_transceiver_active_calls", "Calls in progress", registry=self.registry
        )
        self.connect_seconds = Histogram(
            "talkwire_transceiver_connect_seconds",
            "Offer received to DTLS connected",
            buckets=(0.005, 0.01, 0.02, 0.03, 0.05, 0.075, 0.1, 0.2, 0.5, 1, 2, 5, 10),
            registry=self.registry,
        )
        self.audio_frames = Counter(
            "talkwire_transceiver_audio_frames", "20 ms audio frames", ["direction"],
            registry=self.registry,
        )  # fmt: skip
        self.errors = Counter(
            "talkwire_transceiver_errors", "Errors by kind", ["kind"], registry=self.registry
        )
        self.refused = Counter(
            "talkwire_transceiver_refused_calls", "New calls refused, by why", ["reason"],
            registry=self.registry,
        )  # fmt: skip
        self.load = Gauge(
            "talkwire_transceiver_load", "Smoothed load: cpu (share of a core), lag_seconds",
            ["measure"], registry=self.registry,
        )  # fmt: skip
        self.udp = Gauge(
            "talkwire_transceiver_udp_packets", "Shared socket counters", ["counter"],
            registry=self.registry,
        )  # fmt: skip
        self.keyring_current = Gauge(
            "talkwire_transceiver_keyring_current_key", "Key id new route tokens carry",
            registry=self.registry,
        )  # fmt: skip
        self.keyring_reloads = Counter(
            "talkwire_transceiver_keyring_reloads",
            "Keyring file changes: taken (ok) or refused and the old keys kept (error)",
            ["result"], registry=self.registry,
        )  # fmt: skip


class Transceiver:
    def __init__(self, config: TransceiverConfig) -> None:
        self.config = config
        self.metrics = Metrics()
        self.calls: dict[str, Call] = {}
        self.draining = False
        self._socket: SharedSocket | None = None
        self._http: aiohttp.ClientSession | None = None
        self._supervisors: set[asyncio.Task[None]] = set()
        self._idle = asyncio.Event()
        self._idle.set()
        self.load = LoadGauge(config.load_limits)
        self._setups = asyncio.Semaphore(config.concurrent_setups)
        self._queued_setups = 0
        self._measuring: asyncio.Task[None] | None = None
        self._watching: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self._socket = await SharedSocket.bind(*self.config.udp_listen, self.config.trusted_relays)
        self._http = aiohttp.ClientSession(headers=bearer(self.config.internal_secret))
        self._measuring = asyncio.create_task(measure(self.load), name="load-gauge")
        self.metrics.keyring_current.set(self.config.keyring.current)
        if self.config.keyring_path is not None:
            # This task's sleep paces the polls: the watch's own pacing would skip some.
            watch = KeyringWatch(self.config.keyring_path, self.config.keyring, interval_s=0.0)
            self.config.keyring = watch.keyring  # without the keys whose grace has ended
            self._watching = asyncio.create_task(self._watch_keyring(watch), name="keyring")

    async def _watch_keyring(self, watch: KeyringWatch) -> None:
        reloads = errors = 0
        while True:
            await asyncio.sleep(POLL_INTERVAL_S)
            if watch.poll(time.monotonic()):
                self.config.keyring = watch.keyring  # the next mint uses it
                self.metrics.keyring_current.set(watch.keyring.current)
            self.metrics.keyring_reloads.labels("ok").inc(watch.reloads - reloads)
            self.metrics.keyring_reloads.labels("error").inc(watch.errors - errors)
            reloads, errors = watch.reloads, watch.errors

    @property
    def udp_address(self) -> Address:
        assert self._socket is not None
        return self.config.udp_advertise or self._socket.address

    @property
    def shared_socket(self) -> SharedSocket:
        assert self._socket is not None
        return self._socket

    def health(self) -> dict[str, Any]:
        return {
            "id": self.config.id,
            "region": self.config.region,
            "cluster": self.config.cluster,
            "capacity": self.config.capacity,
            "active": len(self.calls),
            "draining": self.draining,
            "load": round(self.load.cpu, 3),
            "overloaded": self.load.overload is not None,
        }

    async def create_call(
        self, call_id: str, offer_sdp: str, session: dict[str, Any], agent_url: str
    ) -> Call:
        """Answer an offer; raises OfferError (bad offer) or Unavailable."""
        try:
            self._admit(call_id)
            async with self._setup_turn():
                self._admit(call_id)  # again: waiting may have changed the answer
                return await self._answer(call_id, offer_sdp, session, agent_url)
        except Unavailable as exc:
            self.metrics.refused.labels(exc.reason).inc()
            raise

    @contextlib.asynccontextmanager
    async def _setup_turn(self) -> AsyncIterator[None]:
        if self._queued_setups >= self.config.queued_setups:
            raise Unavailable("busy", f"{self._queued_setups} call setups are already waiting")
        self._queued_setups += 1
        try:
            await self._setups.acquire()
        finally:
            self._queued_setups -= 1
        try:
            yield
        finally:
            self._setups.release()

    async def _answer(
        self, call_id: str, offer_sdp: str, session: dict[str, Any], agent_url: str
    ) -> Call:
        assert self._http is not None
        ufrag = route_token.mint(self.config.keyring, self.config.cluster, self.udp_address)
        binding = RelayBinding(
            ufrag=ufrag,
            password=route_token.ice_password(self.config.keyring, ufrag),
            public_addresses=self.config.public_addresses,
            shared=self.shared_socket,
        )
        session = {**session, "talkwire": {"call_id": call_id}}
        call = Call(call_id, session, agent_url, binding, self._http, self.config.connect_timeout)
        self.calls[call_id] = call
        self._idle.clear()
        self.metrics.active.set(len(self.calls))
        try:
            await call.answer(offer_sdp)
        except BaseException:
            await self._finish(call, "rejected")
            raise
        task = asyncio.create_task(self._supervise(call), name=f"{call_id}:supervisor")
        self._supervisors.add(task)
        task.add_done_callback(self._supervisors.discard)
        return call

    def _admit(self, call_id: str) -> None:
        if self.draining:
            raise Unavailable("draining", "transceiver is draining")
        # A hung-up call still closing (ms) does not hold its place: the caller
        # who hung up may call again at once, and signaling counted it as free.
        live = sum(1 for call in self.calls.values() if call.end_reason is None)
        if live >= self.config.capacity:
            raise Unavailable("capacity", "transceiver is at capacity")
        overload = self.load.overload
        if overload is not None:
            raise Unavailable("overloaded", f"transceiver is overloaded: {overload}")
        if call_id in self.calls:
            raise Unavailable("duplicate", f"call {call_id} already exists")

    async def hangup(self, call_id: str) -> bool:
        call = self.calls.get(call_id)
        if call is None:
            return False
        call.end("hangup")
        return True

    async def _supervise(self, call: Call) -> None:
        try:
            await call.wait_ended()
        finally:
            await self._finish(call, call.end_reason or "cancelled")

    async def _finish(self, call: Call, reason: str) -> None:
        await call.close(reason)
        if self.calls.get(call.call_id) is call:
            del self.calls[call.call_id]
        self.metrics.calls.labels(call.end_reason or reason).inc()
        self.metrics.active.set(len(self.calls))
        if call.timings.dtls_connected is not None:
            self.metrics.connect_seconds.observe(call.timings.dtls_connected - call.timings.offer)
        audio = call.audio_stats()
        self.metrics.audio_frames.labels("in").inc(audio["frames_to_agent"])
        self.metrics.audio_frames.labels("out").inc(audio["frames_played"])
        for step in call.close_timeouts:
            self.metrics.errors.labels(f"close_timeout:{step}").inc()
        if call.end_reason not in ("hangup", "connection_closed", "agent_closed", "shutdown"):
            self.metrics.errors.labels(call.end_reason or reason).inc()
        log.info(
            "call %s ended: %s, timings %s", call.call_id, call.end_reason, call.timings.as_ms()
        )
        if not self.calls:
            self._idle.set()

    def collect_udp_metrics(self) -> None:
        for name, value in self.shared_socket.counters.items():
            self.metrics.udp.labels(name).set(value)
        self.metrics.load.labels("cpu").set(self.load.cpu)
        self.metrics.load.labels("lag_seconds").set(self.load.lag_s)

    async def drain(self) -> None:
        """No new calls; live ones run to their end or the drain deadline."""
        self.draining = True
        deadline = time.monotonic() + self.config.drain_timeout
        try:
            async with asyncio.timeout(max(0.0, deadline - time.monotonic())):
                await self._idle.wait()
        except TimeoutError:
            log.warning("drain deadline reached with %d calls", len(self.calls))

    async def stop(self) -> None:
        for task in (self._measuring, self._watching):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        for call in list(self.calls.values()):
            call.end("shutdown")
        if self._supervisors:
            await asyncio.gather(*self._supervisors, return_exceptions=True)
        if self._http is not None:
            await self._http.close()
        if self._socket is not None:
            self._socket.close()
