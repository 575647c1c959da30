"""The transceiver's internal HTTP API, called by signaling (never by clients)."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import aiohttp
from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from talkwire.internal_auth import require_secret
from talkwire.protocol.events import MAX_EVENT_BYTES
from talkwire.transceiver.sdp import MAX_OFFER_BYTES, OfferError
from talkwire.transceiver.service import Transceiver, Unavailable
from talkwire.ws_outbox import Outbox, until_first

TRANSCEIVER_KEY = web.AppKey("transceiver", Transceiver)
# Probes: a load balancer or Prometheus needs no secret.
OPEN_PATHS = frozenset({"/health", "/metrics"})
SIDEBAND_HEARTBEAT_S = 20.0
# Events held for a sideband that stopped reading before it is dropped (the call goes on).
SIDEBAND_QUEUE_EVENTS = 1000


def error(status: int, code: str, message: str) -> web.Response:
    body = {"error": {"message": message, "type": "invalid_request_error", "code": code}}
    return web.json_response(body, status=status)


async def create_call(request: web.Request) -> web.Response:
    transceiver = request.app[TRANSCEIVER_KEY]
    try:
        body: Any = await request.json(loads=json.loads)
    except ValueError:
        return error(400, "invalid_json", "request body must be JSON")
    if not isinstance(body, dict):
        return error(400, "invalid_json", "request body must be a JSON object")
    call_id, sdp = body.get("call_id"), body.get("sdp")
    session, agent_url = body.get("session", {}), body.get("agent_url")
    if not isinstance(call_id, str) or not call_id:
        return error(400, "missing_call_id", "call_id must be a non-empty string")
    if not isinstance(sdp, str):
        return error(400, "missing_sdp", "sdp must be a string")
    if not isinstance(session, dict):
        return error(400, "invalid_session", "session must be a JSON object")
    if not isinstance(agent_url, str) or not agent_url.startswith(("ws://", "wss://")):
        return error(400, "invalid_agent_url", "agent_url must be a ws:// or wss:// URL")
    try:
        call = await transceiver.create_call(call_id, sdp, session, agent_url)
    except OfferError as exc:
        return error(400, "invalid_offer", str(exc))
    except Unavailable as exc:
        return error(503, "unavailable", str(exc))
    return web.json_response({"call_id": call.call_id, "sdp": call.answer_sdp}, status=201)


async def hangup(request: web.Request) -> web.Response:
    transceiver = request.app[TRANSCEIVER_KEY]
    if await transceiver.hangup(request.match_info["call_id"]):
        return web.Response(status=204)
    return error(404, "call_not_found", "no such call on this transceiver")


async def call_info(request: web.Request) -> web.Response:
    call = request.app[TRANSCEIVER_KEY].calls.get(request.match_info["call_id"])
    if call is None:
        return error(404, "call_not_found", "no such call on this transceiver")
    return web.json_response(
        {"call_id": call.call_id, "timings_ms": call.timings.as_ms(), "audio": call.audio_stats()}
    )


async def call_events(request: web.Request) -> web.StreamResponse:
    """The sideband: a WebSocket carrying the call's events (what the browser gets)
    out, and client events in, for the agent. Signaling proxies
    ``/v1/realtime?call_id=`` here."""
    call = request.app[TRANSCEIVER_KEY].calls.get(request.match_info["call_id"])
    if call is None:
        return error(404, "call_not_found", "no such call on this transceiver")
    ws = web.WebSocketResponse(heartbeat=SIDEBAND_HEARTBEAT_S, max_msg_size=MAX_EVENT_BYTES)
    if not ws.can_prepare(request).ok:
        return error(426, "upgrade_required", "this endpoint is a WebSocket")
    await ws.prepare(request)
    outbox = Outbox(SIDEBAND_QUEUE_EVENTS)
    unwatch = call.watch(outbox.put)

    async def read() -> None:
        async for message in ws:
            if message.type != aiohttp.WSMsgType.TEXT:
                return
            problem = call.from_client(message.data)
            if problem is not None:
                outbox.put(problem)

    try:
        await until_first(
            {
                asyncio.create_task(read()),
                asyncio.create_task(outbox.send_to(ws)),
                asyncio.create_task(outbox.stalled.wait()),
                asyncio.create_task(call.wait_ended()),
            }
        )
    finally:
        unwatch()
    stalled = outbox.stalled.is_set()
    await ws.close(code=aiohttp.WSCloseCode.POLICY_VIOLATION if stalled else aiohttp.WSCloseCode.OK)
    return ws


async def health(request: web.Request) -> web.Response:
    transceiver = request.app[TRANSCEIVER_KEY]
    info = transceiver.health()
    info["api_url"] = f"{request.scheme}://{request.host}"
    return web.json_response(info)


async def metrics(request: web.Request) -> web.Response:
    transceiver = request.app[TRANSCEIVER_KEY]
    transceiver.collect_udp_metrics()
    body = generate_latest(transceiver.metrics.registry)
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})


def make_transceiver_app(transceiver: Transceiver) -> web.Application:
    auth = require_secret(transceiver.config.internal_secret, open_paths=OPEN_PATHS)
    app = web.Application(
        client_max_size=MAX_OFFER_BYTES + 16 * 1024, middlewares=[auth] if auth else []
    )
    app[TRANSCEIVER_KEY] = transceiver
    app.router.add_post("/calls", create_call)
    app.router.add_post("/calls/{call_id}/hangup", hangup)
    app.router.add_get("/calls/{call_id}", call_info)
    app.router.add_get("/calls/{call_id}/events", call_events)
    app.router.add_get("/health", health)
    app.router.add_get("/metrics", metrics)
    return app
