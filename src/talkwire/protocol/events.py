"""JSON events on the agent link, modelled on the OpenAI Realtime API (GA names).

Sans-IO: ``parse_event`` turns a text frame into a dict or raises ProtocolError;
``make_event`` and the builders produce the events the agents send. The same
events travel to the browser over the ``oai-events`` data channel unchanged.
"""

from __future__ import annotations

import json
import math
import secrets
from collections.abc import Mapping
from typing import Any, Final, Literal, NotRequired, TypedDict

from talkwire.errors import ProtocolError

MAX_EVENT_BYTES: Final = 64 * 1024
_ID_BYTES: Final = 12

# Client -> server (browser or transceiver -> agent).
SESSION_UPDATE: Final = "session.update"
INPUT_AUDIO_BUFFER_COMMIT: Final = "input_audio_buffer.commit"
INPUT_AUDIO_BUFFER_CLEAR: Final = "input_audio_buffer.clear"
CONVERSATION_ITEM_CREATE: Final = "conversation.item.create"
RESPONSE_CREATE: Final = "response.create"
RESPONSE_CANCEL: Final = "response.cancel"
OUTPUT_AUDIO_BUFFER_CLEAR: Final = "output_audio_buffer.clear"

# Server -> client (agent -> transceiver -> browser).
SESSION_CREATED: Final = "session.created"
SESSION_UPDATED: Final = "session.updated"
INPUT_AUDIO_BUFFER_SPEECH_STARTED: Final = "input_audio_buffer.speech_started"
INPUT_AUDIO_BUFFER_SPEECH_STOPPED: Final = "input_audio_buffer.speech_stopped"
INPUT_AUDIO_BUFFER_COMMITTED: Final = "input_audio_buffer.committed"
INPUT_AUDIO_BUFFER_CLEARED: Final = "input_audio_buffer.cleared"
CONVERSATION_ITEM_CREATED: Final = "conversation.item.created"
RESPONSE_CREATED: Final = "response.created"
RESPONSE_OUTPUT_AUDIO_DELTA: Final = "response.output_audio.delta"
RESPONSE_OUTPUT_AUDIO_DONE: Final = "response.output_audio.done"
RESPONSE_DONE: Final = "response.done"
OUTPUT_AUDIO_BUFFER_STARTED: Final = "output_audio_buffer.started"
OUTPUT_AUDIO_BUFFER_STOPPED: Final = "output_audio_buffer.stopped"
OUTPUT_AUDIO_BUFFER_CLEARED: Final = "output_audio_buffer.cleared"
ERROR: Final = "error"
# What the voice agent adds: transcripts of both sides, and the parts of a response.
INPUT_TRANSCRIPTION_DELTA: Final = "conversation.item.input_audio_transcription.delta"
INPUT_TRANSCRIPTION_COMPLETED: Final = "conversation.item.input_audio_transcription.completed"
CONVERSATION_ITEM_TRUNCATED: Final = "conversation.item.truncated"
RESPONSE_OUTPUT_ITEM_ADDED: Final = "response.output_item.added"
RESPONSE_OUTPUT_ITEM_DONE: Final = "response.output_item.done"
RESPONSE_CONTENT_PART_ADDED: Final = "response.content_part.added"
RESPONSE_CONTENT_PART_DONE: Final = "response.content_part.done"
RESPONSE_OUTPUT_AUDIO_TRANSCRIPT_DELTA: Final = "response.output_audio_transcript.delta"
RESPONSE_OUTPUT_AUDIO_TRANSCRIPT_DONE: Final = "response.output_audio_transcript.done"

