"""Signaling on loopback: the real app on a real port, driven by aiohttp and by
the real openai SDK, forwarding to `FakeTransceiver`s (aiohttp apps standing
in for the transceiver, which is built concurrently) that record what they
receive and answer a canned SDP."""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import socket
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import openai
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from talkwire.errors import ConfigError
from talkwire.rate_limit import Rate
from talkwire.registry.base import TransceiverInfo
from talkwire.registry.memory import MemoryRegistry
from talkwire.secret_files import write_private
from talkwire.signaling.config import SignalingConfig
from talkwire.signaling.demo import is_loopback, resolve_static
from talkwire.signaling.server import RunningSignaling, start_signaling

API_KEY = "sk-test-signaling"
ECHO_URL = "ws://127.0.0.1:8091/v1/agents/echo"
OTHER_URL = "ws://127.0.0.1:8092/v1/agents/other"
MODELS = {"echo": ECHO_URL, "gpt-realtime": OTHER_URL}
AUTH = {"Authorization": f"Bearer {API_KEY}"}
SDP_HEADERS = {**AUTH, "Content-Type": "application/sdp"}
LOCATION = re.compile(r"/v1/realtime/calls/(rtc_[0-9a-f]{32})")

# Shaped like a browser's offer posted before ICE gathering (no candidates).
OFFER = (
    "v=0\r\n"
    "o=- 4611731400430051336 2 IN IP4 127.0.0.1\r\n"
    "s=-\r\n"
    "t=0 0\r\n"
    "a=group:BUNDLE 0 1\r\n"
    "m=audio 9 UDP/TLS/RTP/SAVPF 111\r\n"
    "c=IN IP4 0.0.0.0\r\n"
    "a=ice-ufrag:cLnt\r\n"
    "a=ice-pwd:clientpasswordclientpassword\r\n"
    "a=fingerprint:sha-256 "
    "AA:BB:CC:DD:EE:FF:00:11:22:33:44:55:66:77:88:99:AA:BB:CC:DD:EE:FF:00:11:22:33:44:55:66:77:88:99\r\n"
    "a=setup:actpass\r\n"
    "a=mid:0\r\n"
    "a=sendrecv\r\n"
    "a=rtpmap:111 opus/48000/2\r\n"
    "m=application 9 UDP/DTLS/SCTP webrtc-datachannel\r\n"
    "c=IN IP4 0.0.0.0\r\n"
    "a=mid:1\r\n"
    "a=sctp-port:5000\r\n"
)
OFFER_NO_AUDIO = OFFER.replace("m=audio 9 UDP/TLS/RTP/SAVPF 111", "m=video 9 UDP/TLS/RTP/SAVPF 96")


class Clock:
    """Unix time that moves only when told to."""

    def __init__(self) -> None:
        self.now = float(int(time.time()))

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


class FakeTransceiver:
    """The transceiver's internal HTTP API, faked: records every request and
    answers a canned SDP. ``mode`` selects a failure: ``"500"`` (server error),
    ``"full"`` (503: no room), ``"400"`` (rejects the offer with its own error); ``healthy`` toggles
    ``/health``."""

    def __init__(self, id: str, region: str = "local", capacity: int = 10) -> None:
        self.id = id
        self.region = region
        self.capacity = capacity
        self.mode = "ok"
        self.healthy = True
        self.received: list[dict[str, Any]] = []
        self.hangups: list[str] = []
        self.live: set[str] = set()
        self.health_checks = 0
        self.authorizations: list[str | None] = []  # what each POST /calls carried
        app = web.Application()
        app.router.add_post("/calls", self._calls)
        app.router.add_post("/calls/{call_id}/hangup", self._hangup)
        app.router.add_get("/health", self._health)
        self.server = TestServer(app, host="127.0.0.1")

    @property
    def url(self) -> str:
        return str(self.server.make_url("")).rstrip("/")

    def answer(self, call_id: str) -> str:
        return (
            f"v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns={self.id}\r\nt=0 0\r\n"
            f"m=audio 9 UDP/TLS/RTP/SAVPF 111\r\nc=IN IP4 0.0.0.0\r\na=ice-ufrag:{call_id}\r\n"
        )

    def info(self, now: float, active: int = 0) -> TransceiverInfo:
        return TransceiverInfo(
            id=self.id,
            api_url=self.url,
            region=self.region,
            cluster="c1",
            capacity=self.capacity,
            active=active,
            draining=False,
            updated_at=now,
        )

    async def _calls(self, request: web.Request) -> web.Response:
        body = await request.json()
        self.received.append(body)
        self.authorizations.append(request.headers.get("Authorization"))
        if self.mode == "500":
            return web.json_response(
                {"error": {"message": "boom", "type": "server_error", "code": None}}, status=500
            )
        if self.mode == "full":
            return web.json_response(
                {"error": {"message": "transceiver is at capacity", "code": "unavailable"}},
                status=503,
            )
        if self.mode == "400":
            return web.json_response(
                {
                    "error": {
                        "message": "The offer has no usable codec.",
                        "type": "invalid_request_error",
                        "code": "unsupported_codec",
                    }
                },
                status=400,
            )
        self.live.add(body["call_id"])
        return web.json_response(
            {"call_id": body["call_id"], "sdp": self.answer(body["call_id"])}, status=201
        )

    async def _hangup(self, request: web.Request) -> web.Response:
        call_id = request.match_info["call_id"]
        self.hangups.append(call_id)
        if call_id not in self.live:
            return web.json_response({"error": {"message": "no such call"}}, status=404)
        self.live.discard(call_id)
        return web.Response(status=204)

    async def _health(self, request: web.Request) -> web.Response:
        self.health_checks += 1
        if not self.healthy:
            return web.json_response({"error": "sick"}, status=503)
        return web.json_response(
            {
                "id": self.id,
                "region": self.region,
                "cluster": 7,  # the real transceiver reports its route-token number
                "api_url": "http://0.0.0.0:1",  # a bind address; signaling must not use it
                "capacity": self.capacity,
                "active": len(self.live),
                "draining": False,
            }
        )


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def registry(clock: Clock) -> MemoryRegistry:
    return MemoryRegistry(clock)


