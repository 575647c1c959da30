"""Parsing of settings shared by every subcommand."""

from __future__ import annotations

import ipaddress
import re

from talkwire.errors import ConfigError

Address = tuple[str, int]

_HOST_PORT = re.compile(r"\[(?P<v6>[^\]]+)\]:(?P<p6>\d+)|(?P<v4>[^:\[\]]+):(?P<p4>\d+)")


def parse_address(text: str, what: str = "address", *, allow_port_zero: bool = False) -> Address:
    """``1.2.3.4:5`` or ``[::1]:5`` -> (ip text, port); ConfigError naming `what` otherwise."""
    match = _HOST_PORT.fullmatch(text)
    if match is None:
        raise ConfigError(f"{what} {text!r} is not HOST:PORT ([IPv6]:PORT)")
    host = match["v6"] or match["v4"]
    port = int(match["p6"] or match["p4"])
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        raise ConfigError(f"{what} host {host!r} is not an IP address") from None
    if isinstance(ip, ipaddress.IPv6Address) and ip.scope_id:
        raise ConfigError(f"{what} {text!r}: scoped IPv6 addresses are not supported")
    if (ip.version == 6) != bool(match["v6"]):
        raise ConfigError(f"{what} {text!r}: write IPv6 as [addr]:port")
    low = 0 if allow_port_zero else 1
    if not low <= port <= 0xFFFF:
        raise ConfigError(f"{what} port {port} out of range {low}..65535")
    return str(ip), port


def format_address(address: Address) -> str:
    host, port = address[0], address[1]
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
