"""``GET /v1/realtime?model=…``: the OpenAI Realtime WebSocket interface.

For servers (the ``openai`` SDK's ``client.realtime.connect(model=…)`` works by
base URL) and for browsers that pass the key as the
``openai-insecure-api-key.KEY`` subprotocol. Each connection is bridged to the
model's agent over the internal protocol, the same agent a WebRTC call
reaches; ``talkwire.protocol.realtime_ws`` translates the audio.

No transceiver is involved: the audio is already PCM in the WebSocket, so
signaling bridges it itself.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any, Final

import aiohttp
from aiohttp import web

from talkwire.agent_link import AgentError, AgentLink
from talkwire.agents.base import pin_audio_format
from talkwire.protocol import events
from talkwire.protocol.events import MAX_EVENT_BYTES, encode_event, new_id
from talkwire.protocol.realtime_ws import (
    MAX_CLIENT_EVENT_BYTES,
    AgentToClient,
    ClientToAgent,
    Refusal,
)
from talkwire.signaling.agents import models_for
from talkwire.signaling.auth import authenticate, require_api_key
from talkwire.signaling.calls import call_not_found, call_owner, call_transceiver_unavailable
from talkwire.signaling.client_secrets import merge_call_session, resolve_model
from talkwire.signaling.errors import ApiError
from talkwire.signaling.regions import choose_region
from talkwire.signaling.state import SignalingState, state
from talkwire.ws_outbox import Outbox, until_first

log = logging.getLogger(__name__)

SUBPROTOCOL: Final = "realtime"
_KEY_SUBPROTOCOL: Final = "openai-insecure-api-key."
# Events queued for a client that is not reading: past this it is dropped, so a
# stuck client holds a bounded amount of memory (~20 s of audio deltas).
OUT_QUEUE_EVENTS: Final = 1000
HEARTBEAT_S: Final = 20.0
UPSTREAM_HEARTBEAT_S: Final = 5.0  # inside the cluster: a lost transceiver is news soon


def _key_from_subprotocols(request: web.Request) -> str | None:
    offered = request.headers.get("Sec-WebSocket-Protocol", "")
    for name in (p.strip() for p in offered.split(",")):
        if name.startswith(_KEY_SUBPROTOCOL):
            return "Bearer " + name.removeprefix(_KEY_SUBPROTOCOL)
    return None


async def handle_realtime(request: web.Request) -> web.StreamResponse:
    st = state(request)
    header = request.headers.get("Authorization") or _key_from_subprotocols(request)
    principal = await authenticate(header, st.config.api_keys, st.registry)
    if "call_id" in request.query:
        require_api_key(principal)  # the sideband is the application server's, not the browser's
        return await _sideband(request, st, request.query["call_id"])
    requested: dict[str, Any] = {"type": "realtime"}
    if request.query.get("model"):
        requested["model"] = request.query["model"]
    session = merge_call_session(principal.session, requested)
    region = choose_region(st.config.regions, request.remote, request.headers)
    models = await models_for(st, region)
    model, agent_url = resolve_model(session, models, st.config.default_model)
    session["model"] = model
    ws = web.WebSocketResponse(
        protocols=(SUBPROTOCOL,),
        max_msg_size=MAX_CLIENT_EVENT_BYTES,
        heartbeat=HEARTBEAT_S,
        compress=False,  # base64 audio gains little; deflate would cost CPU on every frame
    )
    if not ws.can_prepare(request).ok:
        raise ApiError(426, "upgrade_required", "This endpoint is a WebSocket.")
    session_id = new_id("ws")
    await ws.prepare(request)
    bridge = Bridge(ws, st, agent_url, {**session, "talkwire": {"call_id": session_id}})
    st.websockets.add(bridge)
    st.metrics.realtime_active.inc()
    try:
        reason = await bridge.run()
    finally:
        st.websockets.discard(bridge)
        st.metrics.realtime_active.dec()
    log.info("realtime websocket ended", extra={"session": session_id, "reason": reason})
    return ws


async def _sideband(request: web.Request, st: SignalingState, call_id: str) -> web.StreamResponse:
    """``?call_id=``: the control connection of a live WebRTC call, proxied to the
    event stream of the transceiver that owns it. Events only: the audio is the call's."""
    info = await call_owner(st, call_id)
    try:
        upstream = await st.client().ws_connect(
            f"{info.api_url}/calls/{call_id}/events",
            timeout=aiohttp.ClientWSTimeout(ws_close=2.0),
            max_msg_size=0,  # the transceiver bounds what it sends
            # A host that vanishes sends nothing, not even a FIN: pings find it.
            heartbeat=UPSTREAM_HEARTBEAT_S,
        )
    except (aiohttp.ClientError, OSError, TimeoutError) as exc:
        if isinstance(exc, aiohttp.WSServerHandshakeError) and exc.status == 404:
            raise call_not_found(call_id) from None  # it ended between the lookup and now
        raise call_transceiver_unavailable() from exc
    ws = web.WebSocketResponse(
        protocols=(SUBPROTOCOL,), max_msg_size=MAX_EVENT_BYTES, heartbeat=HEARTBEAT_S
    )
    closing = _GoingAway(ws)
    try:
        if not ws.can_prepare(request).ok:
            raise ApiError(426, "upgrade_required", "This endpoint is a WebSocket.")
        await ws.prepare(request)
        st.websockets.add(closing)  # closed on shutdown like the bridged sessions
        reason = await _pipe(ws, upstream)
        if reason == "sideband_call_ended" and upstream.close_code not in _CLOSED_ON_PURPOSE:
            # No close frame: the transceiver died or its host went away, and the
            # call with it. Say so, where a hung-up call just closes.
            reason = "sideband_call_lost"
            with contextlib.suppress(ConnectionError, RuntimeError):
                await ws.send_str(CALL_LOST)
    finally:
        st.websockets.discard(closing)
        await upstream.close()
    st.metrics.realtime_sessions.labels(reason).inc()
    await ws.close(
        code=aiohttp.WSCloseCode.INTERNAL_ERROR
        if reason == "sideband_call_lost"
        else aiohttp.WSCloseCode.OK
    )
    return ws