@pytest.fixture
async def fakes() -> AsyncIterator[Callable[..., Awaitable[FakeTransceiver]]]:
    started: list[FakeTransceiver] = []

    async def make(id: str, **kwargs: Any) -> FakeTransceiver:
        fake = FakeTransceiver(id, **kwargs)
        await fake.server.start_server()
        started.append(fake)
        return fake

    yield make
    for fake in started:
        await fake.server.close()


Start = Callable[..., Awaitable[RunningSignaling]]


@pytest.fixture
async def start(registry: MemoryRegistry, clock: Clock) -> AsyncIterator[Start]:
    running: list[RunningSignaling] = []

    async def _start(**overrides: Any) -> RunningSignaling:
        settings: dict[str, Any] = {
            "api_keys": (API_KEY,),
            "models": MODELS,
            "default_model": "echo",
        }
        settings.update(overrides)
        use_clock = settings.pop("clock", clock)
        server = await start_signaling(SignalingConfig(**settings), registry, clock=use_clock)
        running.append(server)
        return server

    yield _start
    for server in running:
        await server.close()


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


@pytest.fixture
async def one(
    fakes: Callable[..., Awaitable[FakeTransceiver]], registry: MemoryRegistry, clock: Clock
) -> FakeTransceiver:
    fake = await fakes("t1")
    await registry.publish(fake.info(clock()))
    return fake


def call_id_of(response_location: str | None) -> str:
    assert response_location is not None
    match = LOCATION.fullmatch(response_location)
    assert match, response_location
    return match.group(1)


async def error_of(response: aiohttp.ClientResponse) -> dict[str, Any]:
    assert response.content_type == "application/json"
    body = await response.json()
    assert set(body) == {"error"}
    assert set(body["error"]) == {"message", "type", "code", "param"}
    assert body["error"]["message"]
    return dict(body["error"])


# --- creating calls ----------------------------------------------------------


async def test_raw_sdp_call(
    start: Start, one: FakeTransceiver, http: aiohttp.ClientSession, registry: MemoryRegistry
) -> None:
    server = await start()
    async with http.post(
        f"{server.url}/v1/realtime/calls", data=OFFER, headers=SDP_HEADERS
    ) as resp:
        assert resp.status == 201
        assert resp.content_type == "application/sdp"
        call_id = call_id_of(resp.headers.get("Location"))
        assert await resp.text() == one.answer(call_id)
    [got] = one.received
    assert got["call_id"] == call_id
    assert got["sdp"] == OFFER
    assert got["agent_url"] == ECHO_URL
    assert got["session"]["model"] == "echo"
    assert await registry.get_call(call_id) == "t1"


async def test_multipart_call_with_session(
    start: Start, one: FakeTransceiver, http: aiohttp.ClientSession
) -> None:
    server = await start()
    form = aiohttp.FormData()
    form.add_field("sdp", OFFER, content_type="application/sdp")
    session = {"type": "realtime", "model": "gpt-realtime", "instructions": "Be brief."}
    form.add_field("session", json.dumps(session), content_type="application/json")
    async with http.post(f"{server.url}/v1/realtime/calls", data=form, headers=AUTH) as resp:
        assert resp.status == 201, await resp.text()
        call_id = call_id_of(resp.headers.get("Location"))
        assert await resp.text() == one.answer(call_id)
    [got] = one.received
    assert got["sdp"] == OFFER
    assert got["agent_url"] == OTHER_URL
    assert got["session"]["instructions"] == "Be brief."
    assert got["session"]["model"] == "gpt-realtime"


async def test_model_from_query_string(
    start: Start, one: FakeTransceiver, http: aiohttp.ClientSession
) -> None:
    server = await start()
    url = f"{server.url}/v1/realtime/calls?model=gpt-realtime"
    async with http.post(url, data=OFFER, headers=SDP_HEADERS) as resp:
        assert resp.status == 201
    assert one.received[0]["agent_url"] == OTHER_URL


async def test_openai_sdk_calls_and_client_secrets(start: Start, one: FakeTransceiver) -> None:
    server = await start()
    client = openai.AsyncOpenAI(base_url=f"{server.url}/v1", api_key=API_KEY, max_retries=0)
    try:
        # With a session the SDK sends multipart (sdp + session parts).
        raw = await client.realtime.calls.with_raw_response.create(
            sdp=OFFER, session={"type": "realtime", "model": "echo", "instructions": "hi"}
        )
        assert raw.status_code == 201
        call_id = call_id_of(raw.headers.get("location"))
        assert raw.parse().text == one.answer(call_id)
        assert one.received[-1]["sdp"] == OFFER
        assert one.received[-1]["session"]["instructions"] == "hi"
        # Without one it posts the bare offer as application/sdp.
        answer = await client.realtime.calls.create(sdp=OFFER)
        assert answer.text.startswith("v=0")
        assert one.received[-1]["sdp"] == OFFER
        assert len(one.received) == 2

        await client.realtime.calls.hangup(call_id)
        assert one.hangups == [call_id]

        secret = await client.realtime.client_secrets.create(
            expires_after={"anchor": "created_at", "seconds": 60},
            session={"type": "realtime", "model": "echo"},
        )
        assert secret.value.startswith("ek_")
        assert secret.session.model == "echo"

        wrong = openai.AsyncOpenAI(base_url=f"{server.url}/v1", api_key="wrong", max_retries=0)
        async with wrong:
            with pytest.raises(openai.AuthenticationError) as info:
                await wrong.realtime.calls.create(sdp=OFFER)
        assert info.value.code == "invalid_api_key"
    finally:
        await client.close()


# --- ephemeral keys ----------------------------------------------------------


async def mint(
    http: aiohttp.ClientSession, url: str, body: object, key: str = API_KEY
) -> aiohttp.ClientResponse:
    resp = await http.post(
        f"{url}/v1/realtime/client_secrets",
        json=body,
        headers={"Authorization": f"Bearer {key}"},
    )
    await resp.read()
    return resp


