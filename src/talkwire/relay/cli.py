"""``talkwire relay``: the public UDP relay (client <-> transceiver)."""

from __future__ import annotations

import argparse
import logging
import os

from talkwire.relay import config as relay_config
from talkwire.relay.flows import DEFAULT_CAPACITY, DEFAULT_IDLE_TIMEOUT
from talkwire.relay.server import serve


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.epilog = "Every flag is described in docs/relay.md."
    add = parser.add_argument
    add(
        "--listen",
        action="append",
        metavar="HOST:PORT",
        help="public UDP address, repeatable; IPv6 as [addr]:port; port 0 picks one "
        f"(default {relay_config.DEFAULT_LISTEN})",
    )
    add(
        "--internal",
        default=relay_config.DEFAULT_INTERNAL,
        metavar="HOST:PORT",
        help="transceiver-facing address; worker i binds PORT+i, port 0 = ephemeral "
        "(default %(default)s)",
    )
    add("--keyring", required=True, metavar="FILE", help="route-token keyring file")
    add("--cluster", type=int, default=0, metavar="N", help="this relay's cluster id (default 0)")
    add(
        "--cluster-ingress",
        action="append",
        metavar="N=HOST:PORT",
        help="where tokens of another cluster N are forwarded, repeatable",
    )
    add(
        "--backbone",
        metavar="HOST:PORT",
        help="receive clients that global relays forward here (their --cluster-ingress)",
    )
    add(
        "--backbone-peer",
        action="append",
        metavar="HOST:PORT",
        help="a global relay's --internal address: the only senders --backbone accepts, "
        "and where their clients' replies go; repeatable",
    )
    add(
        "--trust",
        action="append",
        metavar="CIDR",
        help="network allowed to send return traffic, repeatable (default 127.0.0.0/8 and ::1/128)",
    )
    add(
        "--workers",
        type=int,
        default=None,
        metavar="N",
        help=f"worker processes sharing the ports (default: cores, {os.cpu_count()})",
    )
    add("--pin-cpus", action="store_true", help="pin worker i to the i-th allowed CPU")
    add(
        "--max-flows",
        type=int,
        default=DEFAULT_CAPACITY,
        metavar="N",
        help="flow table capacity per worker; new flows beyond it are refused "
        "(default %(default)s)",
    )
    add(
        "--idle-timeout",
        type=float,
        default=DEFAULT_IDLE_TIMEOUT,
        metavar="S",
        help="seconds without a packet before a flow expires (default %(default)s)",
    )
    add(
        "--verify-integrity",
        action="store_true",
        help="check the first binding request's MESSAGE-INTEGRITY before creating a flow",
    )
    add(
        "--new-flows-per-prefix",
        default=relay_config.DEFAULT_NEW_FLOWS_PER_PREFIX,
        metavar="PER_S[/BURST]",
        help="new flows per second (and burst) per worker from one client /24 or /64, "
        "or 'off' (default %(default)s)",
    )
    add(
        "--flow-cache",
        metavar="URL",
        help="share flows in Redis (redis://HOST:PORT/DB): a restarted relay resumes a client's"
        " media from its first packets, before its next STUN check (default off)",
    )
    add("--metrics", metavar="HOST:PORT", help="serve /metrics and /healthz here (default off)")
    add("--ready-file", metavar="PATH", help="write the bound addresses here once ready")
    add(
        "--socket-buffer",
        type=int,
        default=0,
        metavar="BYTES",
        help="SO_RCVBUF/SO_SNDBUF for every socket (default: system default)",
    )


def run(args: argparse.Namespace) -> int:
    config = relay_config.from_args(args)
    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    return serve(config)
