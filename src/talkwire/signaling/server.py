"""Run the signaling app on a socket: used by `talkwire signaling`,
`talkwire up` and the loopback tests."""

from __future__ import annotations

import random
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass

from aiohttp import web

from talkwire.config import format_address
from talkwire.errors import ConfigError
from talkwire.registry.base import Registry
from talkwire.signaling.app import make_signaling_app
from talkwire.signaling.config import SignalingConfig


def parse_listen(text: str) -> tuple[str, int]:
    """``HOST:PORT`` or ``[V6]:PORT`` → (host, port); port 0 means ephemeral."""
    host, sep, port_text = text.rpartition(":")
    if not sep or not host:
        raise ConfigError(f"--listen must be HOST:PORT, got {text!r}")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    try:
        port = int(port_text)
    except ValueError:
        raise ConfigError(f"--listen: bad port {port_text!r}") from None
    if not 0 <= port <= 65535:
        raise ConfigError(f"--listen: port {port} out of range")
    return host, port


def _bind(host: str, port: int) -> socket.socket:
    try:
        family = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0][0]
        sock = socket.create_server((host, port), family=family)
    except OSError as exc:
        raise ConfigError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
    sock.setblocking(False)
    return sock


@dataclass
class RunningSignaling:
    runner: web.AppRunner
    app: web.Application
    host: str
    port: int

    @property
    def url(self) -> str:
        return f"http://{format_address((self.host, self.port))}"

    async def close(self) -> None:
        await self.runner.cleanup()


async def start_signaling(
    config: SignalingConfig,
    registry: Registry,
    host: str = "127.0.0.1",
    port: int = 0,
    *,
    clock: Callable[[], float] = time.time,
    rng: random.Random | None = None,
) -> RunningSignaling:
    """Start serving; the caller owns the result and must ``close()`` it."""
    sock = _bind(host, port)
    app = make_signaling_app(config, registry, clock=clock, rng=rng)
    runner = web.AppRunner(app, access_log=None, handle_signals=False)
    try:
        await runner.setup()
        site = web.SockSite(runner, sock)
        await site.start()
    except BaseException:
        await runner.cleanup()
        sock.close()
        raise
    bound_host, bound_port = sock.getsockname()[:2]
    return RunningSignaling(runner=runner, app=app, host=bound_host, port=bound_port)
