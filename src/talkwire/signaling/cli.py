"""`talkwire signaling`: the OpenAI-Realtime-compatible signaling server."""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import signal
import sys
from pathlib import Path

import uvloop

from talkwire.errors import ConfigError
from talkwire.internal_auth import add_secret_argument, load_secret
from talkwire.rate_limit import Rate
from talkwire.registry import check_registry_url, open_registry
from talkwire.registry.memory import MemoryRegistry
from talkwire.secret_files import read_private, secret_lines
from talkwire.signaling.config import SignalingConfig
from talkwire.signaling.regions import RegionTable, parse_region_table
from talkwire.signaling.server import parse_listen, start_signaling

API_KEY_ENV = "TALKWIRE_API_KEY"
# A user opens a call, perhaps mints a key first, and hangs up: a few requests
# a minute. A whole app behind one key or one NAT needs far more.
DEFAULT_RATE_PER_IP = "10/50"
DEFAULT_RATE_PER_KEY = "100/500"
LOG_ENV = "TALKWIRE_LOG"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--listen", default="127.0.0.1:8080", help="HOST:PORT (port 0: any)")
    parser.add_argument(
        "--api-key",
        action="append",
        default=[],
        help="accepted API key (repeatable; `ps` shows it: prefer --api-key-file or"
        f" ${API_KEY_ENV})",
    )
    parser.add_argument(
        "--api-key-file",
        metavar="FILE",
        help="accepted API keys, one a line, # comments (mode 0600; read at start)",
    )
    parser.add_argument(
        "--transceiver",
        action="append",
        default=[],
        metavar="URL",
        help="transceiver internal API URL to health-poll (repeatable)",
    )
    parser.add_argument(
        "--model",
        action="append",
        default=[],
        metavar="NAME=WS_URL",
        help="model name -> agent WebSocket URL (repeatable)",
    )
    parser.add_argument("--default-model", help="model for sessions that name none")
    parser.add_argument(
        "--registry",
        metavar="URL",
        help="shared registry (redis://HOST:PORT/DB): transceivers announced there, calls and"
        " client secrets shared by every signaling process (default: this process only)",
    )
    parser.add_argument("--region-table", type=Path, metavar="FILE", help="JSON region table")
    parser.add_argument("--default-region", help="region when nothing else matches")
    parser.add_argument(
        "--cors-origin",
        action="append",
        default=[],
        metavar="ORIGIN",
        help="allowed browser origin (repeatable; default *)",
    )
    parser.add_argument(
        "--max-body-bytes", type=int, default=64 * 1024, help="largest accepted request body"
    )
    parser.add_argument(
        "--header-timeout", type=float, default=10.0, metavar="S",
        help="seconds a connection may take to send a request's headers, or stay idle",
    )  # fmt: skip
    parser.add_argument(
        "--body-timeout", type=float, default=10.0, metavar="S",
        help="seconds a request's body may take to arrive (408 after)",
    )  # fmt: skip
    parser.add_argument("--demo-dir", type=Path, help="serve the demo page from DIR")
    parser.add_argument(
        "--tls-cert", type=Path, metavar="PEM", help="serve HTTPS: certificate chain"
    )
    parser.add_argument("--tls-key", type=Path, metavar="PEM", help="serve HTTPS: its private key")
    add_secret_argument(parser)
    parser.add_argument(
        "--rate-per-ip", default=DEFAULT_RATE_PER_IP, metavar="PER_S[/BURST]",
        help="POST requests per second (and burst) per client IP, or 'off'"
        f" (default {DEFAULT_RATE_PER_IP})",
    )  # fmt: skip
    parser.add_argument(
        "--rate-per-key", default=DEFAULT_RATE_PER_KEY, metavar="PER_S[/BURST]",
        help="POST requests per second (and burst) per API key, or 'off'"
        f" (default {DEFAULT_RATE_PER_KEY})",
    )  # fmt: skip


def _models(specs: list[str]) -> dict[str, str]:
    models: dict[str, str] = {}
    for spec in specs:
        name, sep, url = spec.partition("=")
        if not sep or not name or not url:
            raise ConfigError(f"--model must be NAME=WS_URL, got {spec!r}")
        if name in models:
            raise ConfigError(f"--model {name!r} given twice")
        models[name] = url
    return models


def _regions(path: Path | None, default_region: str | None) -> RegionTable:
    if path is None:
        return RegionTable(default_region=default_region or "local")
    try:
        data = json.loads(path.read_text())
    except OSError as exc:
        raise ConfigError(f"--region-table {path}: {exc.strerror or exc}") from None
    except ValueError as exc:
        raise ConfigError(f"--region-table {path}: not JSON: {exc}") from None
    return parse_region_table(data, default_region)


def config_from_args(args: argparse.Namespace) -> SignalingConfig:
    keys = list(args.api_key)
    if args.api_key_file is not None:
        from_file = secret_lines(read_private(args.api_key_file, "API key file"))
        if not from_file:
            raise ConfigError(f"API key file {args.api_key_file} holds no key")
        keys += from_file
    if not keys and os.environ.get(API_KEY_ENV):
        keys = [os.environ[API_KEY_ENV]]
    models = _models(args.model)
    default_model = args.default_model
    if default_model is None and len(models) == 1:
        default_model = next(iter(models))
    return SignalingConfig(
        api_keys=tuple(keys),
        models=models,
        default_model=default_model,
        discover_agents=args.registry is not None,
        transceivers=tuple(args.transceiver),
        regions=_regions(args.region_table, args.default_region),
        cors_origins=tuple(args.cors_origin) or ("*",),
        max_body_bytes=args.max_body_bytes,
        header_timeout_s=args.header_timeout,
        body_timeout_s=args.body_timeout,
        demo_dir=args.demo_dir,
        rate_per_ip=Rate.parse(args.rate_per_ip),
        rate_per_key=Rate.parse(args.rate_per_key),
        tls_cert=args.tls_cert,
        tls_key=args.tls_key,
        internal_secret=load_secret(args.internal_secret_file),
    )


async def _serve(config: SignalingConfig, host: str, port: int, registry_url: str | None) -> None:
    shared = open_registry(registry_url) if registry_url is not None else None
    server = await start_signaling(config, shared or MemoryRegistry(), host, port)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        print(f"ready {server.url}", flush=True)
        await stop.wait()
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)
        await server.close()
        if shared is not None:
            await shared.close()


def _logging() -> None:
    level = os.environ.get(LOG_ENV, "WARNING").upper()
    if not isinstance(logging.getLevelName(level), int):
        raise ConfigError(f"${LOG_ENV}: unknown log level {level!r}")
    # stderr, so stdout carries only the ready line.
    logging.basicConfig(level=level, format="%(asctime)s %(name)s %(levelname)s %(message)s")


def run(args: argparse.Namespace) -> int:
    config = config_from_args(args)
    _logging()
    host, port = parse_listen(args.listen)
    if args.registry is not None:
        check_registry_url(args.registry)  # a bad URL or a missing extra stops it here
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        runner.run(_serve(config, host, port, args.registry))
    sys.stdout.flush()
    return 0