async def test_ephemeral_key_flow_and_expiry(
    start: Start,
    one: FakeTransceiver,
    http: aiohttp.ClientSession,
    clock: Clock,
    registry: MemoryRegistry,
) -> None:
    server = await start()
    resp = await mint(
        http,
        server.url,
        {
            "expires_after": {"anchor": "created_at", "seconds": 10},
            "session": {"type": "realtime", "model": "gpt-realtime", "instructions": "X"},
        },
    )
    assert resp.status == 200
    minted = await resp.json()
    key = minted["value"]
    assert re.fullmatch(r"ek_[A-Za-z0-9_-]{32}", key)
    assert minted["expires_at"] == int(clock()) + 10
    assert minted["session"]["model"] == "gpt-realtime"
    assert minted["session"]["object"] == "realtime.session"

    ek_headers = {"Authorization": f"Bearer {key}", "Content-Type": "application/sdp"}
    async with http.post(f"{server.url}/v1/realtime/calls", data=OFFER, headers=ek_headers) as call:
        assert call.status == 201
    # The key's session is the base of the call.
    assert one.received[-1]["agent_url"] == OTHER_URL
    assert one.received[-1]["session"]["instructions"] == "X"

    # A session part may tune the key's session but not change its model.
    form = aiohttp.FormData()
    form.add_field("sdp", OFFER, content_type="application/sdp")
    form.add_field("session", json.dumps({"model": "echo"}), content_type="application/json")
    async with http.post(
        f"{server.url}/v1/realtime/calls",
        data=form,
        headers={"Authorization": f"Bearer {key}"},
    ) as call:
        assert call.status == 400
        assert (await error_of(call))["code"] == "model_mismatch"

    # An ephemeral key cannot mint more keys.
    again = await mint(http, server.url, {}, key=key)
    assert again.status == 401
    assert (await error_of(again))["code"] == "invalid_api_key"

    clock.advance(10)
    await registry.publish(one.info(clock()))  # keep the transceiver fresh
    async with http.post(f"{server.url}/v1/realtime/calls", data=OFFER, headers=ek_headers) as call:
        assert call.status == 401
        assert (await error_of(call))["code"] == "invalid_api_key"
    assert len(one.received) == 1
    assert registry.sizes()[2] == 0  # the expired key is gone, not just refused


@pytest.mark.parametrize(
    ("body", "status", "code"),
    [
        ({}, 200, None),
        ({"expires_after": {"anchor": "created_at", "seconds": 7200}}, 200, None),
        ({"expires_after": {"seconds": 9}}, 400, "integer_below_min_value"),
        ({"expires_after": {"seconds": 7201}}, 400, "integer_above_max_value"),
        ({"expires_after": {"seconds": "60"}}, 400, "invalid_type"),
        ({"expires_after": {"anchor": "now", "seconds": 60}}, 400, "invalid_value"),
        ({"session": {"type": "transcription"}}, 400, "invalid_session"),
        ({"session": {"model": "gpt-9"}}, 404, "model_not_found"),
        ([1, 2], 400, "invalid_json"),
    ],
)
async def test_client_secret_validation(
    start: Start,
    http: aiohttp.ClientSession,
    clock: Clock,
    body: object,
    status: int,
    code: str | None,
) -> None:
    server = await start()
    resp = await mint(http, server.url, body)
    assert resp.status == status
    if status == 200:
        minted = await resp.json()
        seconds = 600 if not body else 7200
        assert minted["expires_at"] == int(clock()) + seconds
        assert minted["session"]["model"] == "echo"  # the default model
    else:
        assert (await error_of(resp))["code"] == code


async def test_client_secret_not_json(start: Start, http: aiohttp.ClientSession) -> None:
    server = await start()
    async with http.post(
        f"{server.url}/v1/realtime/client_secrets", data=b"{nope", headers=AUTH
    ) as resp:
        assert resp.status == 400
        assert (await error_of(resp))["code"] == "invalid_json"


# --- bad input ---------------------------------------------------------------


def _multipart(parts: dict[str, tuple[str, str]]) -> aiohttp.FormData:
    form = aiohttp.FormData()
    for name, (value, ctype) in parts.items():
        form.add_field(name, value, content_type=ctype)
    return form


async def _oversize_stream() -> AsyncIterator[bytes]:
    yield OFFER.encode()
    for _ in range(70):
        yield b"a=x-padding:" + b"p" * 1010 + b"\r\n"


BAD_REQUESTS: list[tuple[str, dict[str, str], Callable[[], Any], int, str]] = [
    ("no key", {"Content-Type": "application/sdp"}, lambda: OFFER, 401, "invalid_api_key"),
    (
        "wrong key",
        {"Authorization": "Bearer sk-wrong", "Content-Type": "application/sdp"},
        lambda: OFFER,
        401,
        "invalid_api_key",
    ),
    (
        "not bearer",
        {"Authorization": f"Basic {API_KEY}", "Content-Type": "application/sdp"},
        lambda: OFFER,
        401,
        "invalid_api_key",
    ),
    (
        "unknown ek",
        {
            "Authorization": "Bearer ek_abcdefghijklmnopqrstuvwxyz",
            "Content-Type": "application/sdp",
        },
        lambda: OFFER,
        401,
        "invalid_api_key",
    ),
    ("empty", SDP_HEADERS, lambda: "", 400, "missing_sdp"),
    ("not sdp", SDP_HEADERS, lambda: "hello", 400, "invalid_sdp"),
    ("no audio", SDP_HEADERS, lambda: OFFER_NO_AUDIO, 400, "sdp_missing_audio"),
    ("not utf-8", SDP_HEADERS, lambda: b"v=0\r\n\xff\xfe", 400, "invalid_encoding"),
    (
        "multipart no sdp",
        AUTH,
        lambda: _multipart({"session": ('{"model": "echo"}', "application/json")}),
        400,
        "missing_sdp",
    ),
    (
        "session not json",
        AUTH,
        lambda: _multipart(
            {"sdp": (OFFER, "application/sdp"), "session": ("{", "application/json")}
        ),
        400,
        "invalid_json",
    ),
    (
        "session not object",
        AUTH,
        lambda: _multipart(
            {"sdp": (OFFER, "application/sdp"), "session": ("[]", "application/json")}
        ),
        400,
        "invalid_session",
    ),
    (
        "unknown model",
        AUTH,
        lambda: _multipart(
            {
                "sdp": (OFFER, "application/sdp"),
                "session": ('{"model": "gpt-9"}', "application/json"),
            }
        ),
        404,
        "model_not_found",
    ),
    (
        "oversize",
        SDP_HEADERS,
        lambda: OFFER + "a=x-padding:" + "p" * 70_000 + "\r\n",
        413,
        "request_too_large",
    ),
    ("oversize chunked", SDP_HEADERS, _oversize_stream, 413, "request_too_large"),
    (
        "wrong content type",
        {**AUTH, "Content-Type": "text/plain"},
        lambda: OFFER,
        415,
        "unsupported_content_type",
    ),
    (
        "json body",
        {**AUTH, "Content-Type": "application/json"},
        lambda: json.dumps({"sdp": OFFER}),
        415,
        "unsupported_content_type",
    ),
]


