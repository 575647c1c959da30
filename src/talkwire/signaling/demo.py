"""Demo support (only with ``--demo-dir``): the demo page's static files, and
an endpoint that mints an ephemeral key for it the way an app's backend
would. That endpoint needs no API key, so it answers loopback peers only."""

from __future__ import annotations

import ipaddress
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from aiohttp import web

from talkwire.signaling.errors import ApiError

Minter = Callable[[web.Request], Awaitable[dict[str, Any]]]


def is_loopback(peer: str | None) -> bool:
    if not peer:
        return False
    try:
        addr = ipaddress.ip_address(peer.split("%", 1)[0])
    except ValueError:
        return False
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        addr = addr.ipv4_mapped
    return addr.is_loopback


def resolve_static(root: Path, tail: str) -> Path | None:
    """The file under ``root`` that ``tail`` names, or None: no escaping the
    root through ``..`` or symlinks, directories serve their index.html."""
    base = root.resolve()
    try:
        target = (base / tail).resolve()
    except (OSError, ValueError):
        return None
    if not target.is_relative_to(base):
        return None
    if target.is_dir():
        target = target / "index.html"
    return target if target.is_file() else None


def add_routes(
    app: web.Application,
    root: Path,
    mint: Minter,
    models: list[str] | None = None,
    default_model: str | None = None,
) -> None:
    async def client_secret(request: web.Request) -> web.Response:
        # The TCP peer, never a forwarded header: a proxy in front must not
        # turn this into a public key dispenser.
        if not is_loopback(request.remote):
            raise ApiError(403, "forbidden", "The demo key endpoint only answers loopback clients.")
        return web.json_response(await mint(request))

    async def static(request: web.Request) -> web.FileResponse:
        path = resolve_static(root, request.match_info["tail"])
        if path is None:
            raise web.HTTPNotFound()
        return web.FileResponse(path, headers={"Cache-Control": "no-cache"})

    async def config(request: web.Request) -> web.Response:
        # What the page offers: the model table's names, the default preselected.
        return web.json_response({"models": models or [], "default_model": default_model})

    app.router.add_post("/demo/client_secret", client_secret)
    app.router.add_get("/demo/config", config)
    app.router.add_get("/{tail:.*}", static)