CLIENT_EVENTS: Final = frozenset(
    {
        SESSION_UPDATE,
        INPUT_AUDIO_BUFFER_COMMIT,
        INPUT_AUDIO_BUFFER_CLEAR,
        CONVERSATION_ITEM_CREATE,
        RESPONSE_CREATE,
        RESPONSE_CANCEL,
        OUTPUT_AUDIO_BUFFER_CLEAR,
    }
)
SERVER_EVENTS: Final = frozenset(
    {
        SESSION_CREATED,
        SESSION_UPDATED,
        INPUT_AUDIO_BUFFER_SPEECH_STARTED,
        INPUT_AUDIO_BUFFER_SPEECH_STOPPED,
        INPUT_AUDIO_BUFFER_COMMITTED,
        INPUT_AUDIO_BUFFER_CLEARED,
        CONVERSATION_ITEM_CREATED,
        RESPONSE_CREATED,
        RESPONSE_OUTPUT_AUDIO_DELTA,
        RESPONSE_OUTPUT_AUDIO_DONE,
        RESPONSE_DONE,
        OUTPUT_AUDIO_BUFFER_STARTED,
        OUTPUT_AUDIO_BUFFER_STOPPED,
        OUTPUT_AUDIO_BUFFER_CLEARED,
        # The agent asks the transceiver to drop queued playback (barge-in).
        OUTPUT_AUDIO_BUFFER_CLEAR,
        ERROR,
        INPUT_TRANSCRIPTION_DELTA,
        INPUT_TRANSCRIPTION_COMPLETED,
        CONVERSATION_ITEM_TRUNCATED,
        RESPONSE_OUTPUT_ITEM_ADDED,
        RESPONSE_OUTPUT_ITEM_DONE,
        RESPONSE_CONTENT_PART_ADDED,
        RESPONSE_CONTENT_PART_DONE,
        RESPONSE_OUTPUT_AUDIO_TRANSCRIPT_DELTA,
        RESPONSE_OUTPUT_AUDIO_TRANSCRIPT_DONE,
    }
)

ErrorType = Literal["invalid_request_error", "server_error"]
ResponseStatus = Literal["in_progress", "completed", "cancelled", "failed", "incomplete"]


class ErrorDetail(TypedDict):
    type: str
    code: str | None
    message: str
    param: str | None
    event_id: str | None


class ErrorEvent(TypedDict):
    type: Literal["error"]
    event_id: str
    error: ErrorDetail


class SessionEvent(TypedDict):
    """session.update, session.created, session.updated."""

    type: str
    event_id: NotRequired[str]
    session: dict[str, Any]


class SpeechStartedEvent(TypedDict):
    type: Literal["input_audio_buffer.speech_started"]
    event_id: str
    audio_start_ms: int
    item_id: str


class SpeechStoppedEvent(TypedDict):
    type: Literal["input_audio_buffer.speech_stopped"]
    event_id: str
    audio_end_ms: int
    item_id: str


class CommittedEvent(TypedDict):
    type: Literal["input_audio_buffer.committed"]
    event_id: str
    previous_item_id: str | None
    item_id: str


class ContentPart(TypedDict):
    type: str
    transcript: str | None


class Item(TypedDict):
    id: str
    object: Literal["realtime.item"]
    type: Literal["message"]
    role: Literal["user", "assistant", "system"]
    status: Literal["completed", "incomplete", "in_progress"]
    content: list[ContentPart]


class ItemCreatedEvent(TypedDict):
    type: Literal["conversation.item.created"]
    event_id: str
    previous_item_id: str | None
    item: Item


class ResponseObject(TypedDict):
    id: str
    object: Literal["realtime.response"]
    status: ResponseStatus
    status_details: dict[str, Any] | None
    output: list[Item]
    output_modalities: list[str]
    usage: dict[str, Any] | None


class ResponseEvent(TypedDict):
    """response.created and response.done."""

    type: Literal["response.created", "response.done"]
    event_id: str
    response: ResponseObject


class OutputAudioDoneEvent(TypedDict):
    type: Literal["response.output_audio.done"]
    event_id: str
    response_id: str
    item_id: str
    output_index: int
    content_index: int