@pytest.mark.parametrize(
    ("headers", "body", "status", "code"),
    [b[1:] for b in BAD_REQUESTS],
    ids=[b[0] for b in BAD_REQUESTS],
)
async def test_bad_requests(
    start: Start,
    one: FakeTransceiver,
    http: aiohttp.ClientSession,
    registry: MemoryRegistry,
    headers: dict[str, str],
    body: Callable[[], Any],
    status: int,
    code: str,
) -> None:
    server = await start()
    async with http.post(f"{server.url}/v1/realtime/calls", data=body(), headers=headers) as resp:
        assert resp.status == status
        assert (await error_of(resp))["code"] == code
    assert one.received == []
    # Nothing else disturbed: the next good call on a new connection works.
    async with (
        aiohttp.ClientSession() as fresh,
        fresh.post(f"{server.url}/v1/realtime/calls", data=OFFER, headers=SDP_HEADERS) as good,
    ):
        assert good.status == 201
    assert len(one.received) == 1
    assert registry.sizes()[1] == 1


async def test_transceiver_rejection_is_passed_through(
    start: Start, one: FakeTransceiver, http: aiohttp.ClientSession, registry: MemoryRegistry
) -> None:
    server = await start()
    one.mode = "400"
    async with http.post(
        f"{server.url}/v1/realtime/calls", data=OFFER, headers=SDP_HEADERS
    ) as resp:
        assert resp.status == 400
        error = await error_of(resp)
        assert error["code"] == "unsupported_codec"
        assert error["message"] == "The offer has no usable codec."
    assert registry.sizes()[1] == 0


async def test_no_default_model_and_none_named(
    start: Start, one: FakeTransceiver, http: aiohttp.ClientSession
) -> None:
    server = await start(default_model=None)
    async with http.post(
        f"{server.url}/v1/realtime/calls", data=OFFER, headers=SDP_HEADERS
    ) as resp:
        assert resp.status == 400
        assert (await error_of(resp))["code"] == "missing_model"


async def test_unknown_routes_and_methods_are_openai_shaped(
    start: Start, http: aiohttp.ClientSession
) -> None:
    server = await start()
    async with http.get(f"{server.url}/v1/realtime/calls", headers=AUTH) as resp:
        assert resp.status == 405
        assert (await error_of(resp))["code"] == "method_not_allowed"
        assert "POST" in resp.headers["Allow"]
    async with http.post(f"{server.url}/v1/nothing", headers=AUTH) as resp:
        assert resp.status == 404
        assert (await error_of(resp))["code"] == "not_found"


# --- CORS --------------------------------------------------------------------


async def test_cors_preflight_and_headers(
    start: Start, one: FakeTransceiver, http: aiohttp.ClientSession
) -> None:
    server = await start()
    origin = {"Origin": "http://page.example:3000"}
    async with http.options(
        f"{server.url}/v1/realtime/calls",
        headers={
            **origin,
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "authorization, content-type",
        },
    ) as pre:
        assert pre.status == 204
        assert pre.headers["Access-Control-Allow-Origin"] == "*"
        assert "POST" in pre.headers["Access-Control-Allow-Methods"]
        allowed = pre.headers["Access-Control-Allow-Headers"].lower()
        assert "authorization" in allowed and "content-type" in allowed
    async with http.post(
        f"{server.url}/v1/realtime/calls", data=OFFER, headers={**SDP_HEADERS, **origin}
    ) as resp:
        assert resp.status == 201
        assert resp.headers["Access-Control-Allow-Origin"] == "*"
        assert "Location" in resp.headers["Access-Control-Expose-Headers"]
    # Errors are readable cross-origin too.
    async with http.post(
        f"{server.url}/v1/realtime/calls", data=OFFER, headers={**origin, "Content-Type": "x/y"}
    ) as resp:
        assert resp.status == 401
        assert resp.headers["Access-Control-Allow-Origin"] == "*"
    async with http.options(
        f"{server.url}/v1/realtime/client_secrets",
        headers={**origin, "Access-Control-Request-Method": "POST"},
    ) as pre:
        assert pre.status == 204
        assert pre.headers["Access-Control-Allow-Origin"] == "*"


async def test_cors_origin_list(start: Start, http: aiohttp.ClientSession) -> None:
    server = await start(cors_origins=("https://app.example",))
    preflight = {"Access-Control-Request-Method": "POST"}
    async with http.options(
        f"{server.url}/v1/realtime/calls", headers={"Origin": "https://app.example", **preflight}
    ) as pre:
        assert pre.headers["Access-Control-Allow-Origin"] == "https://app.example"
        assert "Origin" in pre.headers["Vary"]
    async with http.options(
        f"{server.url}/v1/realtime/calls", headers={"Origin": "https://evil.example", **preflight}
    ) as pre:
        assert "Access-Control-Allow-Origin" not in pre.headers
        assert "Access-Control-Allow-Methods" not in pre.headers


# --- hangup ------------------------------------------------------------------


