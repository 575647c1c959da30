"""`talkwire up`: signaling, relay, transceiver, the voice and echo agents on one machine."""

from __future__ import annotations

import argparse
import asyncio
import os
import signal

import uvloop

from talkwire.agents.voice import EXTRA_HINT, voice_available
from talkwire.errors import ConfigError
from talkwire.stack import Stack, StackConfig, StackError


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--host", default="127.0.0.1", help="address every part listens on")
    parser.add_argument("--port", type=int, default=8080, help="HTTP port: API and demo page")
    parser.add_argument("--relay-port", type=int, default=3478, help="the relay's UDP port")
    parser.add_argument("--relay-workers", type=int, default=1)
    parser.add_argument(
        "--transceivers",
        type=int,
        default=len(os.sched_getaffinity(0)),
        help="transceiver processes, one event loop each (default: one per core)",
    )
    parser.add_argument("--no-demo", action="store_true", help="do not serve the demo page")
    parser.add_argument(
        "--no-voice", action="store_true", help="do not run the voice agent (echo only)"
    )
    parser.add_argument(
        "--llm-url",
        metavar="URL",
        help="the voice agent answers through this OpenAI-compatible chat-completions API "
        "(key from $TALKWIRE_LLM_API_KEY) instead of its built-in rules",
    )
    parser.add_argument("--llm-model", help="model name for --llm-url")
    parser.add_argument("--log-level", default="WARNING")


async def _up(config: StackConfig) -> int:
    stack = Stack(config)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        await stack.start()
    except StackError as exc:
        print(f"talkwire up: {exc}")
        return 1
    relay = f"{stack.relay_address[0]}:{stack.relay_address[1]}"
    transceivers = len(stack.transceiver_urls)
    api = f"{stack.signaling_url}/v1"
    print(f"talkwire is up (relay udp {relay}, API {api}, {transceivers} transceivers)")
    models = "voice (default), echo" if stack.voice_url else "echo"
    print(f"  models:    {models}")
    if config.demo:
        print(f"  demo page: {stack.demo_url}")
    print(f"  API key:   {config.api_key}")
    print("  Ctrl-C stops everything.", flush=True)
    await stop.wait()
    print("stopping...", flush=True)
    await stack.stop()
    return 0


def run(args: argparse.Namespace) -> int:
    if not 0 <= args.port <= 65535 or not 0 <= args.relay_port <= 65535:
        raise ConfigError("ports must be 0..65535")
    if args.transceivers < 1:
        raise ConfigError("--transceivers must be at least 1")
    config = StackConfig(
        host=args.host,
        http_port=args.port,
        relay_port=args.relay_port,
        relay_workers=args.relay_workers,
        transceivers=args.transceivers,
        demo=not args.no_demo,
        log_level=args.log_level,
        voice=not args.no_voice and voice_available(),
        llm_url=args.llm_url,
        llm_model=args.llm_model,
    )
    if not args.no_voice and not config.voice:
        print(f"talkwire up: voice agent off: {EXTRA_HINT}")
    if key := os.environ.get("TALKWIRE_API_KEY"):
        config.api_key = key
    return uvloop.run(_up(config))
