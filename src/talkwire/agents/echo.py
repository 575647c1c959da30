"""The echo agent: plays back what it hears, for latency measurement and demos.

Every frame goes back as it arrives (``delay_ms=0``), or ``delay_ms`` later,
paced from the event loop's monotonic clock (each frame is due at its arrival
time plus the delay, so pacing never drifts). Around the echo it emits what a
Realtime client expects: speech_started/stopped from an energy VAD,
committed + conversation.item.created for the user's turn, and
response.created … response.done bracketing the echoed utterance.

``response.create`` replays the last committed utterance as a new response;
when the user starts speaking while a replay is still playing, the replay is
cancelled and the transceiver told to drop its queued audio (barge-in).
"""

from __future__ import annotations

import asyncio
from collections import deque
from dataclasses import dataclass
from typing import Any, ClassVar, Final, Literal

from talkwire.agents.base import Agent, Call
from talkwire.agents.vad import EnergyVad, VadConfig, VadEvent
from talkwire.protocol.audio import FRAME_MS, RATE, SAMPLE_BYTES, duration_ms
from talkwire.protocol.events import (
    CONVERSATION_ITEM_CREATE,
    CONVERSATION_ITEM_CREATED,
    INPUT_AUDIO_BUFFER_CLEAR,
    INPUT_AUDIO_BUFFER_CLEARED,
    INPUT_AUDIO_BUFFER_COMMIT,
    INPUT_AUDIO_BUFFER_COMMITTED,
    INPUT_AUDIO_BUFFER_SPEECH_STARTED,
    INPUT_AUDIO_BUFFER_SPEECH_STOPPED,
    OUTPUT_AUDIO_BUFFER_CLEAR,
    RESPONSE_CANCEL,
    RESPONSE_CREATE,
    RESPONSE_CREATED,
    RESPONSE_DONE,
    RESPONSE_OUTPUT_AUDIO_DONE,
    ResponseStatus,
    assistant_audio_item,
    make_event,
    new_id,
    response_object,
    user_audio_item,
)

MAX_DELAY_MS: Final = 10_000
# A user turn longer than this is still echoed live, but only its start is kept for replay.
MAX_UTTERANCE_BYTES: Final = 30 * RATE * SAMPLE_BYTES
REPLAY_CHUNK_BYTES: Final = RATE * SAMPLE_BYTES // 10  # 100 ms per binary frame
# Frames waiting for their delay beyond what real-time input can fill: a sender
# pushing faster than real time loses frames instead of growing memory.
_QUEUE_SLACK: Final = 500

DEFAULT_TURN_DETECTION: Final[dict[str, Any]] = {
    "type": "server_vad",
    "threshold": 0.5,
    "prefix_padding_ms": 300,
    "silence_duration_ms": 500,
    "create_response": True,
    "interrupt_response": True,
}

_Kind = Literal["audio", "created", "end"]


@dataclass(slots=True)
class _Response:
    id: str
    item_id: str  # the assistant output item
    replay: bool
    cancelled: bool = False


@dataclass(slots=True)
class _Out:
    """Something to send: audio or an event, due at a loop time."""

    due: float
    payload: bytes | dict[str, Any]
    kind: _Kind
    response_id: str | None = None  # set on replay audio and on response events
    ends: bool = False  # the response.done that closes response_id


def _int_in(value: object, low: int, high: int, default: int) -> int:
    if type(value) is int and low <= value <= high:
        return value
    return default


