"""The signaling aiohttp application: routes, CORS, OpenAI-shaped errors, and
the lifetime of its HTTP client and health poller."""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import math
import random
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import aiohttp
from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST

from talkwire.internal_auth import bearer
from talkwire.rate_limit import RateLimiter
from talkwire.registry.base import Registry, RegistryUnavailable
from talkwire.signaling import client_secrets, demo
from talkwire.signaling.agents import announced_models, models_for
from talkwire.signaling.auth import authenticate, require_api_key
from talkwire.signaling.calls import handle_create, handle_hangup
from talkwire.signaling.config import SignalingConfig
from talkwire.signaling.errors import (
    SERVER_ERROR,
    ApiError,
    bad_request,
    error_response,
    unavailable,
)
from talkwire.signaling.health import HealthPoller
from talkwire.signaling.offer import read_within, too_large
from talkwire.signaling.placement import accepts_calls, is_healthy
from talkwire.signaling.realtime_ws import handle_realtime
from talkwire.signaling.regions import choose_region
from talkwire.signaling.state import STATE, SignalingState, state

log = logging.getLogger("talkwire.signaling")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

_ALLOW_METHODS = "GET, POST, OPTIONS"
_DEFAULT_ALLOW_HEADERS = "Authorization, Content-Type"
_PREFLIGHT_MAX_AGE_S = "600"
POLLER = web.AppKey("talkwire_signaling_poller", HealthPoller)


def _cors_headers(origins: tuple[str, ...], origin: str | None, headers: dict[str, str]) -> None:
    if origin is None:
        return
    if "*" in origins:
        headers["Access-Control-Allow-Origin"] = "*"
    elif origin in origins:
        headers["Access-Control-Allow-Origin"] = origin
        headers["Vary"] = "Origin"
    else:
        return
    # The call id is in Location; a page on another origin needs to read it.
    headers["Access-Control-Expose-Headers"] = "Location"


@web.middleware
async def cors_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    origins = state(request).config.cors_origins
    origin = request.headers.get("Origin")
    extra: dict[str, str] = {}
    _cors_headers(origins, origin, extra)
    if request.method == "OPTIONS" and "Access-Control-Request-Method" in request.headers:
        response: web.StreamResponse = web.Response(status=204)
        if extra:
            extra["Access-Control-Allow-Methods"] = _ALLOW_METHODS
            # Echo what the page asks for: the SDK adds its own x- headers,
            # and no cookies are involved, so any header is harmless here.
            extra["Access-Control-Allow-Headers"] = request.headers.get(
                "Access-Control-Request-Headers", _DEFAULT_ALLOW_HEADERS
            )
            extra["Access-Control-Max-Age"] = _PREFLIGHT_MAX_AGE_S
    else:
        response = await handler(request)
    response.headers.update(extra)
    return response


def _limit_key(request: web.Request, limit: str) -> str | None:
    """What ``limit`` counts a request against (None: nothing to count). The API
    key is hashed: the table outlives requests, and a key is a secret."""
    if limit == "ip":
        return request.remote or "unknown"
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() == "bearer" and token:
        return hashlib.sha256(token.encode()).hexdigest()[:32]
    return None