async def _pipe(client: web.WebSocketResponse, upstream: aiohttp.ClientWebSocketResponse) -> str:
    """Text frames both ways until one side closes; a slow client slows only its own stream."""

    async def down() -> None:
        async for message in upstream:
            if message.type == aiohttp.WSMsgType.TEXT:
                await client.send_str(message.data)

    async def up() -> None:
        async for message in client:
            if message.type == aiohttp.WSMsgType.TEXT:
                await upstream.send_str(message.data)
            elif message.type == aiohttp.WSMsgType.BINARY:
                await client.send_str(BINARY_REFUSAL)

    call_side = asyncio.create_task(down())
    done = await until_first({call_side, asyncio.create_task(up())})
    if call_side not in done or call_side.exception() is not None:
        return "sideband_closed"  # the client left (or its send failed): not the call
    return "sideband_call_ended"


class _GoingAway:
    """A sideband connection as signaling's shutdown sees it."""

    def __init__(self, ws: web.WebSocketResponse) -> None:
        self.ws = ws

    async def close(self) -> None:
        await self.ws.close(code=aiohttp.WSCloseCode.GOING_AWAY)


class Bridge:
    """One client WebSocket and its agent link, until either ends."""

    def __init__(
        self,
        ws: web.WebSocketResponse,
        st: SignalingState,
        agent_url: str,
        session: dict[str, Any],
    ) -> None:
        self.ws = ws
        self._metrics = st.metrics
        self._to_agent = ClientToAgent()
        self._to_client = AgentToClient()
        self._out = Outbox(OUT_QUEUE_EVENTS)
        self._link = AgentLink(
            agent_url,
            pin_audio_format(session),
            st.client(),
            on_event=self._agent_event,
            on_audio=lambda pcm: self._out.put(self._to_client.audio(pcm)),
            on_clear=lambda: None,  # a WebSocket client plays its own audio
        )

    def _agent_event(self, text: str) -> None:
        out = self._to_client.text(text)
        if out is not None:
            self._out.put(out)

    async def run(self) -> str:
        """Bridge until one side ends; returns why (the metric's ``end`` label)."""
        agent = asyncio.create_task(self._link.run())
        reader = asyncio.create_task(self._read())
        writer = asyncio.create_task(self._out.send_to(self.ws))
        stalled = asyncio.create_task(self._out.stalled.wait())
        done = await until_first({agent, reader, writer, stalled})
        reason, code = "client_closed", aiohttp.WSCloseCode.OK
        failure = next(
            (t.exception() for t in done if not t.cancelled() and t.exception() is not None), None
        )
        if isinstance(failure, AgentError):
            reason, code = failure.code, aiohttp.WSCloseCode.INTERNAL_ERROR
            log.warning("realtime websocket: %s", failure)  # the detail names internal URLs
            with contextlib.suppress(ConnectionError, RuntimeError):
                await self.ws.send_str(failure.public_event())
        elif failure is not None:
            reason, code = "bridge_error", aiohttp.WSCloseCode.INTERNAL_ERROR
            log.error("realtime websocket failed", exc_info=failure)
        elif stalled in done:
            reason, code = "client_stalled", aiohttp.WSCloseCode.POLICY_VIOLATION
        elif agent in done:
            reason = "agent_closed"
        # Counted before the close handshake: whoever sees the close sees the count.
        self._metrics.realtime_sessions.labels(reason).inc()
        await self._link.close()
        await self.ws.close(code=code)
        return reason

    async def close(self) -> None:
        """Server shutdown: end the session going away."""
        await self.ws.close(code=aiohttp.WSCloseCode.GOING_AWAY)

    async def _read(self) -> None:
        await self._link.connected.wait()  # the handshake goes to the agent first
        async for message in self.ws:
            if message.type == aiohttp.WSMsgType.TEXT:
                out = self._to_agent.text(message.data)
                if isinstance(out, Refusal):
                    self._out.put(out.event)
                    continue
                for item in out:
                    await self._link.send(item)
            elif message.type == aiohttp.WSMsgType.BINARY:
                self._out.put(BINARY_REFUSAL)
            else:
                return


# Close codes the transceiver sends on purpose (ended, shutting down, sideband
# too slow); anything else, or none, means it is gone.
_CLOSED_ON_PURPOSE = (
    aiohttp.WSCloseCode.OK,
    aiohttp.WSCloseCode.GOING_AWAY,
    aiohttp.WSCloseCode.POLICY_VIOLATION,
)
CALL_LOST: Final = encode_event(
    events.error_event(
        "the server carrying this call stopped; the call has ended",
        code="call_lost",
        error_type="server_error",
    )
)
BINARY_REFUSAL: Final = encode_event(
    events.error_event(
        "binary frames are not part of the Realtime WebSocket API; send audio as"
        " input_audio_buffer.append with base64 PCM16",
        code="invalid_event",
    )
)
