"""Run the signaling app on a socket: used by `talkwire signaling`,
`talkwire up` and the loopback tests."""

from __future__ import annotations

import random
import socket
import ssl
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

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


def tls_context(cert: Path, key: Path) -> ssl.SSLContext:
    """A server context (TLS 1.2 and up) from PEM files; ConfigError naming the problem."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        context.load_cert_chain(cert, key)
    except FileNotFoundError as exc:
        raise ConfigError(f"--tls-cert/--tls-key: no such file {exc.filename}") from None
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(f"--tls-cert {cert} / --tls-key {key}: {exc}") from None
    return context


@dataclass
class RunningSignaling:
    runner: web.AppRunner
    app: web.Application
    host: str
    port: int
    tls: bool = False

    @property
    def url(self) -> str:
        scheme = "https" if self.tls else "http"
        return f"{scheme}://{format_address((self.host, self.port))}"

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
    tls = None
    if config.tls_cert is not None and config.tls_key is not None:
        tls = tls_context(config.tls_cert, config.tls_key)  # before binding: fail early
    sock = _bind(host, port)
    app = make_signaling_app(config, registry, clock=clock, rng=rng)
    # aiohttp's keep-alive timer runs from connect until a request's headers are in,
    # so it is also the header deadline (a slow-headers client is dropped at it).
    runner = web.AppRunner(
        app, access_log=None, handle_signals=False, keepalive_timeout=config.header_timeout_s
    )
    try:
        await runner.setup()
        site = web.SockSite(runner, sock, ssl_context=tls)
        await site.start()
    except BaseException:
        await runner.cleanup()
        sock.close()
        raise
    bound_host, bound_port = sock.getsockname()[:2]
    return RunningSignaling(
        runner=runner, app=app, host=bound_host, port=bound_port, tls=tls is not None
    )
