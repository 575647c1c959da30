"""The client end of the internal protocol: one WebSocket per call to an agent.

The transceiver opens it for each WebRTC call, signaling for each Realtime
WebSocket session. Text frames are Realtime events, passed to ``on_event``
verbatim; binary frames are PCM16 audio. The one event acted on here is
``output_audio_buffer.clear`` (barge-in).
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable
from typing import Any

import aiohttp

from talkwire.errors import ProtocolError
from talkwire.protocol import events
from talkwire.protocol.events import make_event, parse_event

log = logging.getLogger(__name__)

SEND_TIMEOUT_S = 2.0  # an agent that stops reading this long is stalled
# A ping this often, a pong due within half of it: a hung agent is found in 6 s.
HEARTBEAT_S = 4.0
CONNECT_TIMEOUT_S = 5.0


class AgentError(Exception):
    """The agent failed this call: unreachable, closed, stalled or broken.

    The message names internal addresses: it is for the log. ``public_event``
    is what the browser or WebSocket client is told.
    """

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code

    def public_event(self) -> str:
        message = _PUBLIC_MESSAGES.get(self.code, "The model's agent failed; the call is over.")
        return error_event(self.code, message)


_PUBLIC_MESSAGES = {
    "agent_unreachable": "The model's agent could not be reached; try again.",
    "agent_refused": "The model's agent refused this server: a configuration fault.",
    "agent_stalled": "The model's agent stopped answering; the call is over.",
    "agent_closed": "The model's agent ended the call abnormally.",
    "agent_failed": "The connection to the model's agent failed; the call is over.",
}


class AgentLink:
    def __init__(
        self,
        url: str,
        session: dict[str, Any],
        http: aiohttp.ClientSession,
        on_event: Callable[[str], None],
        on_audio: Callable[[bytes], None],
        on_clear: Callable[[], None],
    ) -> None:
        self._url = url
        self._session = session
        self._http = http
        self._on_event = on_event
        self._on_audio = on_audio
        self._on_clear = on_clear
        self._ws: aiohttp.ClientWebSocketResponse | None = None
        self.connected = asyncio.Event()
        self.frames_sent = 0
        self.frames_received = 0
        self.response_id: str | None = None  # the agent's latest response.created

    async def run(self) -> None:
        """Connect, hand over the session, relay until either side ends.

        Returns when the agent closes normally; raises AgentError otherwise.
        """
        try:
            self._ws = await self._http.ws_connect(
                self._url,
                heartbeat=HEARTBEAT_S,
                timeout=aiohttp.ClientWSTimeout(ws_close=2.0),
                max_msg_size=4 * 1024 * 1024,
            )
        except aiohttp.WSServerHandshakeError as exc:
            if exc.status == 401:
                raise AgentError(
                    "agent_refused", f"agent at {self._url} refused the internal secret"
                ) from exc
            raise AgentError("agent_unreachable", f"agent at {self._url}: {exc}") from exc
        except (aiohttp.ClientError, OSError, TimeoutError) as exc:
            raise AgentError(
                "agent_unreachable", f"agent at {self._url} unreachable: {exc}"
            ) from exc
        ws = self._ws
        await ws.send_str(json.dumps(make_event("session.update", session=self._session)))
        self.connected.set()
        async for message in ws:
            if message.type == aiohttp.WSMsgType.BINARY:
                self.frames_received += 1
                self._on_audio(message.data)
            elif message.type == aiohttp.WSMsgType.TEXT:
                self._handle_text(message.data)
            elif message.type == aiohttp.WSMsgType.ERROR:
                failure = ws.exception()
                if isinstance(failure, aiohttp.ServerTimeoutError):
                    # A hung agent stops answering pings before its buffers fill.
                    raise AgentError("agent_stalled", f"agent stopped answering: {failure}")
                raise AgentError("agent_failed", f"agent connection failed: {failure}")
        if ws.close_code not in (None, aiohttp.WSCloseCode.OK, aiohttp.WSCloseCode.GOING_AWAY):
            raise AgentError("agent_closed", f"agent closed the call (code {ws.close_code})")

    def _handle_text(self, text: str) -> None:
        try:
            event = parse_event(text)
        except ProtocolError as exc:
            # Junk from the agent degrades this call only: the browser hears of it.
            self._on_event(error_event("agent_protocol_error", f"agent sent junk: {exc}"))
            return
        kind = event["type"]
        if kind == events.RESPONSE_CREATED:
            response = event.get("response")
            if isinstance(response, dict) and isinstance(response.get("id"), str):
                # Audio from here on is this response's: playout events name it.
                self.response_id = response["id"]
        self._on_event(text)
        if kind == events.OUTPUT_AUDIO_BUFFER_CLEAR:
            self._on_clear()

    async def send(self, item: bytes | str) -> None:
        """Audio (bytes) or an event (str); AgentError if the agent stopped reading."""
        ws = self._ws
        if ws is None or ws.closed:
            return
        frame = ws.send_bytes(item) if isinstance(item, bytes) else ws.send_str(item)
        try:
            # asyncio.timeout, not wait_for: on 3.11 wait_for can swallow a
            # cancellation that races a completed send, and the call never ends.
            async with asyncio.timeout(SEND_TIMEOUT_S):
                await frame
        except TimeoutError as exc:
            raise AgentError("agent_stalled", "agent stopped reading") from exc
        except (ConnectionError, aiohttp.ClientError):
            return
        if isinstance(item, bytes):
            self.frames_sent += 1

    async def close(self) -> None:
        if self._ws is not None and not self._ws.closed:
            await self._ws.close()


def error_event(code: str, message: str) -> str:
    return json.dumps(events.error_event(message, code=code, error_type="server_error"))