async def test_hangup(
    start: Start, one: FakeTransceiver, http: aiohttp.ClientSession, registry: MemoryRegistry
) -> None:
    server = await start()
    async with http.post(
        f"{server.url}/v1/realtime/calls", data=OFFER, headers=SDP_HEADERS
    ) as resp:
        location = resp.headers["Location"]
    call_id = call_id_of(location)
    async with http.post(f"{server.url}{location}/hangup") as resp:
        assert resp.status == 401
    assert one.hangups == []
    async with http.post(f"{server.url}{location}/hangup", headers=AUTH) as resp:
        assert resp.status == 200
        assert await resp.read() == b""
    assert one.hangups == [call_id]
    assert await registry.get_call(call_id) is None
    async with http.post(f"{server.url}{location}/hangup", headers=AUTH) as resp:
        assert resp.status == 404
        assert (await error_of(resp))["code"] == "call_not_found"
    async with http.post(
        f"{server.url}/v1/realtime/calls/rtc_{'0' * 32}/hangup", headers=AUTH
    ) as resp:
        assert resp.status == 404
    assert one.hangups == [call_id]


async def test_hangup_of_call_the_transceiver_already_ended(
    start: Start, one: FakeTransceiver, http: aiohttp.ClientSession, registry: MemoryRegistry
) -> None:
    server = await start()
    async with http.post(
        f"{server.url}/v1/realtime/calls", data=OFFER, headers=SDP_HEADERS
    ) as resp:
        call_id = call_id_of(resp.headers["Location"])
    one.live.clear()  # the call ended on its own (client left)
    async with http.post(f"{server.url}/v1/realtime/calls/{call_id}/hangup", headers=AUTH) as resp:
        assert resp.status == 404
    assert one.hangups == [call_id]
    assert await registry.get_call(call_id) is None


async def test_a_hangup_frees_its_place_before_the_next_health_report(
    start: Start,
    fakes: Callable[..., Awaitable[FakeTransceiver]],
    http: aiohttp.ClientSession,
    registry: MemoryRegistry,
    clock: Clock,
) -> None:
    full = await fakes("t1", capacity=1)
    await registry.publish(full.info(clock()))
    server = await start()
    url = f"{server.url}/v1/realtime/calls"
    async with http.post(url, data=OFFER, headers=SDP_HEADERS) as resp:
        assert resp.status == 201
        location = resp.headers["Location"]
    async with http.post(url, data=OFFER, headers=SDP_HEADERS) as resp:
        assert resp.status == 503
        assert (await error_of(resp))["code"] == "no_transceiver_available"
    async with http.post(f"{server.url}{location}/hangup", headers=AUTH) as resp:
        assert resp.status == 200
    async with http.post(url, data=OFFER, headers=SDP_HEADERS) as resp:
        assert resp.status == 201
    assert full.health_checks == 0  # the place came from the hangup, not a report
    assert len(full.received) == 2


async def test_rate_limits_answer_429_with_retry_after_per_ip_and_per_key(
    start: Start, one: FakeTransceiver, http: aiohttp.ClientSession, clock: Clock
) -> None:
    other_key = "sk-other-" + "y" * 24
    server = await start(
        api_keys=(API_KEY, other_key),
        rate_per_ip=Rate(per_s=0.5, burst=4),
        rate_per_key=Rate(per_s=0.5, burst=2),
    )
    url = f"{server.url}/v1/realtime/calls"
    for _ in range(2):
        async with http.post(url, data=OFFER, headers=SDP_HEADERS) as resp:
            assert resp.status == 201
    page = {**SDP_HEADERS, "Origin": "https://app.example"}
    async with http.post(url, data=OFFER, headers=page) as resp:
        assert resp.status == 429
        assert resp.headers["Retry-After"] == "2"  # one token at 0.5 per second
        error = await error_of(resp)
        assert (error["code"], error["type"]) == ("rate_limit_exceeded", "requests")
        assert "API key" in error["message"]
        assert resp.headers["Access-Control-Allow-Origin"] == "*"  # a page can read it
    assert len(one.received) == 2  # the refused offer reached no transceiver
    other = {**SDP_HEADERS, "Authorization": f"Bearer {other_key}"}
    async with http.post(url, data=OFFER, headers=other) as resp:
        assert resp.status == 201  # another key has its own bucket...
    async with http.post(url, data=OFFER, headers=other) as resp:
        assert resp.status == 429  # ...but the address has spent its four
        assert "this address" in (await error_of(resp))["message"]
    async with http.get(f"{server.url}/healthz") as resp:
        assert resp.status == 200  # reads are not limited
    clock.advance(2.0)  # one token back for the address and for each key
    async with http.post(url, data=OFFER, headers=SDP_HEADERS) as resp:
        assert resp.status == 201
    async with http.get(f"{server.url}/metrics") as resp:
        text = await resp.text()
    assert 'talkwire_signaling_rate_limited_total{limit="key"} 1.0' in text
    assert 'talkwire_signaling_rate_limited_total{limit="ip"} 1.0' in text


# --- placement and failover --------------------------------------------------


async def test_placement_prefers_least_loaded_and_counts_the_call(
    start: Start,
    fakes: Callable[..., Awaitable[FakeTransceiver]],
    http: aiohttp.ClientSession,
    registry: MemoryRegistry,
    clock: Clock,
) -> None:
    busy = await fakes("busy")
    idle = await fakes("idle")
    await registry.publish(busy.info(clock(), active=3))
    await registry.publish(idle.info(clock(), active=0))
    server = await start()
    for _ in range(3):
        async with http.post(
            f"{server.url}/v1/realtime/calls", data=OFFER, headers=SDP_HEADERS
        ) as resp:
            assert resp.status == 201
    # idle took the first three (0,1,2 < 3) thanks to counting each placement.
    assert (len(idle.received), len(busy.received)) == (3, 0)
    async with http.post(
        f"{server.url}/v1/realtime/calls", data=OFFER, headers=SDP_HEADERS
    ) as resp:
        assert resp.status == 201
    assert len(idle.received) + len(busy.received) == 4


