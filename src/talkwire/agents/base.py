"""The agent SDK: subclass Agent, implement a few async methods, serve it with agents.server.

One Agent instance serves one call. The server calls ``on_start`` once after the
transceiver's ``session.update`` handshake, then ``on_audio`` for every 20 ms
PCM16 frame and ``on_event`` for every JSON event in arrival order (never
concurrently), and ``on_close`` once at the end. The agent answers through its
Call: ``send_audio``, ``send_event``, ``clear_audio``; work that must outlive a
single callback runs in ``call.create_task`` so it is cancelled with the call.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Coroutine, Mapping
from typing import Any, ClassVar

from aiohttp import web

from talkwire.errors import ProtocolError
from talkwire.protocol.audio import MAX_PCM_BYTES, PCM_FORMAT, SAMPLE_BYTES
from talkwire.protocol.events import (
    OUTPUT_AUDIO_BUFFER_CLEAR,
    SESSION_UPDATE,
    SESSION_UPDATED,
    ErrorEvent,
    ErrorType,
    encode_event,
    error_event,
    make_event,
    merge_session,
    new_id,
)

log = logging.getLogger(__name__)

# How the server is asked to end a call: the error to send first (or None), and the close code.
EndCall = Callable[[ErrorEvent | None, int], None]

# Session keys a browser's session.update may not change: set by the transceiver and server.
_PINNED_KEYS = ("talkwire", "id", "object")

CLOSE_OK = 1000
CLOSE_INTERNAL_ERROR = 1011


class Call:
    """One transceiver connection, as its agent sees it.

    Sends after the call has ended are dropped: the peer is gone and the server
    is already tearing the call down.
    """

    def __init__(
        self,
        call_id: str,
        session: dict[str, Any],
        ws: web.WebSocketResponse,
        end: EndCall,
    ) -> None:
        self.call_id = call_id
        self.session = session
        self._ws = ws
        self._end = end
        self._tasks: set[asyncio.Task[Any]] = set()

    @property
    def closed(self) -> bool:
        return self._ws.closed

    async def send_audio(self, pcm: bytes | bytearray | memoryview) -> None:
        """Agent audio for playback: PCM16 24 kHz mono, any whole number of samples."""
        if len(pcm) % SAMPLE_BYTES:
            raise ProtocolError(f"agent audio of {len(pcm)} bytes is not whole PCM16 samples")
        view = memoryview(pcm)
        # The transceiver accepts at most 1 s per frame; longer audio goes as several.
        for start in range(0, len(view), MAX_PCM_BYTES):
            if self._ws.closed:
                return
            try:
                await self._ws.send_bytes(bytes(view[start : start + MAX_PCM_BYTES]))
            except ConnectionResetError:
                return

    async def send_event(self, event: Mapping[str, Any]) -> None:
        """A JSON event for the transceiver, which forwards it to the browser unchanged."""
        if "event_id" not in event:
            event = {**event, "event_id": new_id("event")}
        text = encode_event(event)
        if self._ws.closed:
            return
        try:
            await self._ws.send_str(text)
        except ConnectionResetError:
            return

    async def send_error(
        self,
        message: str,
        *,
        code: str | None = None,
        error_type: ErrorType = "invalid_request_error",
        param: str | None = None,
        event_id: str | None = None,
    ) -> None:
        """A Realtime ``error`` event; the call goes on."""
        await self.send_event(
            error_event(message, code=code, error_type=error_type, param=param, event_id=event_id)
        )

    async def clear_audio(self) -> None:
        """Barge-in: the transceiver drops all agent audio it has queued but not played."""
        await self.send_event(make_event(OUTPUT_AUDIO_BUFFER_CLEAR))

    def create_task(
        self, coro: Coroutine[Any, Any, Any], *, name: str | None = None
    ) -> asyncio.Task[Any]:
        """Run ``coro`` for this call: cancelled when the call ends; if it fails, the call ends."""
        task = asyncio.create_task(coro, name=name or f"call {self.call_id}")
        self._tasks.add(task)
        task.add_done_callback(self._task_done)
        return task

    def close(self, error: ErrorEvent | None = None) -> None:
        """End this call (after sending ``error``, if given). Returns at once."""
        self._end(error, CLOSE_OK if error is None else CLOSE_INTERNAL_ERROR)

    async def cancel_tasks(self) -> None:
        """Cancel and await every task this call owns (the server calls this at the end)."""
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)
        self._tasks.clear()

    def _task_done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if task.cancelled():
            return
        exc = task.exception()
        if exc is None:
            return
        log.error(
            "agent task failed",
            exc_info=exc,
            extra={"call_id": self.call_id, "task": task.get_name()},
        )
        self._end(
            error_event("the agent failed", code="agent_error", error_type="server_error"),
            CLOSE_INTERNAL_ERROR,
        )


def declared_format_problem(session: Mapping[str, Any]) -> str | None:
    """Why the session's declared audio format is not the link's, or None if it fits.

    Only the handshake is held to this: a browser's later ``session.update`` may
    name a format for the OpenAI wire (e.g. audio/pcmu), which WebRTC media ignores.
    """
    audio = session.get("audio")
    if audio is None:
        return None
    if not isinstance(audio, dict):
        return "session.audio must be an object"
    for direction in ("input", "output"):
        part = audio.get(direction)
        if part is None:
            continue
        if not isinstance(part, dict):
            return f"session.audio.{direction} must be an object"
        fmt = part.get("format")
        if fmt is not None and fmt != PCM_FORMAT:
            return f"session.audio.{direction}.format must be {PCM_FORMAT}"
    return None


def pin_audio_format(session: Mapping[str, Any]) -> dict[str, Any]:
    """The session with audio.input/output.format set to the link's PCM16 24 kHz."""
    audio = session.get("audio")
    audio = dict(audio) if isinstance(audio, dict) else {}
    for direction in ("input", "output"):
        part = audio.get(direction)
        part = dict(part) if isinstance(part, dict) else {}
        part["format"] = dict(PCM_FORMAT)
        audio[direction] = part
    return {**session, "audio": audio}


