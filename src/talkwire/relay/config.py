"""The relay's settings: one typed object, built from the command line."""

from __future__ import annotations

import argparse
import ipaddress
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from talkwire.config import format_address, parse_address
from talkwire.errors import ConfigError
from talkwire.rate_limit import Rate
from talkwire.registry import check_registry_url
from talkwire.relay.flows import DEFAULT_CAPACITY, DEFAULT_IDLE_TIMEOUT
from talkwire.relay.router import LOOPBACK, VIRTUAL_PER_PEER, Network
from talkwire.route_token import MAX_CLUSTER

DEFAULT_LISTEN = "0.0.0.0:3478"
DEFAULT_INTERNAL = "127.0.0.1:3479"
_CLUSTER_INGRESS = re.compile(r"(\d+)=(.+)")
# Per worker and client /24 or /64: a busy office or carrier NAT starts a few
# calls a second; a spoofing host walking its own prefix is held to this.
DEFAULT_NEW_FLOWS_PER_PREFIX = "100/500"
# Virtual ingress indices must fit the header's 16 bits.
MAX_BACKBONE_PEERS = 0xFFFF // VIRTUAL_PER_PEER - 16


@dataclass(frozen=True)
class RelayConfig:
    """Everything ``talkwire relay`` runs with; addresses are (ip text, port)."""

    keyring_path: str
    listen: tuple[tuple[str, int], ...] = (("0.0.0.0", 3478),)
    # Worker i binds port + i (port 0: each worker takes an ephemeral port).
    internal: tuple[str, int] = ("127.0.0.1", 3479)
    cluster: int = 0
    cluster_ingress: Mapping[int, tuple[str, int]] = field(default_factory=dict)
    trusted: tuple[Network, ...] = LOOPBACK
    workers: int = 1
    pin_cpus: bool = False
    max_flows: int = DEFAULT_CAPACITY
    idle_timeout: float = DEFAULT_IDLE_TIMEOUT
    verify_integrity: bool = False
    new_flows_per_prefix: Rate | None = None  # the command line's default is on
    metrics: tuple[str, int] | None = None
    ready_file: str | None = None
    socket_buffer: int = 0
    flow_cache: str | None = None  # redis:// URL of the shared flow cache
    # Where global relays forward clients to this region (all workers share it).
    backbone: tuple[str, int] | None = None
    backbone_peers: tuple[tuple[str, int], ...] = ()

    def __post_init__(self) -> None:
        if not self.listen:
            raise ConfigError("--listen: at least one public address is needed")
        if len(set(self.listen)) != len(self.listen):
            raise ConfigError("--listen: an address is listed twice")
        if not 0 <= self.cluster <= MAX_CLUSTER:
            raise ConfigError(f"--cluster {self.cluster} out of range 0..{MAX_CLUSTER}")
        if self.workers < 1:
            raise ConfigError(f"--workers {self.workers}: needs at least 1")
        if self.internal[1] and self.internal[1] + self.workers - 1 > 0xFFFF:
            raise ConfigError(
                f"--internal port {self.internal[1]} + {self.workers} workers passes 65535"
            )
        if self.max_flows < 1:
            raise ConfigError(f"--max-flows {self.max_flows}: needs at least 1")
        if not self.idle_timeout > 0:
            raise ConfigError(f"--idle-timeout {self.idle_timeout}: must be > 0 seconds")
        if self.socket_buffer < 0:
            raise ConfigError(f"--socket-buffer {self.socket_buffer}: must be >= 0")
        internal_v6 = ":" in self.internal[0]
        for cluster, address in self.cluster_ingress.items():
            if cluster == self.cluster:
                raise ConfigError(f"--cluster-ingress {cluster}: that is this relay's own cluster")
            if (":" in address[0]) != internal_v6:
                raise ConfigError(
                    f"--cluster-ingress {cluster}={format_address(address)}: address family "
                    f"differs from --internal {format_address(self.internal)}"
                )

        if self.backbone_peers and self.backbone is None:
            raise ConfigError("--backbone-peer needs --backbone, where those peers send")
        if len(self.backbone_peers) > MAX_BACKBONE_PEERS:
            raise ConfigError(f"--backbone-peer: at most {MAX_BACKBONE_PEERS} peers")
        if len({ip for ip, _ in self.backbone_peers}) != len(self.backbone_peers):
            raise ConfigError("--backbone-peer: one per host (peers are told apart by IP)")
        if self.backbone is not None:
            # Every socket shares its port (SO_REUSEPORT, one user): overlapping
            # roles would bind without error and mix in one port group.
            taken = {*self.listen, *(self.internal_address(i) for i in range(self.workers))}
            if self.backbone[1] and self.backbone in taken:
                raise ConfigError(
                    f"--backbone {format_address(self.backbone)} is also a --listen or"
                    " --internal (port + worker) address"
                )
            if (":" in self.backbone[0]) != internal_v6:
                raise ConfigError(
                    f"--backbone {format_address(self.backbone)}: address family differs from"
                    f" --internal {format_address(self.internal)} (its flows lead there)"
                )
        for peer in self.backbone_peers:
            if (":" in peer[0]) != internal_v6:
                raise ConfigError(
                    f"--backbone-peer {format_address(peer)}: address family differs from"
                    f" --backbone and --internal {format_address(self.internal)}"
                )

    @property
    def internal_family(self) -> int:
        return 6 if ":" in self.internal[0] else 4

    @property
    def ingress_families(self) -> tuple[int, ...]:
        return tuple(6 if ":" in host else 4 for host, _ in self.listen)

    def internal_address(self, worker: int) -> tuple[str, int]:
        host, port = self.internal
        return (host, port + worker if port else 0)


