"""A Python WebRTC client for talkwire (or any OpenAI-Realtime WebRTC server).

It does what a browser does: offer audio and an ``oai-events`` data channel,
POST the SDP to ``/v1/realtime/calls``, play audio from a source and record
what comes back. Tests and benchmarks use it; so can a voice bot.
"""

from __future__ import annotations

import asyncio
import contextlib
import fractions
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import av
import numpy as np
from aiortc import (
    MediaStreamTrack,
    RTCConfiguration,
    RTCPeerConnection,
    RTCSessionDescription,
)
from aiortc.mediastreams import MediaStreamError

from talkwire.transceiver.rtp_audio import install_pass_through

CLIENT_RATE = 48000
CLIENT_FRAME = 960  # 20 ms at 48 kHz


class CallFailed(Exception):
    """Signaling refused the call or the connection did not come up."""


def tone(freq_hz: float, seconds: float, level: float = 0.3, rate: int = CLIENT_RATE) -> np.ndarray:
    t = np.arange(int(seconds * rate)) / rate
    return (np.sin(2 * np.pi * freq_hz * t) * level * 32767).astype(np.int16)


class PcmSource(MediaStreamTrack):
    """Plays int16 mono samples at 48 kHz in 20 ms frames, paced by a monotonic clock.

    `play(samples)` queues audio; silence fills the gaps. The monotonic time at
    which each queued clip's first frame was handed to aiortc is recorded.

    ``send_silence=False`` sends nothing between clips, as a muted microphone
    with Opus DTX nearly does: a crowd of such calls costs both ends only the
    server's audio, which is how a 2-core host carries the clients and the
    servers of many calls at once.
    """

    kind = "audio"

    def __init__(self, send_silence: bool = True) -> None:
        super().__init__()
        self._send_silence = send_silence
        self._queued = asyncio.Event()
        self._pending: list[tuple[np.ndarray, Callable[[float], None] | None]] = []
        self._current: np.ndarray | None = None
        self._offset = 0
        self._next_at: float | None = None
        self._pts = 0
        self._time_base = fractions.Fraction(1, CLIENT_RATE)

    def play(self, samples: np.ndarray, on_start: Callable[[float], None] | None = None) -> None:
        self._pending.append((samples.astype(np.int16), on_start))
        self._queued.set()

    async def recv(self) -> av.AudioFrame:
        if self.readyState != "live":
            raise MediaStreamError
        if not self._send_silence and self._current is None and not self._pending:
            self._queued.clear()
            paused = time.monotonic()
            await self._queued.wait()
            # The RTP clock runs on through the pause, as the far end expects.
            self._pts += int((time.monotonic() - paused) * CLIENT_RATE)
            self._next_at = None
        now = time.monotonic()
        if self._next_at is None:
            self._next_at = now
        elif self._next_at > now:
            await asyncio.sleep(self._next_at - now)
        self._next_at += CLIENT_FRAME / CLIENT_RATE
        chunk = np.zeros(CLIENT_FRAME, dtype=np.int16)
        if self._current is None and self._pending:
            self._current, on_start = self._pending.pop(0)
            self._offset = 0
            if on_start is not None:
                on_start(time.monotonic())
        if self._current is not None:
            piece = self._current[self._offset : self._offset + CLIENT_FRAME]
            chunk[: len(piece)] = piece
            self._offset += CLIENT_FRAME
            if self._offset >= len(self._current):
                self._current = None
        frame = av.AudioFrame(format="s16", layout="mono", samples=CLIENT_FRAME)
        frame.planes[0].update(chunk.tobytes())
        frame.sample_rate = CLIENT_RATE
        frame.pts = self._pts
        frame.time_base = self._time_base
        self._pts += CLIENT_FRAME
        return frame


@dataclass
class ClientTimings:
    start: float = field(default_factory=time.monotonic)
    offer_posted: float | None = None
    answered: float | None = None
    ice_connected: float | None = None
    dtls_connected: float | None = None
    channel_open: float | None = None
    first_audio: float | None = None

    def as_ms(self) -> dict[str, float | None]:
        base = self.offer_posted or self.start
        return {
            name: None if value is None else (value - base) * 1000
            for name, value in vars(self).items()
            if name not in ("start", "offer_posted")
        }