def new_id(prefix: str) -> str:
    """An opaque id in the Realtime style: ``event_…``, ``item_…``, ``resp_…``, ``sess_…``."""
    return f"{prefix}_{secrets.token_urlsafe(_ID_BYTES)}"


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        # 1e999 parses to inf, which json.dumps would later refuse to send on.
        raise ValueError("non-finite number")
    return value


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def parse_event(text: str | bytes, max_bytes: int = MAX_EVENT_BYTES) -> dict[str, Any]:
    """Decode one text frame into an event dict; ProtocolError for anything else.

    Requires a JSON object of at most ``max_bytes`` (UTF-8) with a non-empty
    string ``type``; ``event_id``, if present, must be a string.
    """
    if isinstance(text, bytes | bytearray | memoryview):
        if len(text) > max_bytes:
            raise ProtocolError(f"event exceeds {max_bytes} bytes")
        try:
            text = bytes(text).decode("utf-8")
        except UnicodeDecodeError as exc:
            raise ProtocolError("event is not UTF-8") from exc
    elif not isinstance(text, str):
        raise ProtocolError(f"event must be text, not {type(text).__name__}")
    # A character is at most 4 UTF-8 bytes: short strings skip the encode.
    elif len(text) > max_bytes // 4 and (
        len(text) > max_bytes or len(text.encode("utf-8", "surrogatepass")) > max_bytes
    ):
        raise ProtocolError(f"event exceeds {max_bytes} bytes")
    try:
        value = json.loads(text, parse_float=_finite_float, parse_constant=_reject_constant)
    except RecursionError as exc:
        raise ProtocolError("event nests too deeply") from exc
    except ValueError as exc:
        # JSONDecodeError, and int() refusing a number with thousands of digits.
        raise ProtocolError(f"event is not JSON: {exc}") from exc
    if not isinstance(value, dict):
        raise ProtocolError(f"event must be a JSON object, not {type(value).__name__}")
    event_type = value.get("type")
    if not isinstance(event_type, str) or not event_type:
        raise ProtocolError("event has no string 'type'")
    if not isinstance(value.get("event_id", ""), str):
        raise ProtocolError("event 'event_id' must be a string")
    return value


def make_event(type: str, /, **fields: Any) -> dict[str, Any]:
    """An event of ``type`` with a fresh ``event_id`` (unless given) and ``fields``."""
    event: dict[str, Any] = {"type": type, "event_id": new_id("event")}
    event.update(fields)
    event["type"] = type
    return event


def encode_event(event: Mapping[str, Any]) -> str:
    """Compact JSON for a text frame; refuses NaN/inf rather than sending invalid JSON."""
    return json.dumps(event, separators=(",", ":"), ensure_ascii=False, allow_nan=False)


def error_event(
    message: str,
    *,
    code: str | None = None,
    error_type: ErrorType = "invalid_request_error",
    param: str | None = None,
    event_id: str | None = None,
) -> ErrorEvent:
    """A Realtime ``error`` event; ``event_id`` names the client event that caused it."""
    return {
        "type": "error",
        "event_id": new_id("event"),
        "error": {
            "type": error_type,
            "code": code,
            "message": message,
            "param": param,
            "event_id": event_id,
        },
    }


def user_audio_item(item_id: str) -> Item:
    return {
        "id": item_id,
        "object": "realtime.item",
        "type": "message",
        "role": "user",
        "status": "completed",
        "content": [{"type": "input_audio", "transcript": None}],
    }


def assistant_audio_item(
    item_id: str,
    status: Literal["completed", "incomplete", "in_progress"],
    transcript: str | None = None,
) -> Item:
    return {
        "id": item_id,
        "object": "realtime.item",
        "type": "message",
        "role": "assistant",
        "status": status,
        "content": [{"type": "output_audio", "transcript": transcript}],
    }


def response_object(
    response_id: str,
    status: ResponseStatus,
    output: list[Item] | None = None,
    status_details: dict[str, Any] | None = None,
) -> ResponseObject:
    return {
        "id": response_id,
        "object": "realtime.response",
        "status": status,
        "status_details": status_details,
        "output": output if output is not None else [],
        "output_modalities": ["audio"],
        "usage": None,
    }


# Deep merge stops here: session.audio.input.turn_detection is the deepest
# level a partial update needs, and a bound keeps hostile nesting harmless.
_MERGE_DEPTH: Final = 4


def merge_session(
    base: Mapping[str, Any], update: Mapping[str, Any], _depth: int = 0
) -> dict[str, Any]:
    """Apply a partial ``session.update``: given keys replace, nested objects merge."""
    merged = dict(base)
    for key, value in update.items():
        current = merged.get(key)
        if isinstance(value, dict) and isinstance(current, dict) and _depth < _MERGE_DEPTH:
            merged[key] = merge_session(current, value, _depth + 1)
        else:
            merged[key] = value
    return merged