class EchoAgent(Agent):
    name: ClassVar[str] = "echo"

    def __init__(self, call: Call, *, delay_ms: int = 0) -> None:
        super().__init__(call)
        if not 0 <= delay_ms <= MAX_DELAY_MS:
            raise ValueError(f"delay_ms must be within 0..{MAX_DELAY_MS}")
        self._delay = delay_ms / 1000
        self._loop = asyncio.get_running_loop()
        self._vad = EnergyVad()
        self._vad_on = True
        self._create_response = True
        self._interrupt = True
        self._prefix: deque[bytes] = deque(maxlen=1)
        self._collecting = False  # input belongs to an uncommitted user item
        self._pending = bytearray()
        self._user_item: str | None = None
        self._last_item: str | None = None
        self._last_utterance = b""
        self._live: _Response | None = None
        self._open: dict[str, _Response] = {}  # response.done not sent yet
        self._replay_until = 0.0  # loop time until which the transceiver plays a replay
        self._queue: deque[_Out] = deque()
        self._queue_cap = int(delay_ms / FRAME_MS) + _QUEUE_SLACK
        self._wake = asyncio.Event()
        self.dropped_frames = 0

    # -- Agent API ---------------------------------------------------------

    async def on_start(self) -> dict[str, Any]:
        session = self.configure(self.call.session)
        if self._delay:
            self.call.create_task(self._pump(), name=f"echo pump {self.call.call_id}")
        return session

    def configure(self, session: dict[str, Any]) -> dict[str, Any]:
        audio = dict(session.get("audio") or {})
        audio_in = dict(audio.get("input") or {})
        td = audio_in.get("turn_detection", DEFAULT_TURN_DETECTION)
        if td is not None and not isinstance(td, dict):
            td = DEFAULT_TURN_DETECTION
        if td is not None:
            td = {
                **DEFAULT_TURN_DETECTION,
                **td,
                "silence_duration_ms": _int_in(td.get("silence_duration_ms"), 0, 10_000, 500),
                "prefix_padding_ms": _int_in(td.get("prefix_padding_ms"), 0, 2_000, 300),
                "create_response": td.get("create_response") is not False,
                "interrupt_response": td.get("interrupt_response") is not False,
            }
        self._apply_turn_detection(td)
        audio_in["turn_detection"] = td
        audio["input"] = audio_in
        return {**session, "audio": audio, "output_modalities": ["audio"]}

    async def on_audio(self, pcm: bytes) -> None:
        vad_event: VadEvent | None = None
        if self._vad_on:
            vad_event = self._vad.feed(pcm)
        else:
            self._vad.advance(len(pcm) // SAMPLE_BYTES)
        if vad_event is not None and vad_event.kind == "speech_started":
            await self._speech_started(vad_event)
        if self._collecting:
            if len(self._pending) + len(pcm) <= MAX_UTTERANCE_BYTES:
                self._pending += pcm
        else:
            self._prefix.append(pcm)
        live = self._live
        if live is None or not live.cancelled:
            if self._delay:
                await self._emit(_Out(0.0, pcm, "audio"))
            else:
                await self.call.send_audio(pcm)
        if vad_event is not None and vad_event.kind == "speech_stopped":
            await self.call.send_event(
                make_event(
                    INPUT_AUDIO_BUFFER_SPEECH_STOPPED,
                    audio_end_ms=vad_event.audio_ms,
                    item_id=self._user_item,
                )
            )
            await self._end_turn()

    async def on_event(self, event: dict[str, Any]) -> None:
        kind = event["type"]
        event_id = event.get("event_id")
        if kind == RESPONSE_CREATE:
            await self._response_create(event_id)
        elif kind == RESPONSE_CANCEL:
            await self._response_cancel(event.get("response_id"), event_id)
        elif kind == OUTPUT_AUDIO_BUFFER_CLEAR:
            # The transceiver drops its own queue; this drops what is still waiting here.
            self._queue = deque(o for o in self._queue if o.kind != "audio")
            self._replay_until = 0.0
        elif kind == INPUT_AUDIO_BUFFER_CLEAR:
            await self._input_clear()
        elif kind == INPUT_AUDIO_BUFFER_COMMIT:
            if not self._pending:
                await self.call.send_error(
                    "the input audio buffer is empty",
                    code="input_audio_buffer_commit_empty",
                    event_id=event_id,
                )
                return
            self._vad.reset()
            await self._end_turn()
        elif kind == CONVERSATION_ITEM_CREATE:
            await self._item_create(event)
        else:
            await super().on_event(event)

    async def on_close(self) -> None:
        self._queue.clear()

    # -- turns ---------------------------------------------------------------

    def _apply_turn_detection(self, td: dict[str, Any] | None) -> None:
        was_on = self._vad_on
        self._vad_on = td is not None
        if td is not None:
            self._vad.set_config(VadConfig(hangover_ms=td["silence_duration_ms"]))
            self._create_response = td["create_response"]
            self._interrupt = td["interrupt_response"]
            frames = max(1, td["prefix_padding_ms"] // FRAME_MS)
            self._prefix = deque(self._prefix, maxlen=frames)
        if was_on != self._vad_on:
            # Switching between server VAD and manual commits starts a fresh input buffer.
            self._vad.reset()
            self._pending.clear()
            self._prefix.clear()
            self._collecting = not self._vad_on

    async def _speech_started(self, event: VadEvent) -> None:
        self._user_item = new_id("item")
        await self.call.send_event(
            make_event(
                INPUT_AUDIO_BUFFER_SPEECH_STARTED,
                audio_start_ms=event.audio_ms,
                item_id=self._user_item,
            )
        )
        if self._interrupt:
            await self._barge_in()
        self._collecting = True
        self._pending = bytearray(b"".join(self._prefix))
        self._prefix.clear()
        if self._create_response:
            response = _Response(new_id("resp"), new_id("item"), replay=False)
            self._live = response
            await self._start_response(response)

    async def _end_turn(self) -> None:
        """Commit the user's audio as an item; close the live echo response."""
        item_id = self._user_item or new_id("item")
        self._user_item = None
        await self.call.send_event(
            make_event(
                INPUT_AUDIO_BUFFER_COMMITTED, previous_item_id=self._last_item, item_id=item_id
            )
        )
        await self.call.send_event(
            make_event(
                CONVERSATION_ITEM_CREATED,
                previous_item_id=self._last_item,
                item=user_audio_item(item_id),
            )
        )
        self._last_item = item_id
        self._last_utterance = bytes(self._pending)
        self._pending.clear()
        self._collecting = not self._vad_on
        live, self._live = self._live, None
        if live is not None and not live.cancelled:
            await self._finish_response(live)

    async def _input_clear(self) -> None:
        live, self._live = self._live, None
        if live is not None and not live.cancelled:
            await self._cancel(live)
        self._vad.reset()
        self._pending.clear()
        self._prefix.clear()
        self._user_item = None
        self._collecting = not self._vad_on
        await self.call.send_event(make_event(INPUT_AUDIO_BUFFER_CLEARED))

    async def _item_create(self, event: dict[str, Any]) -> None:
        item = event.get("item")
        if not isinstance(item, dict):
            await self.call.send_error(
                "conversation.item.create needs an 'item' object",
                code="invalid_value",
                param="item",
                event_id=event.get("event_id"),
            )
            return
        item_id = item.get("id")
        if not isinstance(item_id, str) or not item_id:
            item_id = new_id("item")
        created = {"status": "completed", **item, "id": item_id, "object": "realtime.item"}
        previous = event.get("previous_item_id", self._last_item)
        await self.call.send_event(
            make_event(CONVERSATION_ITEM_CREATED, previous_item_id=previous, item=created)
        )
        self._last_item = item_id

    # -- responses -------------------------------------------------------------

    async def _start_response(self, response: _Response) -> None:
        self._open[response.id] = response
        created = make_event(RESPONSE_CREATED, response=response_object(response.id, "in_progress"))
        await self._emit(_Out(0.0, created, "created", response.id))

    def _completion(self, response: _Response, status: ResponseStatus) -> list[_Out]:
        audio_done = make_event(
            RESPONSE_OUTPUT_AUDIO_DONE,
            response_id=response.id,
            item_id=response.item_id,
            output_index=0,
            content_index=0,
        )
        item = assistant_audio_item(
            response.item_id, "completed" if status == "completed" else "incomplete"
        )
        details = None if status == "completed" else {"type": status, "reason": "client_cancelled"}
        done = make_event(
            RESPONSE_DONE, response=response_object(response.id, status, [item], details)
        )
        return [
            _Out(0.0, audio_done, "end", response.id),
            _Out(0.0, done, "end", response.id, ends=True),
        ]

    async def _finish_response(self, response: _Response) -> None:
        for out in self._completion(response, "completed"):
            await self._emit(out)

    async def _cancel(self, response: _Response) -> None:
        """Drop the response's unsent output; if the client has seen it start, end it now."""
        response.cancelled = True
        announced = not any(
            o.response_id == response.id and o.kind == "created" for o in self._queue
        )
        self._queue = deque(o for o in self._queue if o.response_id != response.id)
        if not announced:
            # Never announced, so nothing to take back.
            self._open.pop(response.id, None)
            return
        # Sent at once, past the delay queue: a cancellation must not wait behind audio.
        for out in self._completion(response, "cancelled"):
            await self._send(out)

    async def _response_create(self, event_id: str | None) -> None:
        if any(not r.cancelled for r in self._open.values()):
            await self.call.send_error(
                "a response is already in progress",
                code="conversation_already_has_active_response",
                event_id=event_id,
            )
            return
        response = _Response(new_id("resp"), new_id("item"), replay=True)
        await self._start_response(response)
        utterance = self._last_utterance
        for start in range(0, len(utterance), REPLAY_CHUNK_BYTES):
            chunk = utterance[start : start + REPLAY_CHUNK_BYTES]
            await self._emit(_Out(0.0, chunk, "audio", response.id))
        await self._finish_response(response)

    async def _response_cancel(self, response_id: object, event_id: str | None) -> None:
        targets = [
            r
            for r in self._open.values()
            if not r.cancelled and (response_id is None or r.id == response_id)
        ]
        if not targets:
            await self.call.send_error(
                "there is no active response to cancel",
                code="response_cancel_not_active",
                event_id=event_id,
            )
            return
        for response in targets:
            await self._cancel(response)

    async def _barge_in(self) -> None:
        """The user speaks over a replay: cancel it and drop its queued playback."""
        replays = [r for r in self._open.values() if r.replay and not r.cancelled]
        if not replays and self._loop.time() >= self._replay_until:
            return
        for response in replays:
            await self._cancel(response)
        self._replay_until = 0.0
        # Sent directly, not queued: the clear must overtake audio already in flight.
        await self.call.clear_audio()

    # -- output, immediate or delayed -------------------------------------------

    async def _emit(self, out: _Out) -> None:
        if not self._delay:
            await self._send(out)
            return
        if len(self._queue) >= self._queue_cap and out.kind == "audio":
            self.dropped_frames += 1
            return
        out.due = self._loop.time() + self._delay
        self._queue.append(out)
        self._wake.set()

    async def _send(self, out: _Out) -> None:
        payload = out.payload
        if isinstance(payload, bytes):
            if out.response_id is not None:
                start = max(self._replay_until, self._loop.time())
                self._replay_until = start + duration_ms(len(payload)) / 1000
            await self.call.send_audio(payload)
        else:
            await self.call.send_event(payload)
        if out.ends and out.response_id is not None:
            self._open.pop(out.response_id, None)

    async def _pump(self) -> None:
        """Send each queued item at its due time; runs for the life of the call."""
        queue_wait = self._wake.wait
        while True:
            if not self._queue:
                self._wake.clear()
                await queue_wait()
                continue
            wait = self._queue[0].due - self._loop.time()
            if wait > 0:
                # Re-checked after waking: a clear may have emptied or changed the queue.
                await asyncio.sleep(wait)
                continue
            await self._send(self._queue.popleft())
