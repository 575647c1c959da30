"""The Realtime WebSocket interface's wire, translated to and from the agent link.

Sans-IO. On the OpenAI Realtime WebSocket every frame is a JSON event and
audio travels as base64 PCM16 24 kHz: the client sends it in
``input_audio_buffer.append``, the server in ``response.output_audio.delta``.
The agent link carries the same events verbatim and the same audio as binary
frames (docs/protocol.md), so the translation is only about audio:

- ``input_audio_buffer.append`` is decoded and cut into the link's 20 ms
  frames (a partial frame waits for the next append);
- a binary frame from the agent becomes one ``response.output_audio.delta``
  naming the response and item it belongs to;
- ``output_audio_buffer.clear`` from the agent is the WebRTC playout's barge-in;
  a WebSocket client plays its own audio and learns of a barge-in from
  ``input_audio_buffer.speech_started``, so it is not passed on;
- a ``session.update`` asking for an audio format other than the link's is
  refused: this interface carries PCM16 24 kHz only.
"""

from __future__ import annotations

import base64
import binascii
import json
from dataclasses import dataclass
from typing import Any, Final

from talkwire.errors import ProtocolError
from talkwire.protocol import events
from talkwire.protocol.audio import FRAME_BYTES, PCM_FORMAT, SAMPLE_BYTES
from talkwire.protocol.events import encode_event, error_event, make_event, new_id, parse_event

INPUT_AUDIO_BUFFER_APPEND: Final = "input_audio_buffer.append"
# OpenAI accepts appends of up to 15 MiB; a client streaming live audio sends
# tens of milliseconds at a time. A minute of base64 audio is plenty.
MAX_CLIENT_EVENT_BYTES: Final = 4 * 1024 * 1024


@dataclass(frozen=True, slots=True)
class Refusal:
    """A client event that goes no further; ``event`` is the ``error`` to send back."""

    event: str


class ClientToAgent:
    """Client frames in, link frames out (bytes: audio, str: an event)."""

    def __init__(self) -> None:
        self._partial = b""

    def text(self, text: str | bytes) -> list[bytes | str] | Refusal:
        try:
            event = parse_event(text, max_bytes=MAX_CLIENT_EVENT_BYTES)
        except ProtocolError as exc:
            return _refuse("invalid_event", str(exc))
        kind = event["type"]
        if kind == INPUT_AUDIO_BUFFER_APPEND:
            return self._append(event)
        if kind == events.SESSION_UPDATE:
            problem = _format_problem(event.get("session"))
            if problem is not None:
                return _refuse("unsupported_audio_format", problem, event, "session.audio")
        if kind == events.INPUT_AUDIO_BUFFER_CLEAR:
            self._partial = b""
        return [text if isinstance(text, str) else text.decode()]

    def _append(self, event: dict[str, Any]) -> list[bytes | str] | Refusal:
        audio = event.get("audio")
        if not isinstance(audio, str):
            return _refuse("invalid_audio", "audio must be a base64 string", event, "audio")
        try:
            pcm = base64.b64decode(audio, validate=True)
        except (binascii.Error, ValueError):
            return _refuse("invalid_audio", "audio is not valid base64", event, "audio")
        if len(pcm) % SAMPLE_BYTES:
            return _refuse(
                "invalid_audio", "audio is not whole PCM16 samples (odd byte count)", event, "audio"
            )
        data = self._partial + pcm
        whole = len(data) - len(data) % FRAME_BYTES
        self._partial = data[whole:]
        return [data[i : i + FRAME_BYTES] for i in range(0, whole, FRAME_BYTES)]


class AgentToClient:
    """Link frames in, client events out (None: not for this client)."""

    def __init__(self) -> None:
        self._response_id: str | None = None
        self._item_id: str | None = None

    def text(self, text: str) -> str | None:
        try:
            event = parse_event(text)
        except ProtocolError:
            return text  # the agent's junk reaches the client as it would over WebRTC
        kind = event["type"]
        if kind == events.OUTPUT_AUDIO_BUFFER_CLEAR:
            return None
        if kind == events.RESPONSE_CREATED:
            response = event.get("response")
            if isinstance(response, dict) and isinstance(response.get("id"), str):
                self._response_id = response["id"]
                self._item_id = None
        elif kind in (events.RESPONSE_OUTPUT_ITEM_ADDED, events.CONVERSATION_ITEM_CREATED):
            item = event.get("item")
            if (
                isinstance(item, dict)
                and item.get("role") == "assistant"
                and isinstance(item.get("id"), str)
            ):
                self._item_id = item["id"]
        return text

    def audio(self, pcm: bytes) -> str:
        if self._response_id is None:
            self._response_id = new_id("resp")  # audio outside any response: name one
        if self._item_id is None:
            self._item_id = new_id("item")
        delta = make_event(
            events.RESPONSE_OUTPUT_AUDIO_DELTA,
            response_id=self._response_id,
            item_id=self._item_id,
            output_index=0,
            content_index=0,
            delta=base64.b64encode(pcm).decode("ascii"),
        )
        return encode_event(delta)


def _format_problem(session: object) -> str | None:
    if not isinstance(session, dict):
        return None  # the agent answers a malformed session.update itself
    audio = session.get("audio")
    if not isinstance(audio, dict):
        return None
    for direction in ("input", "output"):
        part = audio.get(direction)
        fmt = part.get("format") if isinstance(part, dict) else None
        if fmt is not None and fmt != PCM_FORMAT:
            return (
                f"session.audio.{direction}.format {json.dumps(fmt)} is not carried here;"
                f" the WebSocket interface speaks {json.dumps(PCM_FORMAT)}"
            )
    return None


def _refuse(
    code: str, message: str, event: dict[str, Any] | None = None, param: str | None = None
) -> Refusal:
    event_id = event.get("event_id") if event is not None else None
    return Refusal(
        encode_event(
            error_event(
                message,
                code=code,
                param=param,
                event_id=event_id if isinstance(event_id, str) else None,
            )
        )
    )
