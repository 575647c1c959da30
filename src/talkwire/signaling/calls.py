"""`POST /v1/realtime/calls` and `POST /v1/realtime/calls/{call_id}/hangup`:
authenticate, read the offer, pick a transceiver, forward, remember the call."""

from __future__ import annotations

import asyncio
import logging
import re
import secrets
import time
from typing import Any

from aiohttp import web

from talkwire.registry.base import TransceiverInfo
from talkwire.signaling.agents import models_for
from talkwire.signaling.auth import authenticate
from talkwire.signaling.client_secrets import merge_call_session, normalize_session, resolve_model
from talkwire.signaling.errors import ApiError, unavailable
from talkwire.signaling.offer import read_offer, validate_offer
from talkwire.signaling.placement import place
from talkwire.signaling.regions import choose_region
from talkwire.signaling.state import SignalingState, state
from talkwire.signaling.transceiver_client import TransceiverUnavailable, create_call, hangup

log = logging.getLogger("talkwire.signaling.calls")

# A failing transceiver costs the client one forward timeout; one retry on
# the next candidate bounds the worst case at two.
MAX_ATTEMPTS = 2
# nginx's convention for "client closed the request", so it is not a 5xx.
CLIENT_CLOSED = 499
_CALL_ID = re.compile(r"[A-Za-z0-9_-]{1,128}")


def new_call_id() -> str:
    return "rtc_" + secrets.token_hex(16)


def call_not_found(call_id: str) -> ApiError:
    return ApiError(404, "call_not_found", f"No active call with id {call_id!r}.", param="call_id")


def call_transceiver_unavailable() -> ApiError:
    return unavailable(
        "transceiver_unavailable", "The call's transceiver did not answer; try again."
    )


async def handle_create(request: web.Request) -> web.Response:
    st = state(request)
    started = time.perf_counter()
    status = 500
    try:
        response = await _create(request, st)
        status = response.status
        st.metrics.call_setup.observe(time.perf_counter() - started)
        return response
    except ApiError as exc:
        status = exc.status
        raise
    except asyncio.CancelledError:
        status = CLIENT_CLOSED  # the client went away mid-setup
        raise
    finally:
        st.metrics.calls.labels(str(status)).inc()


async def _create(request: web.Request, st: SignalingState) -> web.Response:
    config = st.config
    principal = await authenticate(
        request.headers.get("Authorization"), config.api_keys, st.registry
    )
    text, session_json = await read_offer(request, config.max_body_bytes, config.body_timeout_s)
    sdp = validate_offer(text)
    requested = normalize_session(session_json)
    # Pre-GA clients name the model in the query string.
    if "model" not in requested and request.query.get("model"):
        requested["model"] = request.query["model"]
    session = merge_call_session(principal.session, requested)
    region = choose_region(config.regions, request.remote, request.headers)
    models = await models_for(st, region)
    model, agent_url = resolve_model(session, models, config.default_model)
    session["model"] = model
    call_id = new_call_id()
    payload = {"call_id": call_id, "sdp": sdp, "session": session, "agent_url": agent_url}
    info, answer = await _place_and_forward(st, payload, region)
    await st.registry.put_call(call_id, info.id, config.call_ttl_s)
    log.info(
        "call created",
        extra={"call_id": call_id, "transceiver": info.id, "region": region, "model": model},
    )
    return web.Response(
        status=201,
        text=answer,
        content_type="application/sdp",
        headers={"Location": f"/v1/realtime/calls/{call_id}"},
    )


async def _place_and_forward(
    st: SignalingState, payload: dict[str, Any], region: str
) -> tuple[TransceiverInfo, str]:
    config = st.config
    candidates = place(
        await st.registry.transceivers(),
        region,
        st.clock(),
        max_age_s=config.health_max_age_s,
        rng=st.rng,
    )
    no_room = "No transceiver has capacity for a new call right now; try again shortly."
    if not candidates:
        st.metrics.placement_failures.labels("no_candidate").inc()
        raise unavailable("no_transceiver_available", no_room)
    all_full = True
    for info in candidates[:MAX_ATTEMPTS]:
        # Counted before the offer goes out, so offers placed meanwhile see it.
        await _count_placed(st, info.id)
        try:
            answer = await create_call(st.client(), info, payload, config.transceiver_timeout_s)
        except TransceiverUnavailable as exc:
            await _count_placed(st, info.id, -1)
            # Full: its last report was older than the calls that filled it.
            st.metrics.placement_failures.labels(
                "transceiver_full" if exc.full else "transceiver_failed"
            ).inc()
            all_full = all_full and exc.full
            log.warning(
                "transceiver %s, trying the next: %s",
                "full" if exc.full else "failed",
                exc,
                extra={"call_id": payload["call_id"], "transceiver": info.id},
            )
            continue
        return info, answer
    raise unavailable(
        "no_transceiver_available",
        no_room
        if all_full
        else "The transceivers chosen for this call did not answer; try again shortly.",
    )


async def _count_placed(st: SignalingState, transceiver_id: str, calls: int = 1) -> None:
    # Load is reported about once a second; counting the call as it is placed
    # keeps a burst of offers from all landing on the transceiver that looked
    # idlest at the last report, and a hangup counted now frees its place at once
    # for the next caller. The next report overwrites this estimate.
    await st.registry.count_calls(transceiver_id, calls)


async def handle_hangup(request: web.Request) -> web.Response:
    st = state(request)
    status = 500
    try:
        await authenticate(request.headers.get("Authorization"), st.config.api_keys, st.registry)
        call_id = request.match_info["call_id"]
        await _hangup(st, call_id)
        status = 200
        # The Realtime API answers a hangup with 200 and no body.
        return web.Response(status=200)
    except ApiError as exc:
        status = exc.status
        raise
    finally:
        st.metrics.hangups.labels(str(status)).inc()


async def call_owner(st: SignalingState, call_id: str) -> TransceiverInfo:
    """The transceiver a live call is on, or 404 call_not_found."""
    if not _CALL_ID.fullmatch(call_id):
        raise call_not_found(call_id)
    transceiver_id = await st.registry.get_call(call_id)
    if transceiver_id is None:
        raise call_not_found(call_id)
    info = next((t for t in await st.registry.transceivers() if t.id == transceiver_id), None)
    if info is None:
        # Its transceiver is gone (failed health checks), and the call with it.
        await st.registry.delete_call(call_id)
        raise call_not_found(call_id)
    return info


async def _hangup(st: SignalingState, call_id: str) -> None:
    info = await call_owner(st, call_id)
    try:
        ended = await hangup(st.client(), info, call_id, st.config.transceiver_timeout_s)
    except TransceiverUnavailable as exc:
        # Keep the mapping: the client may retry once the transceiver answers.
        raise call_transceiver_unavailable() from exc
    await st.registry.delete_call(call_id)
    if not ended:
        raise call_not_found(call_id)
    await _count_placed(st, info.id, -1)
