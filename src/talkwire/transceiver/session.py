"""One call: an aiortc peer connection bound to the relay, bridged to an agent.

A call owns every task it starts and releases all of them, the peer
connection, the agent WebSocket and its demux entries when it ends, whatever
ends it: hangup, ICE/DTLS failure, the connect timeout, the agent leaving.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import aiohttp
from aiortc import RTCConfiguration, RTCPeerConnection, RTCSessionDescription
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack
from aiortc.rtcdatachannel import RTCDataChannel

from talkwire.agent_link import AgentError, AgentLink, error_event
from talkwire.errors import ProtocolError
from talkwire.protocol.events import (
    OUTPUT_AUDIO_BUFFER_CLEAR,
    OUTPUT_AUDIO_BUFFER_CLEARED,
    OUTPUT_AUDIO_BUFFER_STARTED,
    OUTPUT_AUDIO_BUFFER_STOPPED,
    make_event,
    parse_event,
)
from talkwire.transceiver.audio import AgentAudioTrack, InboundConverter
from talkwire.transceiver.ice import RelayBinding, bind_connection
from talkwire.transceiver.rtp_audio import (
    InboundTap,
    OutboundOpus,
    install_inbound,
    install_outbound,
)
from talkwire.transceiver.sdp import OfferError, check_offer, strip_candidates

log = logging.getLogger(__name__)

EVENTS_CHANNEL = "oai-events"
AGENT_QUEUE_FRAMES = 250  # 5 s of audio: beyond this the agent is stalled
MAX_PENDING_BROWSER_EVENTS = 256  # until the browser opens oai-events
CLOSE_STEP_TIMEOUT_S = 5.0


@dataclass
class CallTimings:
    """Monotonic instants of a call's milestones (None until reached)."""

    offer: float = field(default_factory=time.monotonic)
    answered: float | None = None
    ice_connected: float | None = None
    dtls_connected: float | None = None
    first_audio_in: float | None = None
    first_audio_out: float | None = None

    def as_ms(self) -> dict[str, float | None]:
        return {
            name: None if value is None else round((value - self.offer) * 1000, 2)
            for name, value in vars(self).items()
            if name != "offer"
        }


