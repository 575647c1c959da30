"""The agent side of the internal protocol: an aiohttp WebSocket server for Agent classes.

``GET /v1/agents/{name}?call_id=…`` upgrades to one call's WebSocket. The
server does the ``session.update`` → ``session.created`` handshake, feeds
binary frames to ``on_audio`` and text events to ``on_event`` in order, answers
malformed frames with an ``error`` event (the call goes on), and ends only the
call whose agent raised. Every call's tasks are cancelled when it ends.
"""

from __future__ import annotations

import asyncio
import logging
import re
import socket
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Final

from aiohttp import WSMsgType, web
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    generate_latest,
)

from talkwire.agents.base import (
    CLOSE_INTERNAL_ERROR,
    CLOSE_OK,
    Agent,
    Call,
    declared_format_problem,
    pin_audio_format,
)
from talkwire.config import format_address
from talkwire.errors import ProtocolError
from talkwire.internal_auth import authorized, unauthorized
from talkwire.protocol.audio import validate_pcm
from talkwire.protocol.events import (
    MAX_EVENT_BYTES,
    SESSION_CREATED,
    SESSION_UPDATE,
    ErrorEvent,
    encode_event,
    error_event,
    make_event,
    new_id,
    parse_event,
)

log = logging.getLogger(__name__)

AgentFactory = Callable[[Call], Agent]

CLOSE_GOING_AWAY: Final = 1001
CLOSE_POLICY_VIOLATION: Final = 1008
# Frames a little over the event limit still reach parse_event, which answers with an
# error event and keeps the call; far larger ones are cut off by aiohttp (close 1009).
MAX_FRAME_BYTES: Final = 4 * MAX_EVENT_BYTES
_CALL_ID_RE: Final = re.compile(r"[A-Za-z0-9_.:-]{1,128}")
_CLOSING: Final = frozenset({WSMsgType.CLOSE, WSMsgType.CLOSING, WSMsgType.CLOSED, WSMsgType.ERROR})
# How a call ended, by the close code this server sent.
_END_BY_CODE: Final = {
    CLOSE_OK: "ok",
    CLOSE_GOING_AWAY: "shutdown",
    CLOSE_POLICY_VIOLATION: "refused",
    CLOSE_INTERNAL_ERROR: "agent_error",
}


