"""The shared secret between talkwire's own components.

Signaling calls the transceiver's internal API and the transceiver opens the
agent WebSocket; neither faces clients, but on a shared network anything that
can reach those ports could place or end calls, or impersonate a caller to an
agent. Every such request carries ``Authorization: Bearer <secret>``; probes
(health, metrics) stay open so a load balancer needs no secret.

The secret comes from a private file or from the environment, never from
argv, where every user of the host can read it in ``ps``.
"""

from __future__ import annotations

import argparse
import hmac
import ipaddress
import logging
import os
from collections.abc import Awaitable, Callable, Collection

from aiohttp import web
from aiohttp.typedefs import Middleware

from talkwire.errors import ConfigError
from talkwire.secret_files import read_private, secret_lines

SECRET_ENV = "TALKWIRE_INTERNAL_SECRET"  # noqa: S105 (the variable's name, not a secret)
# Long enough that guessing it over the network is hopeless.
MIN_SECRET_CHARS = 16

log = logging.getLogger(__name__)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def load_secret(path: str | os.PathLike[str] | None) -> str | None:
    """The secret from ``path`` (its first line) or else ``$TALKWIRE_INTERNAL_SECRET``."""
    if path is not None:
        lines = secret_lines(read_private(path, "internal secret file"))
        if not lines:
            raise ConfigError(f"internal secret file {os.fspath(path)} holds no secret")
        secret = lines[0]
        source = f"internal secret file {os.fspath(path)}"
    else:
        secret = os.environ.get(SECRET_ENV, "")
        if not secret:
            return None
        source = f"${SECRET_ENV}"
    if len(secret) < MIN_SECRET_CHARS:
        raise ConfigError(f"{source}: the secret must be at least {MIN_SECRET_CHARS} characters")
    return secret


def add_secret_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--internal-secret-file",
        metavar="FILE",
        help="secret shared by signaling, transceivers and agents (first line; mode 0600;"
        f" default: ${SECRET_ENV}; none: internal requests are not authenticated)",
    )


def bearer(secret: str | None) -> dict[str, str]:
    """Headers for a request to another component (none without a secret)."""
    return {} if secret is None else {"Authorization": f"Bearer {secret}"}


def authorized(request: web.BaseRequest, secret: str) -> bool:
    scheme, _, presented = request.headers.get("Authorization", "").partition(" ")
    # Bytes, so a non-ASCII header cannot make compare_digest raise.
    return scheme.lower() == "bearer" and hmac.compare_digest(
        presented.strip().encode("utf-8", "surrogateescape"), secret.encode()
    )


def unauthorized() -> web.Response:
    body = {
        "error": {
            "type": "invalid_request_error",
            "code": "invalid_internal_secret",
            "message": "missing or wrong internal secret (Authorization: Bearer)",
        }
    }
    return web.json_response(body, status=401)


def require_secret(secret: str | None, open_paths: Collection[str]) -> Middleware | None:
    """Middleware answering 401 to any request outside ``open_paths`` without the secret."""
    if secret is None:
        return None

    @web.middleware
    async def check(request: web.Request, handler: Handler) -> web.StreamResponse:
        if request.path in open_paths or authorized(request, secret):
            return await handler(request)
        return unauthorized()

    return check


def warn_if_exposed(component: str, host: str, secret: str | None) -> None:
    """Say so when an internal port is reachable beyond this host with no secret."""
    if secret is not None:
        return
    try:
        loopback = ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        loopback = host == "localhost"
    if not loopback:
        log.warning(
            "%s listens on %s without an internal secret: anything that reaches it can"
            " use it; set $%s or the secret file option",
            component,
            host,
            SECRET_ENV,
        )