class Call:
    def __init__(
        self,
        call_id: str,
        session: dict[str, Any],
        agent_url: str,
        binding: RelayBinding,
        http: aiohttp.ClientSession,
        connect_timeout: float,
    ) -> None:
        self.call_id = call_id
        self.session = session
        self.binding = binding
        self.timings = CallTimings()
        self.end_reason: str | None = None
        self.answer_sdp: str | None = None
        self.close_timeouts: list[str] = []
        self._connect_timeout = connect_timeout
        self._pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
        self._track = AgentAudioTrack(on_playing=self._playing_changed)
        self._agent = AgentLink(
            agent_url,
            session,
            http,
            on_event=self._to_browser,
            on_audio=self._track.push,
            on_clear=self._clear_playout,
        )
        self._to_agent: asyncio.Queue[bytes | str] = asyncio.Queue(AGENT_QUEUE_FRAMES)
        self._channel: RTCDataChannel | None = None
        self._pending_browser_events: list[str] = []
        # Sideband connections (GET /calls/{id}/events): each sees what the browser sees.
        self._watchers: set[Callable[[str], None]] = set()
        self._connected = asyncio.Event()
        self._ended = asyncio.Event()
        self._tasks: set[asyncio.Task[None]] = set()
        self._pc.on("connectionstatechange", self._connection_state_changed)
        self._pc.on("iceconnectionstatechange", self._ice_state_changed)
        self._pc.on("datachannel", self._datachannel)
        self._pc.on("track", self._remote_track)
        self._inbound: InboundTap | None = None
        self._outbound: OutboundOpus | None = None

    # -- setup -----------------------------------------------------------

    async def answer(self, offer_sdp: str) -> str:
        """Answer the offer; the route token is registered before this returns."""
        check_offer(offer_sdp)
        self._spawn(self._run_agent(), "agent")
        try:
            await self._pc.setRemoteDescription(
                RTCSessionDescription(sdp=strip_candidates(offer_sdp), type="offer")
            )
        except ValueError as exc:
            raise OfferError(f"SDP offer could not be parsed: {exc}") from exc
        connections = {id(t): t for t in self._ice_connections()}
        if len(connections) != 1:
            raise OfferError("SDP offer must bundle its media on one transport")
        for connection in connections.values():
            bind_connection(connection, self.binding)
        for transceiver in self._pc.getTransceivers():
            if transceiver.kind == "audio":
                sender = self._pc.addTrack(self._track)
                # Opus straight between RTP and the agent's PCM, inline (rtp_audio).
                self._inbound = install_inbound(transceiver.receiver, self._audio_in)
                self._outbound = install_outbound(sender, self._track)
                break
        await self._pc.setLocalDescription(await self._pc.createAnswer())
        self.timings.answered = time.monotonic()
        self._spawn(self._watch_connect(), "connect-timeout")
        self.answer_sdp = self._pc.localDescription.sdp
        return self.answer_sdp

    def _ice_connections(self) -> list[Any]:
        found = [t.receiver.transport.transport._connection for t in self._pc.getTransceivers()]
        if self._pc.sctp is not None:
            found.append(self._pc.sctp.transport.transport._connection)
        return found

    def audio_stats(self) -> dict[str, float | int]:
        inbound, outbound = self._inbound, self._outbound
        return {
            "playout_queued_ms": round(self._track.queued_seconds * 1000, 1),
            "frames_played": self._track.frames_played,
            "frames_skipped": self._track.frames_skipped,
            "frames_late": self._track.frames_late,
            "frames_to_agent": self._agent.frames_sent,
            "frames_from_agent": self._agent.frames_received,
            "packets_decoded": inbound.decoded_packets if inbound else 0,
            "packets_late": inbound.late_packets if inbound else 0,
            "packets_undecodable": inbound.undecodable_packets if inbound else 0,
            "silence_packets_canned": outbound.canned_silence if outbound else 0,
        }

    # -- lifetime --------------------------------------------------------

    async def wait_ended(self) -> None:
        await self._ended.wait()

    async def close(self, reason: str) -> None:
        """End the call and release everything it holds. Idempotent."""
        self.end(reason)
        current = asyncio.current_task()
        tasks = [t for t in self._tasks if t is not current]
        for task in tasks:
            task.cancel()
        await self._step("tasks", asyncio.gather(*tasks, return_exceptions=True))
        self._track.stop()
        await self._step("agent", self._agent.close())
        await self._step("peer connection", self._pc.close())
        self.binding.release()

    async def _step(self, what: str, awaitable: Any) -> None:
        # A release step that hangs must not keep the call (and its capacity) forever.
        try:
            async with asyncio.timeout(CLOSE_STEP_TIMEOUT_S):
                await awaitable
        except TimeoutError:
            log.error(
                "call %s: closing %s took over %s s", self.call_id, what, CLOSE_STEP_TIMEOUT_S
            )
            self.close_timeouts.append(what)

    def end(self, reason: str) -> None:
        """Ask the call to end; its supervisor does the releasing."""
        if self.end_reason is None:
            self.end_reason = reason
        self._ended.set()

    def _spawn(self, coro: Any, name: str) -> None:
        task = asyncio.create_task(coro, name=f"{self.call_id}:{name}")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _watch_connect(self) -> None:
        try:
            async with asyncio.timeout(self._connect_timeout):
                await self._connected.wait()
        except TimeoutError:
            self.end("connect_timeout")

    # -- peer connection events -----------------------------------------

    def _connection_state_changed(self) -> None:
        state = self._pc.connectionState
        if state == "connected" and self.timings.dtls_connected is None:
            self.timings.dtls_connected = time.monotonic()
            self._connected.set()
        elif state in ("failed", "closed"):
            self.end(f"connection_{state}")

    def _ice_state_changed(self) -> None:
        if self._pc.iceConnectionState == "completed" and self.timings.ice_connected is None:
            self.timings.ice_connected = time.monotonic()

    def _datachannel(self, channel: RTCDataChannel) -> None:
        if channel.label != EVENTS_CHANNEL:
            return
        self._channel = channel
        channel.on("message", self._from_browser)
        pending, self._pending_browser_events = self._pending_browser_events, []
        for text in pending:
            channel.send(text)

    def _remote_track(self, track: MediaStreamTrack) -> None:
        if track.kind == "audio":
            self._spawn(self._pump_inbound(track), "inbound-audio")

    # -- media and events ------------------------------------------------

    async def _pump_inbound(self, track: MediaStreamTrack) -> None:
        # Only codecs other than Opus reach the track: Opus is decoded in the tap.
        converter = InboundConverter()
        while True:
            try:
                frame = await track.recv()
            except MediaStreamError:
                return
            for pcm in converter.convert(frame):  # type: ignore[arg-type]
                self._audio_in(pcm)

    def _audio_in(self, pcm: bytes) -> None:
        if self.timings.first_audio_in is None:
            self.timings.first_audio_in = time.monotonic()
        self._queue_to_agent(pcm)

    def _queue_to_agent(self, item: bytes | str) -> None:
        try:
            self._to_agent.put_nowait(item)
        except asyncio.QueueFull:
            self._fail_agent(AgentError("agent_stalled", "agent stopped reading"))

    async def _run_agent(self) -> None:
        writer = asyncio.create_task(self._write_agent(), name=f"{self.call_id}:agent-writer")
        try:
            await self._agent.run()
            self.end("agent_closed")
        except AgentError as exc:
            self._fail_agent(exc)
        finally:
            writer.cancel()
            with contextlib.suppress(asyncio.CancelledError, AgentError):
                await writer

    async def _write_agent(self) -> None:
        await self._agent.connected.wait()
        while True:
            item = await self._to_agent.get()
            try:
                await self._agent.send(item)
            except AgentError as exc:
                self._fail_agent(exc)
                return

    def _fail_agent(self, exc: AgentError) -> None:
        log.warning("call %s: %s", self.call_id, exc)
        self._to_browser(exc.public_event())
        self.end(exc.code)

    def _from_browser(self, message: str | bytes) -> None:
        problem = self.from_client(message)
        if problem is not None:
            self._to_browser(problem)

    def from_client(self, message: str | bytes) -> str | None:
        """A client event from the browser or a sideband connection, for the agent.

        Returns the ``error`` event for the sender when it is not one.
        """
        # The same validation the agent link applies in the other direction.
        try:
            event = parse_event(message)
        except ProtocolError as exc:
            return error_event("invalid_event", str(exc))
        self._queue_to_agent(message if isinstance(message, str) else message.decode("utf-8"))
        if event["type"] == OUTPUT_AUDIO_BUFFER_CLEAR:
            self._clear_playout()
        return None

    def watch(self, sink: Callable[[str], None]) -> Callable[[], None]:
        """Call ``sink`` with every event sent to the browser from now on; returns the undo."""
        self._watchers.add(sink)
        return lambda: self._watchers.discard(sink)

    def _to_browser(self, text: str) -> None:
        for sink in list(self._watchers):
            sink(text)
        if self._channel is None:
            if len(self._pending_browser_events) < MAX_PENDING_BROWSER_EVENTS:
                self._pending_browser_events.append(text)
        elif self._channel.readyState == "open":
            self._channel.send(text)

    def _clear_playout(self) -> None:
        """Barge-in (from the agent or the browser): drop queued agent audio now."""
        self._track.clear()
        self._to_browser(
            json.dumps(make_event(OUTPUT_AUDIO_BUFFER_CLEARED, response_id=self._agent.response_id))
        )

    def _playing_changed(self, playing: bool) -> None:
        if playing and self.timings.first_audio_out is None:
            self.timings.first_audio_out = time.monotonic()
        kind = OUTPUT_AUDIO_BUFFER_STARTED if playing else OUTPUT_AUDIO_BUFFER_STOPPED
        self._to_browser(json.dumps(make_event(kind, response_id=self._agent.response_id)))