@web.middleware
async def rate_limit_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Every POST (calls, hangups, client secrets) and Realtime WebSocket
    connection spends from its client IP's and its API key's buckets; reads
    (health, metrics, the page) are free."""
    st = state(request)
    if (request.method == "POST" or request.path == "/v1/realtime") and st.limits:
        now = st.clock()
        for limit, limiter in st.limits.items():
            key = _limit_key(request, limit)
            wait = limiter.take(key, now) if key is not None else 0.0
            if wait > 0:
                st.metrics.rate_limited.labels(limit).inc()
                retry_after = max(1, math.ceil(wait))
                who = "this address" if limit == "ip" else "this API key"
                response = ApiError(
                    429,
                    "rate_limit_exceeded",
                    f"Too many requests from {who}; retry after {retry_after} s.",
                    type="requests",
                ).response()
                response.headers["Retry-After"] = str(retry_after)
                return response
    return await handler(request)


@web.middleware
async def error_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except ApiError as exc:
        return exc.response()
    except web.HTTPRequestEntityTooLarge:
        return too_large(state(request).config.max_body_bytes).response()
    except RegistryUnavailable as exc:
        log.warning("%s %s: %s", request.method, request.path, exc)
        return unavailable(
            "registry_unavailable", "Signaling cannot reach its registry right now; try again."
        ).response()
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status)
        response = ApiError(exc.status, code, exc.reason).response()
        if "Allow" in exc.headers:
            response.headers["Allow"] = exc.headers["Allow"]
        return response
    except Exception:
        log.exception("unhandled error on %s %s", request.method, request.path)
        body = ApiError(500, None, "Internal server error.", type=SERVER_ERROR).body()
        return error_response(500, body)


async def _read_json(request: web.Request) -> Any:
    raw = await read_within(request.read(), state(request).config.body_timeout_s)
    if not raw.strip():
        return None
    try:
        return json.loads(raw)
    except ValueError:
        raise bad_request("invalid_json", "The request body is not valid JSON.") from None


async def mint_for(request: web.Request) -> dict[str, Any]:
    """Parse a client-secret request body and mint a key (auth is the caller's)."""
    st = state(request)
    region = choose_region(st.config.regions, request.remote, request.headers)
    parsed = client_secrets.parse_request(
        await _read_json(request), await models_for(st, region), st.config.default_model
    )
    minted = await client_secrets.mint(st.registry, parsed, st.clock())
    st.metrics.client_secrets.inc()
    return minted


async def handle_client_secrets(request: web.Request) -> web.Response:
    st = state(request)
    principal = await authenticate(
        request.headers.get("Authorization"), st.config.api_keys, st.registry
    )
    require_api_key(principal)
    return web.json_response(await mint_for(request))


async def handle_healthz(request: web.Request) -> web.Response:
    st = state(request)
    now = st.clock()
    max_age = st.config.health_max_age_s
    infos = await st.registry.transceivers()
    counts = {
        "known": len(infos),
        "healthy": sum(1 for t in infos if is_healthy(t, now, max_age)),
        "accepting": sum(1 for t in infos if accepts_calls(t, now, max_age)),
    }
    body: dict[str, Any] = {"status": "ok", "transceivers": counts}
    if st.config.discover_agents:
        # The models announced agent servers serve now (those given by --model aside).
        announced = announced_models(await st.registry.agents(), None, now, max_age, st.rng)
        body["announced_models"] = sorted(announced)
    return web.json_response(body)


async def handle_metrics(request: web.Request) -> web.Response:
    return web.Response(
        body=state(request).metrics.render(), headers={"Content-Type": CONTENT_TYPE_LATEST}
    )


async def _lifetime(app: web.Application) -> AsyncIterator[None]:
    st = app[STATE]
    st.http = aiohttp.ClientSession(headers=bearer(st.config.internal_secret))
    poller = HealthPoller(
        st.registry,
        st.config.transceivers,
        st.http,
        clock=st.clock,
        interval_s=st.config.health_interval_s,
        timeout_s=st.config.health_interval_s,
        max_failures=st.config.health_failures,
    )
    app[POLLER] = poller
    poller.start()
    try:
        yield
    finally:
        await poller.stop()
        await st.http.close()
        st.http = None


async def _close_websockets(app: web.Application) -> None:
    # On shutdown, not cleanup: aiohttp waits for live handlers in between.
    await asyncio.gather(*(bridge.close() for bridge in list(app[STATE].websockets)))


def make_signaling_app(
    config: SignalingConfig,
    registry: Registry,
    *,
    clock: Callable[[], float] = time.time,
    rng: random.Random | None = None,
) -> web.Application:
    """The signaling app. ``clock`` (unix seconds) must be the registry's
    clock too; tests pass one they control to expire keys without waiting."""
    app = web.Application(
        # CORS outermost, so a browser can read a 429 too.
        middlewares=[cors_middleware, rate_limit_middleware, error_middleware],
        # aiohttp's own cap; offer.read_offer also checks Content-Length first.
        client_max_size=config.max_body_bytes,
    )
    rates = {"ip": config.rate_per_ip, "key": config.rate_per_key}
    app[STATE] = SignalingState(
        config=config,
        registry=registry,
        clock=clock,
        rng=rng or random.Random(),
        limits={name: RateLimiter(rate) for name, rate in rates.items() if rate is not None},
    )
    app.cleanup_ctx.append(_lifetime)
    app.on_shutdown.append(_close_websockets)
    app.router.add_get("/v1/realtime", handle_realtime)
    app.router.add_post("/v1/realtime/calls", handle_create)
    app.router.add_post("/v1/realtime/calls/{call_id}/hangup", handle_hangup)
    app.router.add_post("/v1/realtime/client_secrets", handle_client_secrets)
    app.router.add_get("/healthz", handle_healthz)
    app.router.add_get("/metrics", handle_metrics)
    if config.demo_dir is not None:
        demo.add_routes(app, config.demo_dir, mint_for, sorted(config.models), config.default_model)
    return app
