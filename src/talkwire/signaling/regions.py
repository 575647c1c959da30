"""Which region a client belongs to. Pure: the peer address and request
headers in, a region name out.

Sources, first match wins:
1. a CDN geo header (e.g. ``CF-IPCountry``), when configured (and, if
   ``trusted_proxies`` are, sent by one of them): its value is a country
   looked up in ``countries``, or directly a region name;
2. the client IP in the CIDR table, longest prefix first;
3. the default region.

The client IP is the TCP peer, unless ``client_ip_header`` (e.g.
``X-Forwarded-For``) is configured *and* the peer is one of the
``trusted_proxies``: then the address that proxy appended is used.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from talkwire.errors import ConfigError

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


@dataclass(frozen=True)
class RegionTable:
    default_region: str = "local"
    networks: tuple[tuple[IPNetwork, str], ...] = ()
    geo_header: str | None = None
    countries: Mapping[str, str] = field(default_factory=dict)
    client_ip_header: str | None = None
    trusted_proxies: tuple[IPNetwork, ...] = ()

    def __post_init__(self) -> None:
        if not self.default_region:
            raise ConfigError("region table: default region must not be empty")
        if self.client_ip_header and not self.trusted_proxies:
            raise ConfigError(
                "region table: client_ip_header needs trusted_proxies, or any client could "
                "claim any address"
            )
        # Longest prefix first, so the first containing network is the best one.
        ordered = tuple(sorted(self.networks, key=lambda n: -n[0].prefixlen))
        object.__setattr__(self, "networks", ordered)
        object.__setattr__(self, "countries", {k.upper(): v for k, v in self.countries.items()})

    def region_names(self) -> set[str]:
        return {self.default_region, *(r for _, r in self.networks), *self.countries.values()}


def _address(text: str) -> IPAddress | None:
    try:
        addr = ipaddress.ip_address(text.strip().split("%", 1)[0])
    except ValueError:
        return None
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        return addr.ipv4_mapped
    return addr


def _header(headers: Mapping[str, str], name: str) -> str | None:
    # Plain dicts in tests, case-insensitive multidicts in the server.
    value = headers.get(name)
    if value is None:
        lowered = name.lower()
        value = next((v for k, v in headers.items() if k.lower() == lowered), None)
    return value


def client_address(
    table: RegionTable, peer: str | None, headers: Mapping[str, str]
) -> IPAddress | None:
    """The client's address as far as it can be trusted."""
    peer_addr = _address(peer) if peer else None
    if table.client_ip_header is None or peer_addr is None:
        return peer_addr
    if not any(peer_addr in net for net in table.trusted_proxies):
        return peer_addr
    forwarded = _header(headers, table.client_ip_header)
    if not forwarded:
        return peer_addr
    # The trusted proxy appends what it saw last; earlier entries are the
    # client's own claims.
    claimed = _address(forwarded.split(",")[-1])
    return claimed if claimed is not None else peer_addr


def _from_trusted_proxy(table: RegionTable, peer: str | None) -> bool:
    peer_addr = _address(peer) if peer else None
    return peer_addr is not None and any(peer_addr in net for net in table.trusted_proxies)


def choose_region(table: RegionTable, peer: str | None, headers: Mapping[str, str]) -> str:
    # With trusted proxies configured, only they may set the geo header; a
    # client that reaches signaling around them is placed by its address.
    if table.geo_header and (not table.trusted_proxies or _from_trusted_proxy(table, peer)):
        value = (_header(headers, table.geo_header) or "").strip()
        if value:
            region = table.countries.get(value.upper())
            if region is not None:
                return region
            if value in table.region_names():
                return value
    addr = client_address(table, peer, headers)
    if addr is not None:
        for net, region in table.networks:
            if addr.version == net.version and addr in net:
                return region
    return table.default_region


def _network(text: object, where: str) -> IPNetwork:
    if not isinstance(text, str):
        raise ConfigError(f"region table: {where}: expected a CIDR string, got {text!r}")
    try:
        return ipaddress.ip_network(text, strict=False)
    except ValueError as exc:
        raise ConfigError(f"region table: {where}: {exc}") from None


def _str_map(value: object, where: str) -> dict[str, str]:
    if value is None:
        return {}
    if not isinstance(value, dict) or not all(
        isinstance(k, str) and isinstance(v, str) and v for k, v in value.items()
    ):
        raise ConfigError(f"region table: {where!r} must map strings to region names")
    return dict(value)


def parse_region_table(data: Any, default_region: str | None = None) -> RegionTable:
    """Build a table from its JSON form::

        {"default_region": "eu",
         "networks": {"10.1.0.0/16": "eu", "2001:db8::/32": "us"},
         "geo_header": "CF-IPCountry", "countries": {"DE": "eu", "US": "us"},
         "client_ip_header": "X-Forwarded-For", "trusted_proxies": ["10.0.0.0/8"]}

    ``default_region`` (the command-line flag) overrides the file's.
    """
    if not isinstance(data, dict):
        raise ConfigError("region table: expected a JSON object")
    known = {
        "default_region", "networks", "geo_header", "countries",
        "client_ip_header", "trusted_proxies",
    }  # fmt: skip
    unknown = sorted(set(data) - known)
    if unknown:
        raise ConfigError(f"region table: unknown keys {unknown}")
    region = default_region or data.get("default_region") or "local"
    if not isinstance(region, str):
        raise ConfigError("region table: 'default_region' must be a string")
    networks = tuple(
        (_network(cidr, f"networks[{cidr!r}]"), name)
        for cidr, name in _str_map(data.get("networks"), "networks").items()
    )
    proxies_raw = data.get("trusted_proxies") or []
    if not isinstance(proxies_raw, list):
        raise ConfigError("region table: 'trusted_proxies' must be a list of CIDRs")
    proxies = tuple(_network(p, "trusted_proxies") for p in proxies_raw)
    headers: dict[str, str | None] = {}
    for key in ("geo_header", "client_ip_header"):
        value = data.get(key)
        if value is not None and (not isinstance(value, str) or not value):
            raise ConfigError(f"region table: {key!r} must be a header name")
        headers[key] = value
    return RegionTable(
        default_region=region,
        networks=networks,
        geo_header=headers["geo_header"],
        countries=_str_map(data.get("countries"), "countries"),
        client_ip_header=headers["client_ip_header"],
        trusted_proxies=proxies,
    )
