"""One spoken response: text from a responder, synthesised part by part, paced out.

A Reply is made before it is heard: the agent starts one while the user is
still in the silence that may end their turn, so its first audio is ready
when the turn ends. ``release`` announces it (the Realtime response events)
and starts playback; until then ``discard`` drops it without a trace.
Playback can be interrupted (barge-in: the transceiver drops its queue at
once), resumed (a false interruption), or cancelled, which reports the
truncation the way the Realtime API does.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, Literal

from talkwire.agents.base import Call
from talkwire.agents.voice.llm import LlmError
from talkwire.agents.voice.playout import Playout
from talkwire.agents.voice.text import SentenceBuffer
from talkwire.protocol.events import (
    CONVERSATION_ITEM_CREATED,
    CONVERSATION_ITEM_TRUNCATED,
    RESPONSE_CONTENT_PART_ADDED,
    RESPONSE_CONTENT_PART_DONE,
    RESPONSE_CREATED,
    RESPONSE_DONE,
    RESPONSE_OUTPUT_AUDIO_DONE,
    RESPONSE_OUTPUT_AUDIO_TRANSCRIPT_DELTA,
    RESPONSE_OUTPUT_AUDIO_TRANSCRIPT_DONE,
    RESPONSE_OUTPUT_ITEM_ADDED,
    RESPONSE_OUTPUT_ITEM_DONE,
    ResponseStatus,
    assistant_audio_item,
    make_event,
    new_id,
    response_object,
)

log = logging.getLogger(__name__)

Synthesize = Callable[[str], Awaitable[bytes]]
FALLBACK_TEXT = "Sorry, I can't reach the language model right now."
CancelReason = Literal["turn_detected", "client_cancelled"]


class Reply:
    def __init__(
        self,
        call: Call,
        text: AsyncIterator[str],
        synthesize: Synthesize,
        on_finished: Callable[[Reply], None],
    ) -> None:
        self.id = new_id("resp")
        self.item_id = new_id("item")
        self.playout = Playout()
        self.released = False
        self.finished = False
        self.status: ResponseStatus = "in_progress"
        self.heard_ms: int | None = None  # set when playback was interrupted
        self._call = call
        self._text = text
        self._synthesize = synthesize
        self._on_finished = on_finished
        self._wake = asyncio.Event()
        self._loop = asyncio.get_running_loop()
        self._generator = call.create_task(self._generate(), name=f"reply text {self.id}")
        self._pump: asyncio.Task[None] | None = None

    @property
    def speaking(self) -> bool:
        """Released and not finished: its audio is (or is about to be) playing."""
        return self.released and not self.finished

    @property
    def transcript(self) -> str:
        """What the user heard (if cut off), else the whole reply."""
        if self.heard_ms is not None or self.status == "cancelled":
            return self.playout.heard_text(self._loop.time())
        return self.playout.text()

    # -- lifecycle ---------------------------------------------------------------

    async def release(self, previous_item_id: str | None) -> None:
        """Announce the response and start playing it."""
        self.released = True
        item = assistant_audio_item(self.item_id, "in_progress")
        send = self._call.send_event
        await send(make_event(RESPONSE_CREATED, response=response_object(self.id, "in_progress")))
        await send(
            make_event(RESPONSE_OUTPUT_ITEM_ADDED, response_id=self.id, output_index=0, item=item)
        )
        await send(
            make_event(CONVERSATION_ITEM_CREATED, previous_item_id=previous_item_id, item=item)
        )
        await send(
            make_event(
                RESPONSE_CONTENT_PART_ADDED,
                **self._where(),
                part={"type": "output_audio", "transcript": ""},
            )
        )
        self._pump = self._call.create_task(self._play(), name=f"reply audio {self.id}")

    async def interrupt(self, *, clear: bool = True) -> None:
        """Barge-in: stop at once (the transceiver drops what it holds); keep the rest."""
        if self.finished or self.playout.paused:
            return
        self.heard_ms = self.playout.interrupt(self._loop.time())
        if self.released and clear:
            await self._call.clear_audio()

    def resume(self) -> None:
        """A false interruption: play on from where it stopped."""
        if self.finished:
            return
        self.heard_ms = None
        self.playout.resume()
        self._wake.set()

    async def cancel(self, reason: CancelReason, *, clear: bool = True) -> None:
        """End it now; if it was announced, report what was heard and the truncation.

        ``clear=False`` when the transceiver has dropped the audio already.
        """
        if self.finished:
            return
        if not self.playout.paused:
            await self.interrupt(clear=clear)
        await self._stop_tasks()
        if self.released:
            heard = self.heard_ms or 0
            await self._call.send_event(
                make_event(
                    CONVERSATION_ITEM_TRUNCATED,
                    item_id=self.item_id,
                    content_index=0,
                    audio_end_ms=heard,
                )
            )
            await self._complete("cancelled", {"type": "cancelled", "reason": reason})
        else:
            self._finish("cancelled")

    async def discard(self) -> None:
        """Drop a reply that was never released (the user went on speaking)."""
        if not self.released and not self.finished:
            await self._stop_tasks()
            self._finish("cancelled")

    # -- work ----------------------------------------------------------------------

    async def _generate(self) -> None:
        parts = SentenceBuffer()
        try:
            async for delta in self._text:
                for part in parts.feed(delta):
                    await self._speak(part)
        except LlmError as exc:
            log.warning("reply %s: %s", self.id, exc, extra={"call_id": self._call.call_id})
            await self._call.send_error(str(exc), code="llm_failed", error_type="server_error")
            parts.flush()
            if not self.playout.text():
                await self._speak(FALLBACK_TEXT)
        for part in parts.flush():
            await self._speak(part)
        self.playout.finish()
        self._wake.set()

    async def _speak(self, part: str) -> None:
        self.playout.add(await self._synthesize(part), part)
        self._wake.set()

    async def _play(self) -> None:
        playout = self.playout
        while True:
            now = self._loop.time()
            chunk = playout.take(now)
            if chunk is not None:
                for text in chunk.texts:
                    await self._call.send_event(
                        make_event(
                            RESPONSE_OUTPUT_AUDIO_TRANSCRIPT_DELTA,
                            **self._where(),
                            delta=text + " ",
                        )
                    )
                await self._call.send_audio(chunk.pcm)
                continue
            if playout.done(now):
                break
            await self._sleep(playout.wake_at(now), now)
        await self._complete("completed", None)

    async def _sleep(self, until: float | None, now: float) -> None:
        self._wake.clear()
        # A wake (new audio, a resume) ends the wait early; the loop re-checks.
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(None if until is None else max(0.0, until - now)):
                await self._wake.wait()

    async def _stop_tasks(self) -> None:
        current = asyncio.current_task()
        for task in (self._generator, self._pump):
            if task is not None and task is not current and not task.done():
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task

    # -- events ---------------------------------------------------------------------

    def _where(self) -> dict[str, Any]:
        return {
            "response_id": self.id,
            "item_id": self.item_id,
            "output_index": 0,
            "content_index": 0,
        }

    async def _complete(self, status: ResponseStatus, details: dict[str, Any] | None) -> None:
        self._finish(status)
        transcript = self.transcript
        item = assistant_audio_item(
            self.item_id, "completed" if status == "completed" else "incomplete", transcript
        )
        send = self._call.send_event
        await send(make_event(RESPONSE_OUTPUT_AUDIO_DONE, **self._where()))
        await send(
            make_event(
                RESPONSE_OUTPUT_AUDIO_TRANSCRIPT_DONE, **self._where(), transcript=transcript
            )
        )
        await send(
            make_event(
                RESPONSE_CONTENT_PART_DONE,
                **self._where(),
                part={"type": "output_audio", "transcript": transcript},
            )
        )
        await send(
            make_event(RESPONSE_OUTPUT_ITEM_DONE, response_id=self.id, output_index=0, item=item)
        )
        await send(
            make_event(RESPONSE_DONE, response=response_object(self.id, status, [item], details))
        )

    def _finish(self, status: ResponseStatus) -> None:
        if not self.finished:
            self.finished = True
            self.status = status
            self._on_finished(self)