def parse_network(text: str) -> Network:
    try:
        return ipaddress.ip_network(text)
    except ValueError as exc:
        raise ConfigError(f"--trust {text!r} is not a network in CIDR form ({exc})") from None


def parse_cluster_ingress(text: str) -> tuple[int, tuple[str, int]]:
    match = _CLUSTER_INGRESS.fullmatch(text)
    if match is None:
        raise ConfigError(f"--cluster-ingress {text!r} is not CLUSTER=HOST:PORT")
    cluster = int(match[1])
    if not 0 <= cluster <= MAX_CLUSTER:
        raise ConfigError(f"--cluster-ingress cluster {cluster} out of range 0..{MAX_CLUSTER}")
    return cluster, parse_address(match[2], "--cluster-ingress address")


def _cluster_table(items: Sequence[str]) -> dict[int, tuple[str, int]]:
    table: dict[int, tuple[str, int]] = {}
    for item in items:
        cluster, address = parse_cluster_ingress(item)
        if cluster in table:
            raise ConfigError(f"--cluster-ingress: cluster {cluster} listed twice")
        table[cluster] = address
    return table


def from_args(args: argparse.Namespace) -> RelayConfig:
    """Build and check the config; every problem is a one-line ConfigError."""
    if not os.path.isfile(args.keyring):
        raise ConfigError(f"--keyring {args.keyring!r}: no such file")
    listen = tuple(
        parse_address(text, "--listen", allow_port_zero=True)
        for text in (args.listen or [DEFAULT_LISTEN])
    )
    trusted = tuple(parse_network(text) for text in args.trust) if args.trust else LOOPBACK
    if args.flow_cache is not None:
        check_registry_url(args.flow_cache)
    return RelayConfig(
        keyring_path=args.keyring,
        listen=listen,
        internal=parse_address(args.internal, "--internal", allow_port_zero=True),
        cluster=args.cluster,
        cluster_ingress=_cluster_table(args.cluster_ingress or []),
        trusted=trusted,
        workers=args.workers if args.workers is not None else os.cpu_count() or 1,
        pin_cpus=args.pin_cpus,
        max_flows=args.max_flows,
        idle_timeout=args.idle_timeout,
        verify_integrity=args.verify_integrity,
        new_flows_per_prefix=Rate.parse(args.new_flows_per_prefix),
        metrics=(
            parse_address(args.metrics, "--metrics", allow_port_zero=True) if args.metrics else None
        ),
        ready_file=args.ready_file,
        socket_buffer=args.socket_buffer,
        flow_cache=args.flow_cache,
        backbone=(
            parse_address(args.backbone, "--backbone", allow_port_zero=True)
            if args.backbone
            else None
        ),
        backbone_peers=tuple(
            parse_address(text, "--backbone-peer") for text in (args.backbone_peer or [])
        ),
    )
