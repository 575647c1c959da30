"""The offline voice agent: listens while the user speaks, answers, stops when interrupted.

Per call: silero VAD on every frame → turn detection (``turns``) with the
session's ``server_vad`` settings; Whisper passes over the growing utterance
while the user speaks (partial transcripts, best effort); when the user
pauses, the final transcript and the reply start at once, speculatively, so
the reply is ready when the silence becomes the end of the turn (and is
dropped if the user goes on). Speech during a reply stops its audio at once;
the interruption is confirmed by 300 ms of speech or by words, and a cough
that is neither lets the reply resume where it stopped.

Models are shared by every call of the process (``VoiceModels``); inference
runs on its worker threads, never on the event loop.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any, ClassVar, Final

import numpy as np

from talkwire.agents.base import Agent, Call
from talkwire.agents.vad import frame_dbfs
from talkwire.agents.voice.models import VoiceModels
from talkwire.agents.voice.pool import PoolBusy
from talkwire.agents.voice.reply import Reply
from talkwire.agents.voice.responder import Message, Responder
from talkwire.agents.voice.stt import StreamingTranscript, Transcription
from talkwire.agents.voice.text import content_words, words
from talkwire.agents.voice.turns import (
    OnsetGate,
    SessionValueError,
    TurnConfig,
    TurnDetector,
    TurnEvent,
    parse_turn_detection,
)
from talkwire.agents.voice.vad import MODEL_RATE
from talkwire.protocol.events import (
    CONVERSATION_ITEM_CREATE,
    CONVERSATION_ITEM_CREATED,
    INPUT_AUDIO_BUFFER_CLEAR,
    INPUT_AUDIO_BUFFER_CLEARED,
    INPUT_AUDIO_BUFFER_COMMIT,
    INPUT_AUDIO_BUFFER_COMMITTED,
    INPUT_AUDIO_BUFFER_SPEECH_STARTED,
    INPUT_AUDIO_BUFFER_SPEECH_STOPPED,
    INPUT_TRANSCRIPTION_COMPLETED,
    INPUT_TRANSCRIPTION_DELTA,
    OUTPUT_AUDIO_BUFFER_CLEAR,
    RESPONSE_CANCEL,
    RESPONSE_CREATE,
    make_event,
    merge_session,
    new_id,
    user_audio_item,
)

VOICE: Final = "joe"
TRANSCRIPTION_MODEL: Final = "whisper-tiny.en"
MAX_HISTORY: Final = 40
MIN_COMMIT_S: Final = 0.1  # the Realtime API's minimum for input_audio_buffer.commit
UNHEARD: Final = "Sorry, I didn't catch that."
# While no one speaks, keep enough audio for the longest prefix padding.
_IDLE_KEEP_S: Final = 2.5


@dataclass(frozen=True, slots=True)
class VoiceSettings:
    max_turn_s: float = 30.0  # longer speech is cut into a turn there (and the client told)
    partial_every_s: float = 0.4  # new speech between best-effort partial transcripts
    # Speech (as silero measures it, ~100 ms longer than the sound) that confirms a
    # barge-in even without words: a cough or an "uh" under ~300 ms lets the reply resume.
    false_interruption_ms: int = 400
    # Pause a reply on the first loud frame, before silero is sure (resumed if it is not).
    fast_barge_in: bool = True
    onset_confirm_ms: int = 250  # audio time silero gets to confirm such a pause
    # Speech this long that Whisper makes nothing of is still someone talking to
    # us: answer it (UNHEARD) rather than leave them in silence.
    unheard_reply_ms: int = 400
    partials: bool = True


class InputAudio:
    """The user's 16 kHz audio: the turn in progress, or just the recent past (its padding)."""

    def __init__(self) -> None:
        self._chunks: list[np.ndarray] = []
        self._first = 0  # sample index (since the call began) of the first kept sample
        self._total = 0  # samples received
        self._turn_start: int | None = None

    def append(self, audio: np.ndarray) -> None:
        if len(audio) == 0:
            return
        self._chunks.append(audio)
        self._total += len(audio)
        if self._turn_start is None:
            self._trim(self._total - int(_IDLE_KEEP_S * MODEL_RATE))

    def begin(self, start_ms: int) -> None:
        self._turn_start = max(self._first, start_ms * MODEL_RATE // 1000)

    @property
    def collecting(self) -> bool:
        return self._turn_start is not None

    @property
    def turn_samples(self) -> int:
        return 0 if self._turn_start is None else self._total - self._turn_start

    def snapshot(self) -> np.ndarray:
        if self._turn_start is None or not self._chunks:
            return np.zeros(0, dtype=np.float32)
        audio = np.concatenate(self._chunks)
        return audio[self._turn_start - self._first :]

    def end(self) -> None:
        self._turn_start = None
        self._trim(self._total - int(_IDLE_KEEP_S * MODEL_RATE))

    def _trim(self, keep_from: int) -> None:
        while self._chunks and self._first + len(self._chunks[0]) <= keep_from:
            self._first += len(self._chunks.pop(0))


@dataclass(eq=False)
class UserTurn:
    item_id: str
    transcript: StreamingTranscript = field(default_factory=StreamingTranscript)
    interrupted: Reply | None = None  # the reply this speech paused
    confirmed: bool = False  # ... and the interruption is real
    partial_at: int = 0  # turn samples the latest partial pass started from
    partial: asyncio.Task[None] | None = None
    speculation: asyncio.Task[Transcription] | None = None
    reply: Reply | None = None  # prepared by the speculation, not released yet
    speech_ms: int = 0  # as the turn detector measured it when the turn ended
    done: bool = False


class VoiceAgent(Agent):
    name: ClassVar[str] = "voice"

    def __init__(
        self,
        call: Call,
        models: VoiceModels,
        responder: Responder,
        settings: VoiceSettings | None = None,
    ) -> None:
        super().__init__(call)
        self._models = models
        self._responder = responder
        self._settings = settings or VoiceSettings()
        self._vad = models.vads.acquire()
        self._turns = TurnDetector()
        self._onset = OnsetGate()
        self._onset_paused: tuple[Reply, int] | None = None  # paused by loudness, at audio ms
        self._vad_on = True
        self._input = InputAudio()
        self._turn: UserTurn | None = None
        self._finishing: asyncio.Task[None] | None = None
        self._reply: Reply | None = None  # the released reply, until it ends
        self._history: list[Message] = []
        self._last_item: str | None = None
        self._instructions = ""

    # -- session ------------------------------------------------------------------

    async def on_start(self) -> dict[str, Any]:
        session = self.call.session
        try:
            _check_session(session)
        except SessionValueError as exc:
            await self.call.send_error(str(exc), code="invalid_value", param=exc.param)
            audio = dict(session.get("audio") or {})
            audio["input"] = {**dict(audio.get("input") or {}), "turn_detection": {}}
            session = {**session, "audio": audio}
        return self.configure(session)

    async def update_session(self, event: Any) -> dict[str, Any] | None:
        update = event.get("session")
        if isinstance(update, dict):
            try:
                _check_session(merge_session(self.call.session, update))
            except SessionValueError as exc:
                await self.call.send_error(
                    str(exc), code="invalid_value", param=exc.param, event_id=event.get("event_id")
                )
                return None
        return await super().update_session(event)

    def configure(self, session: dict[str, Any]) -> dict[str, Any]:
        audio = dict(session.get("audio") or {})
        audio_in = dict(audio.get("input") or {})
        raw = audio_in.get("turn_detection", {})
        config = parse_turn_detection(raw)
        vad_on = config is not None
        if config is not None:
            self._turns.set_config(config)
            kind = raw.get("type", "server_vad") if isinstance(raw, dict) else "server_vad"
            extra = (
                {"eagerness": raw["eagerness"]}
                if kind == "semantic_vad" and "eagerness" in raw
                else {}
            )
            audio_in["turn_detection"] = config.as_session(kind, extra)
        else:
            audio_in["turn_detection"] = None
        if vad_on != self._vad_on:
            # Between server VAD and manual commits the input buffer starts afresh.
            self._turns.reset()
            self._input.end()
            if not vad_on:
                self._input.begin(self._vad.now_ms)
        self._vad_on = vad_on
        audio_in["transcription"] = {"model": TRANSCRIPTION_MODEL, "language": "en"}
        audio["input"] = audio_in
        audio["output"] = {**dict(audio.get("output") or {}), "voice": VOICE}
        instructions = session.get("instructions")
        self._instructions = instructions if isinstance(instructions, str) else ""
        return {**session, "audio": audio, "output_modalities": ["audio"]}

    @property
    def _config(self) -> TurnConfig:
        return self._turns.config

    # -- audio ----------------------------------------------------------------------

    async def on_audio(self, pcm: bytes) -> None:
        windows, audio = self._vad.feed(pcm)
        self._input.append(audio)
        if not self._vad_on:
            return
        onset = self._onset.feed(frame_dbfs(pcm))
        if onset and self._turn is None:
            await self._pause_on_onset()
        for window in windows:
            event = self._turns.feed(window.probability, window.start_ms, window.end_ms)
            if event is not None:
                await self._turn_event(event)
        turn = self._turn
        if turn is not None and not turn.done:
            await self._check_turn(turn)
        paused = self._onset_paused
        if paused is not None and self._vad.now_ms - paused[1] > self._settings.onset_confirm_ms:
            # Loud, but not speech: play on.
            self._onset_paused = None
            paused[0].resume()

    async def _pause_on_onset(self) -> None:
        reply = self._reply
        if (
            self._settings.fast_barge_in
            and self._config.interrupt_response
            and self._onset_paused is None
            and reply is not None
            and reply.speaking
            and not reply.playout.paused
        ):
            await reply.interrupt()
            self._onset_paused = (reply, self._vad.now_ms)

    async def _turn_event(self, event: TurnEvent) -> None:
        if event.kind == "started":
            await self._speech_started(event)
            return
        turn = self._turn
        if turn is None:
            return
        if event.kind == "paused":
            self._speculate(turn)
        elif event.kind == "resumed":
            await self._drop_speculation(turn)
        else:
            await self._send(
                INPUT_AUDIO_BUFFER_SPEECH_STOPPED,
                audio_end_ms=self._vad.now_ms,
                item_id=turn.item_id,
            )
            self._end_turn(turn)

    async def _speech_started(self, event: TurnEvent) -> None:
        if self._finishing is not None:
            # Keep events in order: the previous turn commits before this one starts.
            with contextlib.suppress(asyncio.CancelledError):
                await self._finishing
        start_ms = max(0, event.at_ms - self._config.prefix_padding_ms)
        turn = UserTurn(new_id("item"))
        self._turn = turn
        self._input.begin(start_ms)
        await self._send(
            INPUT_AUDIO_BUFFER_SPEECH_STARTED, audio_start_ms=start_ms, item_id=turn.item_id
        )
        reply = self._reply
        self._onset_paused = None  # speech it is: whatever the loudness paused stays paused
        if reply is not None and not reply.finished and self._config.interrupt_response:
            await reply.interrupt()
            turn.interrupted = reply

    async def _check_turn(self, turn: UserTurn) -> None:
        if (
            turn.interrupted is not None
            and not turn.confirmed
            and self._turns.speech_ms >= self._settings.false_interruption_ms
        ):
            await self._confirm(turn)
        if self._input.turn_samples >= self._settings.max_turn_s * MODEL_RATE:
            await self.call.send_error(
                f"speech longer than {self._settings.max_turn_s:g} s: the turn was ended there",
                code="input_audio_too_long",
            )
            await self._send(
                INPUT_AUDIO_BUFFER_SPEECH_STOPPED,
                audio_end_ms=self._vad.now_ms,
                item_id=turn.item_id,
            )
            self._end_turn(turn)
            self._turns.reset()
            return
        every = int(self._settings.partial_every_s * MODEL_RATE)
        if (
            self._settings.partials
            and self._turns.state == "speaking"
            and turn.partial is None
            and self._input.turn_samples - turn.partial_at >= every
        ):
            turn.partial_at = self._input.turn_samples
            turn.partial = self.call.create_task(self._partial(turn, self._input.snapshot()))

    async def _partial(self, turn: UserTurn, audio: np.ndarray) -> None:
        try:
            result = await self._models.transcribe(audio, urgent=False)
        except PoolBusy:
            return  # the workers are behind: skip this pass, never delay a reply
        finally:
            turn.partial = None
        if turn.done:
            return
        delta = turn.transcript.partial(result.text)
        if delta:
            await self._send(
                INPUT_TRANSCRIPTION_DELTA, item_id=turn.item_id, content_index=0, delta=delta
            )
        if (
            content_words(turn.transcript.text)
            and turn.interrupted is not None
            and not turn.confirmed
        ):
            await self._confirm(turn)

    async def _confirm(self, turn: UserTurn) -> None:
        turn.confirmed = True
        if turn.interrupted is not None:
            await turn.interrupted.cancel("turn_detected")

    # -- end of a turn ------------------------------------------------------------------

    def _speculate(self, turn: UserTurn) -> None:
        if turn.speculation is None:
            audio = self._input.snapshot()
            turn.speculation = self.call.create_task(self._prepare(turn, audio))

    async def _prepare(self, turn: UserTurn, audio: np.ndarray) -> Transcription:
        result = await self._models.transcribe(audio, urgent=True)
        if content_words(result.text) and self._config.create_response and self._vad_on:
            turn.reply = self._new_reply([*self._history, Message("user", result.text)])
        return result

    async def _drop_speculation(self, turn: UserTurn) -> None:
        task, turn.speculation = turn.speculation, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        reply, turn.reply = turn.reply, None
        if reply is not None:
            await reply.discard()

    def _end_turn(self, turn: UserTurn) -> None:
        turn.done = True
        turn.speech_ms = self._turns.speech_ms
        self._speculate(turn)  # covers all the audio if the turn was cut, not paused
        self._input.end()
        self._turn = None
        self._finishing = self.call.create_task(self._finish_turn(turn))

    async def _finish_turn(self, turn: UserTurn) -> None:
        if turn.partial is not None:
            turn.partial.cancel()
        assert turn.speculation is not None
        result = await turn.speculation
        if self._unheard(turn, result.text):
            await self._commit(turn.item_id, "", turn.transcript)
            await self._release(self._new_reply([], said=UNHEARD))
            return
        if not content_words(result.text):
            # Noise, a cough or an "um": no turn, and an interrupted reply plays on.
            await self._send(INPUT_AUDIO_BUFFER_CLEARED)
            if turn.interrupted is not None and not turn.confirmed:
                turn.interrupted.resume()
            return
        if turn.interrupted is not None and not turn.confirmed:
            await self._confirm(turn)
        await self._commit(turn.item_id, result.text, turn.transcript)
        if turn.reply is not None:
            await self._release(turn.reply)

    def _unheard(self, turn: UserTurn, text: str) -> bool:
        """Long speech and no words at all (an "um" is a word here: the speaker is thinking)."""
        return (
            not words(text)
            and turn.speech_ms >= self._settings.unheard_reply_ms
            and (turn.interrupted is None or turn.confirmed)
            and self._config.create_response
            and self._vad_on
        )

    async def _commit(self, item_id: str, text: str, transcript: StreamingTranscript) -> None:
        previous = self._last_item
        await self._send(INPUT_AUDIO_BUFFER_COMMITTED, previous_item_id=previous, item_id=item_id)
        await self._send(
            CONVERSATION_ITEM_CREATED, previous_item_id=previous, item=user_audio_item(item_id)
        )
        delta = transcript.final(text)
        if delta:
            await self._send(
                INPUT_TRANSCRIPTION_DELTA, item_id=item_id, content_index=0, delta=delta
            )
        await self._send(
            INPUT_TRANSCRIPTION_COMPLETED, item_id=item_id, content_index=0, transcript=text
        )
        self._last_item = item_id
        if text:
            self._remember(Message("user", text))

    # -- replies ------------------------------------------------------------------------

    def _new_reply(self, history: list[Message], said: str | None = None) -> Reply:
        """A reply from the responder, or one that says ``said``."""
        return Reply(
            self.call,
            self._responder.reply(history, self._instructions) if said is None else _say(said),
            self._models.synthesize,
            self._reply_finished,
        )

    async def _release(self, reply: Reply) -> None:
        current = self._reply
        if current is not None and not current.finished:
            await current.cancel("turn_detected")
        self._reply = reply
        await reply.release(self._last_item)
        self._last_item = reply.item_id

    def _reply_finished(self, reply: Reply) -> None:
        if self._reply is reply:
            self._reply = None
        if reply.released and reply.transcript:
            self._remember(Message("assistant", reply.transcript))

    def _remember(self, message: Message) -> None:
        self._history.append(message)
        del self._history[:-MAX_HISTORY]

    # -- client events ---------------------------------------------------------------------

    async def on_event(self, event: dict[str, Any]) -> None:
        kind = event["type"]
        event_id = event.get("event_id")
        reply = self._reply
        if kind == RESPONSE_CREATE:
            if reply is not None and not reply.finished:
                await self.call.send_error(
                    "a response is already in progress",
                    code="conversation_already_has_active_response",
                    event_id=event_id,
                )
                return
            await self._release(self._new_reply(list(self._history)))
        elif kind in (RESPONSE_CANCEL, OUTPUT_AUDIO_BUFFER_CLEAR):
            if reply is not None and not reply.finished:
                # After a browser's clear the transceiver has dropped the audio already.
                await reply.cancel("client_cancelled", clear=kind == RESPONSE_CANCEL)
            elif kind == RESPONSE_CANCEL:
                await self.call.send_error(
                    "there is no active response to cancel",
                    code="response_cancel_not_active",
                    event_id=event_id,
                )
        elif kind == INPUT_AUDIO_BUFFER_COMMIT:
            await self._manual_commit(event_id)
        elif kind == INPUT_AUDIO_BUFFER_CLEAR:
            await self._input_clear()
        elif kind == CONVERSATION_ITEM_CREATE:
            await self._item_create(event)
        else:
            await super().on_event(event)

    async def _manual_commit(self, event_id: str | None) -> None:
        turn = self._turn
        if turn is not None:
            await self._drop_speculation(turn)
            self._end_turn(turn)
            self._turns.reset()
            return
        audio = self._input.snapshot()
        if len(audio) < MIN_COMMIT_S * MODEL_RATE:
            await self.call.send_error(
                f"the input audio buffer holds under {MIN_COMMIT_S * 1000:g} ms of audio",
                code="input_audio_buffer_commit_empty",
                event_id=event_id,
            )
            return
        self._input.end()
        self._input.begin(self._vad.now_ms)
        result = await self._models.transcribe(audio, urgent=True)
        await self._commit(new_id("item"), result.text, StreamingTranscript())

    async def _input_clear(self) -> None:
        turn, self._turn = self._turn, None
        if turn is not None:
            turn.done = True
            if turn.partial is not None:
                turn.partial.cancel()
            await self._drop_speculation(turn)
            if turn.interrupted is not None and not turn.confirmed:
                turn.interrupted.resume()
        self._turns.reset()
        self._input.end()
        if not self._vad_on:
            self._input.begin(self._vad.now_ms)
        await self._send(INPUT_AUDIO_BUFFER_CLEARED)

    async def _item_create(self, event: dict[str, Any]) -> None:
        item = event.get("item")
        text = _item_text(item)
        if not isinstance(item, dict) or text is None:
            await self.call.send_error(
                "conversation.item.create needs a message item with text content",
                code="invalid_value",
                param="item",
                event_id=event.get("event_id"),
            )
            return
        item_id = item.get("id") if isinstance(item.get("id"), str) and item.get("id") else None
        item_id = item_id or new_id("item")
        created = {"status": "completed", **item, "id": item_id, "object": "realtime.item"}
        previous = event.get("previous_item_id", self._last_item)
        await self._send(CONVERSATION_ITEM_CREATED, previous_item_id=previous, item=created)
        self._last_item = item_id
        self._remember(Message(item["role"], text))

    async def on_close(self) -> None:
        self._models.vads.release(self._vad)

    async def _send(self, kind: str, /, **fields: Any) -> None:
        await self.call.send_event(make_event(kind, **fields))


async def _say(text: str) -> AsyncIterator[str]:
    yield text


def _check_session(session: dict[str, Any]) -> None:
    """SessionValueError naming the first field the voice agent cannot use."""
    audio = session.get("audio") or {}
    audio_in = audio.get("input") if isinstance(audio, dict) else None
    if isinstance(audio_in, dict) and "turn_detection" in audio_in:
        parse_turn_detection(audio_in["turn_detection"])
    instructions = session.get("instructions")
    if instructions is not None and not isinstance(instructions, str):
        raise SessionValueError("session.instructions", "session.instructions must be a string")


def _item_text(item: object) -> str | None:
    """The text of a message item (input_text / text / transcript parts), or None."""
    if not isinstance(item, dict) or item.get("type", "message") != "message":
        return None
    if item.get("role") not in ("user", "assistant", "system"):
        return None
    content = item.get("content")
    if not isinstance(content, list):
        return None
    texts: list[str] = []
    for part in content:
        if isinstance(part, dict):
            text = part.get("text") or part.get("transcript")
            if isinstance(text, str):
                texts.append(text)
    return " ".join(texts) if texts else None