class Agent:
    """Base class for agents; every method has a working default."""

    name: ClassVar[str] = "agent"

    def __init__(self, call: Call) -> None:
        self.call = call

    async def on_start(self) -> dict[str, Any]:
        """Called once after the handshake; returns the effective session for session.created."""
        return self.call.session

    async def on_audio(self, pcm: bytes) -> None:
        """One frame of user audio: PCM16 24 kHz mono, normally 20 ms (960 bytes)."""

    async def on_event(self, event: dict[str, Any]) -> None:
        """One JSON event from the browser (via the transceiver). Handles session.update."""
        if event["type"] == SESSION_UPDATE:
            await self.update_session(event)

    async def on_close(self) -> None:
        """Called once when the call ends, for any reason; owned tasks are already cancelled."""

    def configure(self, session: dict[str, Any]) -> dict[str, Any]:
        """Adopt a new session (after session.update) and return it as it takes effect.

        Override to apply settings and to write back the values actually used, so
        that session.updated tells the browser the truth.
        """
        return session

    async def update_session(self, event: Mapping[str, Any]) -> dict[str, Any] | None:
        """Apply a ``session.update`` and answer ``session.updated``; None if it was invalid."""
        update = event.get("session")
        if not isinstance(update, dict):
            await self.call.send_error(
                "session.update needs a 'session' object",
                code="invalid_value",
                param="session",
                event_id=event.get("event_id"),
            )
            return None
        # The link format is fixed; what the browser says about formats is for its own wire.
        session = pin_audio_format(merge_session(self.call.session, update))
        for key in _PINNED_KEYS:
            if key in self.call.session:
                session[key] = self.call.session[key]
        session = self.configure(session)
        self.call.session = session
        await self.call.send_event(make_event(SESSION_UPDATED, session=session))
        return session
