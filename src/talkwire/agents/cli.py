"""`talkwire agent NAME --listen HOST:PORT`: serve a built-in agent over the internal protocol.

Prints ``ready ws://HOST:PORT`` (the real port, also when 0 was asked for) once
listening, so a parent process can wait for that line instead of sleeping.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import os
import re
import secrets
import signal
import time
from collections.abc import Mapping

import uvloop

from talkwire.agents.echo import MAX_DELAY_MS, EchoAgent
from talkwire.agents.server import (
    AgentFactory,
    AgentServer,
    ServerSettings,
    live_calls,
    start_agent_server,
)
from talkwire.agents.voice import require_voice_extra
from talkwire.agents.voice.llm import LlmSettings
from talkwire.errors import ConfigError
from talkwire.internal_auth import add_secret_argument, load_secret, warn_if_exposed
from talkwire.registry import check_registry_url, open_registry
from talkwire.registry.announce import keep_announced
from talkwire.registry.base import AgentInfo

BUILTIN_AGENTS = ("echo", "voice")
LLM_KEY_ENV = "TALKWIRE_LLM_API_KEY"
DEFAULT_LISTEN = "127.0.0.1:8091"
_LISTEN_RE = re.compile(r"(?:\[(?P<v6>[0-9A-Fa-f:.]+)\]|(?P<host>[^:\[\]]+)):(?P<port>\d{1,5})")


def parse_listen(value: str) -> tuple[str, int]:
    """``HOST:PORT`` or ``[V6]:PORT`` → (host, port); port 0 means any free port."""
    match = _LISTEN_RE.fullmatch(value)
    if match is None:
        raise ConfigError(f"--listen must be HOST:PORT or [IPV6]:PORT, not {value!r}")
    port = int(match["port"])
    if port > 65535:
        raise ConfigError(f"--listen port {port} is out of range")
    return match["v6"] or match["host"], port


def builtin_agents(delay_ms: int = 0) -> dict[str, AgentFactory]:
    """The agents `talkwire agent` and `talkwire up` serve, by URL name."""
    return {"echo": functools.partial(EchoAgent, delay_ms=delay_ms)}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("agent", choices=BUILTIN_AGENTS, help="which built-in agent to serve")
    parser.add_argument(
        "--listen",
        default=DEFAULT_LISTEN,
        metavar="HOST:PORT",
        help=f"address for the agent WebSocket server (default {DEFAULT_LISTEN}; port 0 = any)",
    )
    parser.add_argument(
        "--delay-ms",
        type=int,
        default=0,
        metavar="MS",
        help=f"echo: play audio back this much later (0..{MAX_DELAY_MS}, default 0)",
    )
    add_secret_argument(parser)
    fleet = parser.add_argument_group("announcing in a shared registry")
    fleet.add_argument(
        "--registry",
        metavar="URL",
        help="announce this server every second in a shared registry (redis://HOST:PORT/DB), "
        "where signaling finds it by model",
    )
    fleet.add_argument(
        "--advertise",
        metavar="URL",
        help="the ws:// URL signaling should use (default: ws:// + the --listen address)",
    )
    fleet.add_argument("--region", default="local", help="its region (default local)")
    fleet.add_argument(
        "--capacity", type=int, default=100, help="calls it takes at most, as placement sees it"
    )
    fleet.add_argument("--id", help="its id in the registry (default: random)")
    voice = parser.add_argument_group("voice (needs talkwire[voice])")
    voice.add_argument(
        "--llm-url",
        metavar="URL",
        help="answer with an OpenAI-compatible chat-completions endpoint (base URL, e.g. "
        f"http://127.0.0.1:11434/v1) instead of the built-in rules; key from ${LLM_KEY_ENV}",
    )
    voice.add_argument("--llm-model", default="gpt-4o-mini", help="model name sent to --llm-url")
    voice.add_argument(
        "--workers", type=int, default=0, help="inference threads (default: one per usable core)"
    )


def run(args: argparse.Namespace) -> int:
    host, port = parse_listen(args.listen)
    if not 0 <= args.delay_ms <= MAX_DELAY_MS:
        raise ConfigError(f"--delay-ms must be within 0..{MAX_DELAY_MS}")
    if args.workers < 0:
        raise ConfigError("--workers must be >= 0")
    settings = ServerSettings(internal_secret=load_secret(args.internal_secret_file))
    warn_if_exposed("the agent server", host, settings.internal_secret)
    if args.registry is not None:
        check_registry_url(args.registry)
        if args.advertise is None and host in ("0.0.0.0", "::"):
            raise ConfigError("--registry with an unspecified --listen address needs --advertise")
        if args.advertise is not None and not args.advertise.startswith(("ws://", "wss://")):
            raise ConfigError(f"--advertise must be ws:// or wss://, not {args.advertise!r}")
        if args.capacity < 1:
            raise ConfigError("--capacity must be at least 1")
    if args.agent == "voice":
        return uvloop.run(_serve_voice(host, port, settings, args))
    agents = builtin_agents(args.delay_ms)
    served = {args.agent: agents[args.agent]}
    return uvloop.run(_serve(host, port, settings, served, args))


async def _serve_voice(
    host: str, port: int, settings: ServerSettings, args: argparse.Namespace
) -> int:
    require_voice_extra()
    # Only now: it imports the optional extra's packages.
    from talkwire.agents.voice.service import voice_agent_factory  # noqa: PLC0415

    llm = None
    if args.llm_url:
        if not args.llm_url.startswith(("http://", "https://")):
            raise ConfigError(f"--llm-url must be http:// or https://, not {args.llm_url!r}")
        llm = LlmSettings(args.llm_url, args.llm_model, os.environ.get(LLM_KEY_ENV))
    # Models load before the ready line: the first call must not wait for them.
    async with voice_agent_factory(llm, workers=args.workers or None) as factory:
        return await _serve(host, port, settings, {"voice": factory}, args)


async def _serve(
    host: str,
    port: int,
    settings: ServerSettings,
    agents: Mapping[str, AgentFactory],
    args: argparse.Namespace,
) -> int:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        server = await start_agent_server(host, port, agents, settings)
    except OSError as exc:
        raise ConfigError(f"cannot listen on {host}:{port}: {exc}") from exc
    announcing = None
    try:
        if args.registry is not None:
            announcing = asyncio.create_task(
                _announce(args, server, sorted(agents)), name="announce"
            )
        print(f"ready {server.url}", flush=True)
        await stop.wait()
    finally:
        if announcing is not None:
            announcing.cancel()
            await asyncio.gather(announcing, return_exceptions=True)
        await server.close()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)
    return 0


async def _announce(args: argparse.Namespace, server: AgentServer, models: list[str]) -> None:
    registry = open_registry(args.registry)
    agent_id = args.id or f"agent-{secrets.token_hex(4)}"
    url = args.advertise or server.url

    async def publish() -> None:
        active = live_calls(server.runner.app)
        info = AgentInfo(
            agent_id, url, tuple(models), args.region, args.capacity, active, time.time()
        )
        await registry.publish_agent(info)

    try:
        await keep_announced(
            publish, lambda: registry.remove_agent(agent_id), what=f"agent server {agent_id}"
        )
    finally:
        await registry.close()