class AgentMetrics:
    """``/metrics`` of an agent server: its own registry, so two servers in
    one process (the tests) never share series."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.active = Gauge(
            "talkwire_agent_calls_active", "Calls being served", ["agent"], registry=self.registry
        )
        self.ended = Counter(
            "talkwire_agent_calls_ended",
            "Calls ended, by how (ok, shutdown, refused, agent_error, other)",
            ["agent", "end"],
            registry=self.registry,
        )
        self.refused = Counter(
            "talkwire_agent_upgrades_refused",
            "WebSocket upgrades refused before a call began, by why",
            ["reason"],
            registry=self.registry,
        )


@dataclass(frozen=True, slots=True)
class ServerSettings:
    handshake_timeout: float = 10.0  # seconds from upgrade to session.update
    heartbeat: float | None = 20.0  # ping interval; a silent dead peer ends its call
    close_timeout: float = 2.0  # wait for the peer's close reply, then drop the connection
    # Required from the transceiver before the upgrade (internal_auth); None: open.
    internal_secret: str | None = None


def _json_error(status: int, message: str, code: str) -> web.Response:
    body = {"error": {"type": "invalid_request_error", "code": code, "message": message}}
    return web.json_response(body, status=status)


class _CallConnection:
    """One call: handshake, dispatch, and teardown of everything it started.

    The dispatch loop runs in its own task so that ending the call (agent
    failure, hang-up, server shutdown) can stop it mid-receive and still close
    the WebSocket with a proper close handshake from this task.
    """

    def __init__(
        self,
        ws: web.WebSocketResponse,
        factory: AgentFactory,
        agent_name: str,
        call_id: str | None,
        settings: ServerSettings,
    ) -> None:
        self.ws = ws
        self._factory = factory
        self._agent_name = agent_name
        self._call_id = call_id
        self._settings = settings
        self._end: asyncio.Future[tuple[ErrorEvent | None, int]] = (
            asyncio.get_running_loop().create_future()
        )
        self.call: Call | None = None
        self.agent: Agent | None = None
        self.close_code: int | None = None  # set once run() ends the call; None: it never did

    def end(self, error: ErrorEvent | None, code: int) -> None:
        """Ask for the call to end (the first request wins); returns at once."""
        if not self._end.done():
            self._end.set_result((error, code))

    async def _send_raw(self, event: Mapping[str, Any]) -> None:
        if self.ws.closed:
            return
        try:
            await self.ws.send_str(encode_event(event))
        except ConnectionResetError:
            return

    async def _refuse(self, message: str, code: str, event_id: str | None = None) -> None:
        await self._send_raw(error_event(message, code=code, event_id=event_id))
        await self.ws.close(code=CLOSE_POLICY_VIOLATION)

    def _agent_failed(self, where: str, exc: Exception) -> None:
        log.error(
            "agent failed in %s",
            where,
            exc_info=exc,
            extra={"call_id": self._call_id, "agent": self._agent_name},
        )
        self.end(
            error_event("the agent failed", code="agent_error", error_type="server_error"),
            CLOSE_INTERNAL_ERROR,
        )

    async def run(self) -> None:
        reader = asyncio.create_task(self._serve(), name=f"agent call {self._call_id}")
        try:
            waiting: set[asyncio.Future[Any]] = {reader, self._end}
            await asyncio.wait(waiting, return_when=asyncio.FIRST_COMPLETED)
        finally:
            reader.cancel()
            await asyncio.wait({reader})
            if not reader.cancelled() and reader.exception() is not None:
                log.error(
                    "agent call dispatch failed",
                    exc_info=reader.exception(),
                    extra={"call_id": self._call_id, "agent": self._agent_name},
                )
            if self.call is not None:
                await self.call.cancel_tasks()
            if self.agent is not None:
                try:
                    await self.agent.on_close()
                except Exception as exc:
                    log.error(
                        "agent failed in on_close",
                        exc_info=exc,
                        extra={"call_id": self._call_id, "agent": self._agent_name},
                    )
            error, code = self._end.result() if self._end.done() else (None, CLOSE_OK)
            self.close_code = code
            if error is not None:
                await self._send_raw(error)
            if not self.ws.closed:
                await self.ws.close(code=code)

    async def _serve(self) -> None:
        if await self._start():
            assert self.agent is not None
            await self._dispatch(self.agent)

    async def _start(self) -> bool:
        """Handshake: the first frame must be session.update; answer session.created."""
        try:
            msg = await self.ws.receive(timeout=self._settings.handshake_timeout)
        except TimeoutError:
            await self._refuse("no session.update within the handshake timeout", "timeout")
            return False
        if msg.type in _CLOSING:
            return False
        if msg.type is not WSMsgType.TEXT:
            await self._refuse("the first frame must be a session.update event", "handshake")
            return False
        try:
            event = parse_event(msg.data)
        except ProtocolError as exc:
            await self._refuse(str(exc), "invalid_event")
            return False
        event_id = event.get("event_id")
        update = event.get("session")
        if event["type"] != SESSION_UPDATE or not isinstance(update, dict):
            await self._refuse(
                "the first event must be a session.update with a session object",
                "handshake",
                event_id,
            )
            return False
        problem = declared_format_problem(update)
        if problem is not None:
            await self._refuse(problem, "unsupported_audio_format", event_id)
            return False

        call_id = self._call_id or _session_call_id(update) or new_id("call")
        self._call_id = call_id
        session = pin_audio_format(update)
        session["talkwire"] = {**_dict(session.get("talkwire")), "call_id": call_id}
        call = Call(call_id, session, self.ws, self.end)
        self.call = call
        try:
            self.agent = self._factory(call)
            effective = await self.agent.on_start()
            if not isinstance(effective, dict):
                raise TypeError(f"on_start returned {type(effective).__name__}, not a session dict")
        except Exception as exc:
            self._agent_failed("on_start", exc)
            return False
        effective = pin_audio_format(effective)
        effective.setdefault("object", "realtime.session")
        effective.setdefault("id", new_id("sess"))
        call.session = effective
        await call.send_event(make_event(SESSION_CREATED, session=effective))
        return True

    async def _dispatch(self, agent: Agent) -> None:
        ws = self.ws
        # Bounded by the connection: every close path yields a closing message,
        # and an agent failure ends the loop at once.
        while True:
            msg = await ws.receive()
            if msg.type is WSMsgType.BINARY:
                try:
                    pcm = validate_pcm(msg.data)
                except ProtocolError as exc:
                    await self._send_raw(error_event(str(exc), code="invalid_audio"))
                    continue
                try:
                    await agent.on_audio(pcm)
                except Exception as exc:
                    self._agent_failed("on_audio", exc)
                    return
            elif msg.type is WSMsgType.TEXT:
                try:
                    event = parse_event(msg.data)
                except ProtocolError as exc:
                    await self._send_raw(error_event(str(exc), code="invalid_event"))
                    continue
                try:
                    await agent.on_event(event)
                except Exception as exc:
                    self._agent_failed("on_event", exc)
                    return
            elif msg.type in _CLOSING:
                return


def _dict(value: object) -> dict[str, Any]:
    return dict(value) if isinstance(value, dict) else {}


def _session_call_id(session: Mapping[str, Any]) -> str | None:
    call_id = _dict(session.get("talkwire")).get("call_id")
    if isinstance(call_id, str) and _CALL_ID_RE.fullmatch(call_id):
        return call_id
    return None


class _AgentService:
    """Routes upgrades to agents and tracks live calls for /healthz and shutdown."""

    def __init__(self, agents: Mapping[str, AgentFactory], settings: ServerSettings) -> None:
        self.agents = dict(agents)
        self.settings = settings
        self.calls: set[_CallConnection] = set()
        self.metrics = AgentMetrics()

    async def handle(self, request: web.Request) -> web.StreamResponse:
        secret = self.settings.internal_secret
        if secret is not None and not authorized(request, secret):
            self.metrics.refused.labels("unauthorized").inc()
            return unauthorized()
        name = request.match_info["name"]
        factory = self.agents.get(name)
        if factory is None:
            self.metrics.refused.labels("unknown_agent").inc()
            return _json_error(404, f"no agent named {name!r}", "unknown_agent")
        call_id = request.query.get("call_id")
        if call_id is not None and not _CALL_ID_RE.fullmatch(call_id):
            self.metrics.refused.labels("invalid_call_id").inc()
            return _json_error(400, "call_id must be 1-128 of [A-Za-z0-9_.:-]", "invalid_call_id")
        ws = web.WebSocketResponse(
            timeout=self.settings.close_timeout,
            compress=False,  # PCM does not compress; deflate would cost CPU on every frame
            max_msg_size=MAX_FRAME_BYTES,
            heartbeat=self.settings.heartbeat,
        )
        if not ws.can_prepare(request).ok:
            self.metrics.refused.labels("upgrade_required").inc()
            return _json_error(426, "this endpoint is a WebSocket", "upgrade_required")
        conn = _CallConnection(ws, factory, name, call_id, self.settings)
        # Registered before the upgrade is answered, so a shutdown can never miss it.
        self.calls.add(conn)
        active = self.metrics.active.labels(name)
        active.inc()
        try:
            await ws.prepare(request)
            await conn.run()
        finally:
            self.calls.discard(conn)
            active.dec()
            end = _END_BY_CODE.get(conn.close_code, "other") if conn.close_code else "other"
            self.metrics.ended.labels(name, end).inc()
        return ws

    async def metrics_page(self, request: web.Request) -> web.Response:
        body = generate_latest(self.metrics.registry)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def healthz(self, request: web.Request) -> web.Response:
        return web.json_response(
            {"status": "ok", "calls": len(self.calls), "agents": sorted(self.agents)}
        )

    async def shutdown(self, app: web.Application) -> None:
        for conn in list(self.calls):
            conn.end(None, CLOSE_GOING_AWAY)


SERVICE_KEY: Final = web.AppKey("talkwire.agents.service", _AgentService)


def make_agent_app(
    agents: Mapping[str, AgentFactory], settings: ServerSettings | None = None
) -> web.Application:
    """An aiohttp app serving ``agents`` (name → Agent class or factory), /healthz and /metrics."""
    service = _AgentService(agents, settings or ServerSettings())
    app = web.Application()
    app[SERVICE_KEY] = service
    app.router.add_get("/healthz", service.healthz)
    app.router.add_get("/metrics", service.metrics_page)
    app.router.add_get("/v1/agents/{name}", service.handle)
    app.on_shutdown.append(service.shutdown)
    return app


def live_calls(app: web.Application) -> int:
    """Calls the app is serving right now."""
    return len(app[SERVICE_KEY].calls)


def _bind(host: str, port: int) -> socket.socket:
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as exc:
        raise OSError(f"cannot resolve {host!r}: {exc}") from exc
    family, socktype, proto, _, addr = infos[0]
    sock = socket.socket(family, socktype, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(addr)
    except OSError:
        sock.close()
        raise
    sock.setblocking(False)
    return sock


class AgentServer:
    """A running agent server; ``url`` has the real port even when 0 was asked for."""

    def __init__(self, runner: web.AppRunner, host: str, port: int) -> None:
        self.runner = runner
        self.host = host
        self.port = port

    @property
    def url(self) -> str:
        return f"ws://{format_address((self.host, self.port))}"

    async def close(self) -> None:
        """Close every call (1001 going away), then stop listening."""
        await self.runner.cleanup()


async def start_agent_server(
    host: str,
    port: int,
    agents: Mapping[str, AgentFactory],
    settings: ServerSettings | None = None,
) -> AgentServer:
    """Listen on ``host:port`` (0 = any free port) and serve ``agents``."""
    sock = _bind(host, port)
    runner = web.AppRunner(make_agent_app(agents, settings), shutdown_timeout=5.0)
    try:
        await runner.setup()
        site = web.SockSite(runner, sock)
        await site.start()
    except BaseException:
        await runner.cleanup()
        sock.close()
        raise
    bound_host, bound_port = sock.getsockname()[:2]
    return AgentServer(runner, bound_host, bound_port)


async def run_agent_server(
    host: str,
    port: int,
    agents: Mapping[str, AgentFactory],
    *,
    settings: ServerSettings | None = None,
    on_ready: Callable[[str], None] | None = None,
    stop: asyncio.Event | None = None,
) -> None:
    """Serve until ``stop`` is set (or the task is cancelled); ``on_ready(url)`` once listening."""
    server = await start_agent_server(host, port, agents, settings)
    try:
        if on_ready is not None:
            on_ready(server.url)
        await (stop or asyncio.Event()).wait()
    finally:
        await server.close()
