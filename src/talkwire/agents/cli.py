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
import signal
from collections.abc import Mapping

import uvloop

from talkwire.agents.echo import MAX_DELAY_MS, EchoAgent
from talkwire.agents.server import AgentFactory, ServerSettings, run_agent_server
from talkwire.agents.voice import require_voice_extra
from talkwire.agents.voice.llm import LlmSettings
from talkwire.errors import ConfigError
from talkwire.internal_auth import add_secret_argument, load_secret, warn_if_exposed

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
    if args.agent == "voice":
        return uvloop.run(_serve_voice(host, port, settings, args))
    agents = builtin_agents(args.delay_ms)
    served = {args.agent: agents[args.agent]}
    return uvloop.run(_serve(host, port, settings, served))


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
        return await _serve(host, port, settings, {"voice": factory})


async def _serve(
    host: str, port: int, settings: ServerSettings, agents: Mapping[str, AgentFactory]
) -> int:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)

    def ready(url: str) -> None:
        print(f"ready {url}", flush=True)

    try:
        await run_agent_server(host, port, agents, settings=settings, on_ready=ready, stop=stop)
    except OSError as exc:
        raise ConfigError(f"cannot listen on {host}:{port}: {exc}") from exc
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)
    return 0
