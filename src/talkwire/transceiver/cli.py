"""`talkwire transceiver`: terminate WebRTC calls that relays forward here."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import signal

import uvloop
from aiohttp import web

from talkwire.config import format_address, parse_address
from talkwire.errors import ConfigError
from talkwire.internal_auth import add_secret_argument, load_secret, warn_if_exposed
from talkwire.registry import check_registry_url, open_registry
from talkwire.relay.config import parse_network
from talkwire.relay.router import LOOPBACK
from talkwire.route_token import Keyring
from talkwire.transceiver.announce import announce
from talkwire.transceiver.api import make_transceiver_app
from talkwire.transceiver.service import Transceiver, TransceiverConfig


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--api", default="127.0.0.1:8081", help="internal HTTP API address")
    parser.add_argument(
        "--udp", default="127.0.0.1:0", help="internal UDP address relays forward to (port 0: any)"
    )
    parser.add_argument(
        "--advertise", help="UDP address put in route tokens, if relays see this host differently"
    )
    parser.add_argument(
        "--relay-public",
        action="append",
        required=True,
        metavar="HOST:PORT",
        help="a relay public address, in the relay's --listen order (repeatable)",
    )
    parser.add_argument("--keyring", required=True, help="route token keyring file")
    parser.add_argument("--cluster", type=int, default=0, help="cluster id (0..255)")
    parser.add_argument("--capacity", type=int, default=100, help="maximum concurrent calls")
    parser.add_argument("--connect-timeout", type=float, default=10.0, help="seconds")
    parser.add_argument("--drain-timeout", type=float, default=30.0, help="seconds, on SIGTERM")
    parser.add_argument(
        "--trust",
        action="append",
        metavar="CIDR",
        help="relay network allowed to send UDP here (repeatable; default loopback)",
    )
    parser.add_argument("--region", default="local")
    parser.add_argument("--id", help="transceiver id (default: random)")
    add_secret_argument(parser)
    parser.add_argument(
        "--registry",
        metavar="URL",
        help="announce this transceiver in a shared registry (redis://HOST:PORT/DB) every second",
    )
    parser.add_argument(
        "--api-advertise",
        metavar="URL",
        help="the API URL signaling should use (default: http://the --api address)",
    )


def config_from_args(args: argparse.Namespace) -> TransceiverConfig:
    keyring = Keyring.from_file(args.keyring)
    if not 0 <= args.cluster <= 255:
        raise ConfigError(f"cluster {args.cluster} out of range 0..255")
    if args.capacity < 1:
        raise ConfigError("capacity must be at least 1")
    config = TransceiverConfig(
        keyring=keyring,
        public_addresses=[parse_address(a, "relay public address") for a in args.relay_public],
        udp_listen=parse_address(args.udp, "UDP address", allow_port_zero=True),
        udp_advertise=parse_address(args.advertise, "advertised address")
        if args.advertise
        else None,
        cluster=args.cluster,
        capacity=args.capacity,
        connect_timeout=args.connect_timeout,
        drain_timeout=args.drain_timeout,
        region=args.region,
        trusted_relays=tuple(parse_network(t) for t in args.trust) if args.trust else LOOPBACK,
        internal_secret=load_secret(args.internal_secret_file),
        keyring_path=args.keyring,
    )
    if args.id:
        config.id = args.id
    return config


async def serve(
    config: TransceiverConfig,
    api: tuple[str, int],
    registry_url: str | None = None,
    api_advertise: str | None = None,
) -> None:
    warn_if_exposed("the transceiver API", api[0], config.internal_secret)
    transceiver = Transceiver(config)
    await transceiver.start()
    runner = web.AppRunner(make_transceiver_app(transceiver), access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, api[0], api[1])
    await site.start()
    port = runner.addresses[0][1]
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    udp = format_address(transceiver.udp_address)
    api_url = f"http://{format_address((api[0], port))}"
    announcing: asyncio.Task[None] | None = None
    registry = None
    if registry_url is not None:
        registry = open_registry(registry_url)
        announcing = asyncio.create_task(
            announce(registry, transceiver, api_advertise or api_url), name="announce"
        )
    print(f"ready {api_url} udp {udp}", flush=True)
    await stop.wait()
    await transceiver.drain()  # still announced meanwhile, as draining
    if announcing is not None:
        announcing.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await announcing
    if registry is not None:
        await registry.close()
    await runner.cleanup()
    await transceiver.stop()


def run(args: argparse.Namespace) -> int:
    config = config_from_args(args)
    api = parse_address(args.api, "API address", allow_port_zero=True)
    logging.basicConfig(level=os.environ.get("TALKWIRE_LOG", "WARNING"))
    if args.registry is not None:
        check_registry_url(args.registry)  # a bad URL or a missing extra stops it here
        host = api[0].strip("[]")
        if args.api_advertise is None and host in ("0.0.0.0", "::"):
            raise ConfigError(
                f"--api {args.api} listens on every address: with --registry, say which one"
                " signaling should use with --api-advertise http://HOST:PORT"
            )
    uvloop.run(serve(config, api, args.registry, args.api_advertise))
    return 0