class RealtimeCall:
    """One call from this process. Use `connect`, then `hangup`."""

    def __init__(
        self,
        base_url: str,
        api_key: str,
        session: dict[str, Any] | None = None,
        source: PcmSource | None = None,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.api_key = api_key
        self.session = session or {"type": "realtime", "model": "echo"}
        self.pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
        self.source = source or PcmSource()
        self.timings = ClientTimings()
        self.events: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self.event_log: list[dict[str, Any]] = []
        # Received audio: (monotonic arrival of the frame, int16 mono samples at 48 kHz).
        self.received: list[tuple[float, np.ndarray]] = []
        self.answer_sdp = ""
        self.location = ""
        self.channel = self.pc.createDataChannel("oai-events")
        self._connected = asyncio.Event()
        self._failed = asyncio.Event()
        self._tasks: set[asyncio.Task[None]] = set()
        self.pc.addTrack(self.source)
        self.pc.on("track", self._on_track)
        self.pc.on("connectionstatechange", self._on_state)
        self.pc.on("iceconnectionstatechange", self._on_ice)
        self.channel.on("open", self._on_open)
        self.channel.on("message", self._on_message)

    async def connect(
        self,
        timeout: float = 10.0,
        http: aiohttp.ClientSession | None = None,
        via: tuple[str, int] | None = None,
    ) -> None:
        """Offer, POST it to /v1/realtime/calls, and wait for the connection.

        ``via``: send the media to this relay address instead of the one the
        answer names, as anycast or geo-DNS would steer a client to the
        nearest entry point (a global relay) in front of the same session.
        """
        offer = await self.offer()
        own_http = http is None
        http = http or aiohttp.ClientSession()
        try:
            form = aiohttp.FormData()
            form.add_field("sdp", offer, content_type="application/sdp")
            form.add_field("session", json.dumps(self.session), content_type="application/json")
            self.timings.offer_posted = time.monotonic()
            async with http.post(
                self.base_url + "/v1/realtime/calls",
                data=form,
                headers={"Authorization": f"Bearer {self.api_key}"},
            ) as response:
                body = await response.text()
                if response.status != 201:
                    raise CallFailed(f"signaling answered {response.status}: {body}")
                self.location = response.headers.get("Location", "")
        finally:
            if own_http:
                await http.close()
        await self.accept(body if via is None else candidates_via(body, via), timeout)
        self.answer_sdp = body  # signaling's, as it came

    async def offer(self) -> str:
        """Create the SDP offer (gathering complete)."""
        await self.pc.setLocalDescription(await self.pc.createOffer())
        for transceiver in self.pc.getTransceivers():
            # Measure the server, not this client's jitter buffer.
            install_pass_through(transceiver.receiver)
        sdp: str = self.pc.localDescription.sdp
        return sdp

    async def accept(self, answer_sdp: str, timeout: float = 10.0) -> None:
        """Apply the answer and wait until DTLS is up; CallFailed if it is not."""
        self.timings.answered = time.monotonic()
        self.answer_sdp = answer_sdp
        await self.pc.setRemoteDescription(RTCSessionDescription(sdp=answer_sdp, type="answer"))
        connected = asyncio.ensure_future(self._connected.wait())
        failed = asyncio.ensure_future(self._failed.wait())
        done, pending = await asyncio.wait(
            {connected, failed}, timeout=timeout, return_when=asyncio.FIRST_COMPLETED
        )
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)
        if connected not in done:
            raise CallFailed(f"connection did not come up ({self.pc.connectionState})")

    async def next_event(self, kind: str, timeout: float = 10.0) -> dict[str, Any]:
        """The next event of type `kind` (earlier events of other types are kept in event_log)."""
        async with asyncio.timeout(timeout):
            while True:
                event = await self.events.get()
                if event.get("type") == kind:
                    return event

    def send_event(self, event: dict[str, Any]) -> None:
        self.channel.send(json.dumps(event))

    def received_audio(self, since: float = 0.0) -> np.ndarray:
        chunks = [samples for at, samples in self.received if at >= since]
        return np.concatenate(chunks) if chunks else np.zeros(0, dtype=np.int16)

    async def hangup(self, http: aiohttp.ClientSession | None = None) -> None:
        if self.location:
            own_http = http is None
            http = http or aiohttp.ClientSession()
            try:
                async with http.post(
                    self.base_url + self.location + "/hangup",
                    headers={"Authorization": f"Bearer {self.api_key}"},
                ):
                    pass
            finally:
                if own_http:
                    await http.close()
        await self.close()

    async def close(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self.source.stop()
        await self.pc.close()

    def _on_track(self, track: MediaStreamTrack) -> None:
        if track.kind == "audio":
            task = asyncio.create_task(self._record(track))
            self._tasks.add(task)

    async def _record(self, track: MediaStreamTrack) -> None:
        resampler = av.AudioResampler(format="s16", layout="mono", rate=CLIENT_RATE)
        with contextlib.suppress(MediaStreamError):
            while True:
                frame = await track.recv()
                now = time.monotonic()
                for mono in resampler.resample(frame):  # type: ignore[arg-type]
                    samples = mono.to_ndarray().reshape(-1).copy()
                    if self.timings.first_audio is None and np.abs(samples).max() > 1000:
                        self.timings.first_audio = now
                    self.received.append((now, samples))

    def _on_state(self) -> None:
        state = self.pc.connectionState
        if state == "connected":
            self.timings.dtls_connected = time.monotonic()
            self._connected.set()
        elif state in ("failed", "closed"):
            self._failed.set()

    def _on_ice(self) -> None:
        if self.pc.iceConnectionState == "completed" and self.timings.ice_connected is None:
            self.timings.ice_connected = time.monotonic()

    def _on_open(self) -> None:
        self.timings.channel_open = time.monotonic()

    def _on_message(self, message: str | bytes) -> None:
        try:
            event = json.loads(message)
        except ValueError:
            return
        if isinstance(event, dict):
            self.event_log.append(event)
            self.events.put_nowait(event)


def candidates_via(answer_sdp: str, relay: tuple[str, int]) -> str:
    """The answer with every candidate's address and port replaced by ``relay``'s."""

    def moved(line: str) -> str:
        if not line.startswith("a=candidate:"):
            return line
        fields = line.split(" ")
        fields[4], fields[5] = relay[0], str(relay[1])
        return " ".join(fields)

    return "\r\n".join(moved(line) for line in answer_sdp.split("\r\n"))


def onset_times(received: list[tuple[float, np.ndarray]], threshold: int = 3000) -> list[float]:
    """Arrival times of the frames where loud audio starts after quiet."""
    onsets = []
    loud = False
    for at, samples in received:
        level = int(np.abs(samples).max()) if len(samples) else 0
        if level > threshold and not loud:
            onsets.append(at)
        loud = level > threshold
    return onsets