async def test_region_steering_by_geo_header(
    start: Start,
    fakes: Callable[..., Awaitable[FakeTransceiver]],
    http: aiohttp.ClientSession,
    registry: MemoryRegistry,
    clock: Clock,
) -> None:
    from talkwire.signaling.regions import parse_region_table

    eu = await fakes("eu1", region="eu")
    us = await fakes("us1", region="us")
    await registry.publish(eu.info(clock(), active=5))
    await registry.publish(us.info(clock(), active=0))
    table = parse_region_table(
        {"geo_header": "CF-IPCountry", "countries": {"DE": "eu", "US": "us"}}, "eu"
    )
    server = await start(regions=table)
    async with http.post(
        f"{server.url}/v1/realtime/calls",
        data=OFFER,
        headers={**SDP_HEADERS, "CF-IPCountry": "DE"},
    ) as resp:
        assert resp.status == 201
    assert (len(eu.received), len(us.received)) == (1, 0)
    async with http.post(
        f"{server.url}/v1/realtime/calls",
        data=OFFER,
        headers={**SDP_HEADERS, "CF-IPCountry": "US"},
    ) as resp:
        assert resp.status == 201
    assert (len(eu.received), len(us.received)) == (1, 1)


async def test_failover_from_500_to_next(
    start: Start,
    fakes: Callable[..., Awaitable[FakeTransceiver]],
    http: aiohttp.ClientSession,
    registry: MemoryRegistry,
    clock: Clock,
) -> None:
    bad = await fakes("bad")
    good = await fakes("good")
    bad.mode = "500"
    await registry.publish(bad.info(clock(), active=0))  # tried first: least loaded
    await registry.publish(good.info(clock(), active=5))
    server = await start()
    async with http.post(
        f"{server.url}/v1/realtime/calls", data=OFFER, headers=SDP_HEADERS
    ) as resp:
        assert resp.status == 201
        call_id = call_id_of(resp.headers["Location"])
        assert await resp.text() == good.answer(call_id)
    assert [r["call_id"] for r in bad.received] == [call_id]
    assert [r["call_id"] for r in good.received] == [call_id]
    assert await registry.get_call(call_id) == "good"
    async with http.get(f"{server.url}/metrics") as resp:
        text = await resp.text()
    assert 'talkwire_signaling_placement_failures_total{reason="transceiver_failed"} 1.0' in text


def _refusing_port() -> socket.socket:
    """A bound, never-listening TCP socket: connecting to it is refused, and
    holding it keeps anyone else from taking the port."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    return sock


async def test_failover_from_refused_connection(
    start: Start,
    fakes: Callable[..., Awaitable[FakeTransceiver]],
    http: aiohttp.ClientSession,
    registry: MemoryRegistry,
    clock: Clock,
) -> None:
    good = await fakes("good")
    with _refusing_port() as dead:
        port = dead.getsockname()[1]
        await registry.publish(
            TransceiverInfo(
                "dead", f"http://127.0.0.1:{port}", "local", "c1", 10, 0, False, clock()
            )
        )
        await registry.publish(good.info(clock(), active=5))
        server = await start()
        async with http.post(
            f"{server.url}/v1/realtime/calls", data=OFFER, headers=SDP_HEADERS
        ) as resp:
            assert resp.status == 201
    assert len(good.received) == 1


async def test_503_when_all_fail_or_none(
    start: Start,
    fakes: Callable[..., Awaitable[FakeTransceiver]],
    http: aiohttp.ClientSession,
    registry: MemoryRegistry,
    clock: Clock,
) -> None:
    server = await start()
    async with http.post(
        f"{server.url}/v1/realtime/calls", data=OFFER, headers=SDP_HEADERS
    ) as resp:
        assert resp.status == 503
        error = await error_of(resp)
        assert error["code"] == "no_transceiver_available"
        assert error["type"] == "server_error"
    failing = [await fakes(f"f{i}") for i in range(3)]
    for i, fake in enumerate(failing):
        fake.mode = "500"
        await registry.publish(fake.info(clock(), active=i))
    async with http.post(
        f"{server.url}/v1/realtime/calls", data=OFFER, headers=SDP_HEADERS
    ) as resp:
        assert resp.status == 503
        error = await error_of(resp)
        assert error["code"] == "no_transceiver_available"
        assert "did not answer" in error["message"]
    # Tried the best candidate and one more, not every transceiver.
    assert [len(f.received) for f in failing] == [1, 1, 0]
    # Up but full (their last reports were older than the calls that filled them).
    for fake in failing:
        fake.mode = "full"
    async with http.post(
        f"{server.url}/v1/realtime/calls", data=OFFER, headers=SDP_HEADERS
    ) as resp:
        assert resp.status == 503
        assert "No transceiver has capacity" in (await error_of(resp))["message"]
    async with http.get(f"{server.url}/metrics") as resp:
        text = await resp.text()
    assert 'talkwire_signaling_placement_failures_total{reason="transceiver_full"} 2.0' in text
    assert registry.sizes()[1] == 0
    # Stale, draining and full ones are not candidates at all.
    ok = await fakes("ok")
    await registry.publish(ok.info(clock() - 60))
    async with http.post(
        f"{server.url}/v1/realtime/calls", data=OFFER, headers=SDP_HEADERS
    ) as resp:
        assert resp.status == 503
    assert ok.received == []


# --- health polling ----------------------------------------------------------


async def wait_for(
    predicate: Callable[[], Awaitable[bool]], attempts: int = 200, step_s: float = 0.025
) -> bool:
    """Poll a condition a bounded number of times (at most ``attempts`` ×
    ``step_s`` plus the checks themselves)."""
    for _ in range(attempts):
        if await predicate():
            return True
        await asyncio.sleep(step_s)
    return False


async def test_health_polling_publishes_and_drops(
    start: Start,
    fakes: Callable[..., Awaitable[FakeTransceiver]],
    http: aiohttp.ClientSession,
    registry: MemoryRegistry,
) -> None:
    polled = await fakes("polled", region="local")
    with _refusing_port() as dead:
        dead_url = f"http://127.0.0.1:{dead.getsockname()[1]}"
        server = await start(
            transceivers=(polled.url, dead_url),
            health_interval_s=0.05,
            health_max_age_s=1.0,
            clock=time.time,
        )

        async def ids() -> set[str]:
            return {t.id for t in await registry.transceivers()}

        async def present() -> bool:
            return await ids() == {"polled"}

        assert await wait_for(present)
        [info] = await registry.transceivers()
        assert info.api_url == polled.url  # the configured URL, not what it claims
        assert info.capacity == polled.capacity
        assert info.cluster == "7"
        async with http.post(
            f"{server.url}/v1/realtime/calls", data=OFFER, headers=SDP_HEADERS
        ) as resp:
            assert resp.status == 201
        assert len(polled.received) == 1

        polled.healthy = False

        async def gone() -> bool:
            return await ids() == set()

        assert await wait_for(gone)
        async with http.post(
            f"{server.url}/v1/realtime/calls", data=OFFER, headers=SDP_HEADERS
        ) as resp:
            assert resp.status == 503
        assert len(polled.received) == 1

        polled.healthy = True
        assert await wait_for(present)
        async with http.get(f"{server.url}/healthz") as resp:
            assert await resp.json() == {
                "status": "ok",
                "transceivers": {"known": 1, "healthy": 1, "accepting": 1},
            }
        await server.close()
    # Once the app stops, polling stops: no check is in flight or scheduled.
    checks = polled.health_checks
    await asyncio.sleep(0.2)
    assert polled.health_checks == checks


# --- observability -----------------------------------------------------------


def _self_signed(tmp_path: Path) -> tuple[Path, Path]:
    """A certificate for 127.0.0.1 and its key, made here (nothing downloaded)."""
    import datetime
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "talkwire test")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path


async def test_tls_serves_https_with_the_given_certificate(
    start: Start, one: FakeTransceiver, tmp_path: Path
) -> None:
    import ssl

    cert, key = _self_signed(tmp_path)
    server = await start(tls_cert=cert, tls_key=key)
    assert server.url.startswith("https://127.0.0.1:")
    trusting = ssl.create_default_context(cafile=str(cert))
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=trusting)) as https:
        async with https.post(
            f"{server.url}/v1/realtime/calls", data=OFFER, headers=SDP_HEADERS
        ) as resp:
            assert resp.status == 201
        async with https.get(f"{server.url}/healthz") as resp:
            assert resp.status == 200
    async with aiohttp.ClientSession() as default:  # the system's CAs do not know it
        with pytest.raises(aiohttp.ClientConnectorCertificateError):
            await default.get(f"{server.url}/healthz")
    plain = server.url.replace("https://", "http://")
    async with aiohttp.ClientSession() as http:  # no plaintext on the TLS port
        with pytest.raises(aiohttp.ClientError):
            async with http.get(f"{plain}/healthz") as resp:
                await resp.read()
    assert len(one.received) == 1


async def test_tls_config_errors_name_the_problem(start: Start, tmp_path: Path) -> None:
    cert, key = _self_signed(tmp_path)
    with pytest.raises(ConfigError, match="go together"):
        await start(tls_cert=cert)
    with pytest.raises(ConfigError, match="no such file"):
        await start(tls_cert=tmp_path / "missing.pem", tls_key=key)
    with pytest.raises(ConfigError, match="tls-cert"):
        await start(tls_cert=key, tls_key=cert)  # swapped


async def test_healthz_and_metrics(
    start: Start, one: FakeTransceiver, http: aiohttp.ClientSession
) -> None:
    server = await start()
    async with http.post(
        f"{server.url}/v1/realtime/calls", data=OFFER, headers=SDP_HEADERS
    ) as resp:
        assert resp.status == 201
    async with http.post(f"{server.url}/v1/realtime/calls", data=OFFER) as resp:
        assert resp.status == 401
    async with http.post(
        f"{server.url}/v1/realtime/calls", data=_oversize_stream(), headers=SDP_HEADERS
    ) as resp:
        assert resp.status == 413
    async with http.get(f"{server.url}/healthz") as resp:
        assert resp.status == 200
        assert (await resp.json())["transceivers"]["accepting"] == 1
    async with http.get(f"{server.url}/metrics") as resp:
        assert resp.status == 200
        assert resp.content_type == "text/plain"
        text = await resp.text()
    assert 'talkwire_signaling_calls_total{status="201"} 1.0' in text
    assert 'talkwire_signaling_calls_total{status="401"} 1.0' in text
    assert 'talkwire_signaling_calls_total{status="413"} 1.0' in text
    assert 'status="500"' not in text
    assert "talkwire_signaling_call_setup_seconds_count 1.0" in text
    assert API_KEY not in text


# --- demo --------------------------------------------------------------------


async def test_demo_page_and_key(
    start: Start, one: FakeTransceiver, http: aiohttp.ClientSession, tmp_path: Path
) -> None:
    (tmp_path / "index.html").write_text("<h1>talkwire demo</h1>")
    (tmp_path / "app.js").write_text("console.log(1)")
    (tmp_path.parent / "secret.txt").write_text("outside")
    server = await start(demo_dir=tmp_path)
    async with http.get(f"{server.url}/") as resp:
        assert resp.status == 200
        assert "talkwire demo" in await resp.text()
    async with http.get(f"{server.url}/app.js") as resp:
        assert resp.status == 200
    async with http.get(f"{server.url}/%2e%2e/secret.txt") as resp:
        assert resp.status == 404
    async with http.post(f"{server.url}/demo/client_secret", json={}) as resp:
        assert resp.status == 200
        key = (await resp.json())["value"]
    async with http.post(
        f"{server.url}/v1/realtime/calls",
        data=OFFER,
        headers={"Authorization": f"Bearer {key}", "Content-Type": "application/sdp"},
    ) as resp:
        assert resp.status == 201
    assert one.received[0]["agent_url"] == ECHO_URL


async def test_demo_off_by_default(start: Start, http: aiohttp.ClientSession) -> None:
    server = await start()
    async with http.post(f"{server.url}/demo/client_secret", json={}) as resp:
        assert resp.status == 404
    async with http.get(f"{server.url}/") as resp:
        assert resp.status == 404


def test_demo_helpers(tmp_path: Path) -> None:
    assert is_loopback("127.0.0.1") and is_loopback("::1") and is_loopback("::ffff:127.0.0.2")
    assert not is_loopback("192.0.2.1") and not is_loopback(None) and not is_loopback("x")
    (tmp_path / "index.html").write_text("x")
    (tmp_path / "sub").mkdir()
    assert resolve_static(tmp_path, "") == (tmp_path / "index.html").resolve()
    assert resolve_static(tmp_path, "../x") is None
    assert resolve_static(tmp_path, "sub") is None  # a directory without an index
    (tmp_path / "link").symlink_to("/etc")
    assert resolve_static(tmp_path, "link/hostname") is None


async def _raw_request(server: RunningSignaling, head: bytes) -> bytes:
    """Send ``head`` on a fresh connection; the one response to it, or b"" if it closes first."""
    reader, writer = await asyncio.open_connection(server.host, server.port)
    try:
        writer.write(head)
        await writer.drain()
        async with asyncio.timeout(10):  # a bound, not an expectation
            try:
                headers = await reader.readuntil(b"\r\n\r\n")
            except asyncio.IncompleteReadError as exc:
                return exc.partial
            length = re.search(rb"(?i)content-length: *(\d+)", headers)
            return headers + await reader.readexactly(int(length[1]) if length else 0)
    finally:
        writer.close()


@pytest.mark.parametrize(
    ("path", "content_type"),
    [
        ("/v1/realtime/calls", "application/sdp"),
        ("/v1/realtime/calls", "multipart/form-data; boundary=b"),
        ("/v1/realtime/client_secrets", "application/json"),
    ],
)
async def test_a_body_that_does_not_arrive_in_time_gets_408(
    start: Start, path: str, content_type: str
) -> None:
    server = await start(body_timeout_s=0.3)
    head = (
        f"POST {path} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {API_KEY}\r\n"
        f"Content-Type: {content_type}\r\nContent-Length: 1000\r\n\r\n--b\r\n"
    )
    answer = await _raw_request(server, head.encode())
    status, _, rest = answer.partition(b"\r\n")
    assert status.startswith(b"HTTP/1.1 408"), answer
    body = json.loads(rest.partition(b"\r\n\r\n")[2])
    assert body["error"]["code"] == "request_timeout"
    assert "0.3 s" in body["error"]["message"]


async def test_headers_that_do_not_arrive_in_time_lose_the_connection_and_no_one_else_does(
    start: Start, http: aiohttp.ClientSession
) -> None:
    server = await start(header_timeout_s=0.3)
    slow = asyncio.create_task(_raw_request(server, b"POST /v1/realtime/calls HTTP/1.1\r\nHo"))
    async with http.get(server.url + "/healthz") as response:  # meanwhile, others are served
        assert response.status == 200
    assert await slow == b""  # closed, unanswered


# --- the command -------------------------------------------------------------


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env.pop("TALKWIRE_API_KEY", None)
    return env


async def test_cli_serves_until_sigint_with_its_secrets_from_files(
    fakes: Callable[..., Awaitable[FakeTransceiver]], http: aiohttp.ClientSession, tmp_path: Path
) -> None:
    polled = await fakes("cli-t")
    write_private(tmp_path / "api-keys", f"# app keys\nsk-other\n{API_KEY}\n")
    write_private(tmp_path / "internal", "internal-" + "s" * 32 + "\n")
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "talkwire.cli", "signaling",
        "--listen", "127.0.0.1:0",
        "--model", f"echo={ECHO_URL}",
        "--transceiver", polled.url,
        "--api-key-file", str(tmp_path / "api-keys"),
        "--internal-secret-file", str(tmp_path / "internal"),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=_env(),
    )  # fmt: skip
    try:
        assert proc.stdout is not None
        line = (await asyncio.wait_for(proc.stdout.readline(), 30)).decode()
        match = re.fullmatch(r"ready (http://127\.0\.0\.1:(\d+))\n", line)
        assert match, line
        url = match.group(1)
        assert int(match.group(2)) != 0

        async def placed() -> bool:
            async with http.post(
                f"{url}/v1/realtime/calls", data=OFFER, headers=SDP_HEADERS
            ) as resp:
                return resp.status == 201

        # 503 until the first health poll lands; then the call goes through.
        assert await wait_for(placed, attempts=100, step_s=0.05)
        assert polled.received[-1]["agent_url"] == ECHO_URL
        assert set(polled.authorizations) == {"Bearer internal-" + "s" * 32}
        proc.send_signal(signal.SIGINT)
        assert await asyncio.wait_for(proc.wait(), 30) == 0
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--model", "echo=ws://x"], "no API key"),
        (["--api-key", "k", "--model", "echo"], "NAME=WS_URL"),
        (["--api-key", "k", "--model", "echo=http://x"], "ws://"),
        (["--api-key", "k", "--model", "echo=ws://x", "--default-model", "gpt"], "default model"),
        (["--api-key", "k", "--model", "echo=ws://x", "--listen", "nowhere"], "HOST:PORT"),
        (["--api-key", "k", "--model", "echo=ws://x", "--transceiver", "ftp://x"], "http"),
        (["--api-key", "k", "--region-table", "/nonexistent.json"], "region-table"),
        (["--api-key", "k", "--model", "echo=ws://x", "--rate-per-ip", "fast"], "PER_SECOND"),
        (["--api-key-file", "/nonexistent", "--model", "echo=ws://x"], "API key file not found"),
        (["--api-key", "k", "--model", "echo=ws://x", "--registry", "http://x"], "redis://"),
        (["--api-key", "k", "--internal-secret-file", "/nonexistent"], "internal secret file"),
    ],
)
async def test_cli_config_errors(args: list[str], message: str) -> None:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "talkwire.cli", "signaling", *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=_env(),
    )  # fmt: skip
    out, err = await asyncio.wait_for(proc.communicate(), 30)
    assert proc.returncode == 2
    assert out == b""
    lines = err.decode().strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("talkwire signaling: error:")
    assert message in lines[0]
