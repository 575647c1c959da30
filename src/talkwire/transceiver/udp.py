"""The transceiver's one UDP socket, shared by every call.

Datagrams arrive from relays with the encapsulation header; the demux hands
each payload to the session's aioice protocol with the client's real address.
Each session sends through a :class:`RelayedTransport`, which puts the header
back on and sends to the relay that client's packets last came from.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import socket
from collections import Counter
from collections.abc import Sequence
from typing import Any, cast

from talkwire import encap
from talkwire.relay.router import LOOPBACK, Network
from talkwire.transceiver.demux import Address, Delivery, Demux

log = logging.getLogger(__name__)

MAX_CACHED_SOURCES = 1024

# Endpoints are aioice StunProtocols; typed loosely to keep aioice out of the demux.
Receiver = asyncio.DatagramProtocol


class SharedSocket(asyncio.DatagramProtocol):
    def __init__(self, trusted: Sequence[Network] = LOOPBACK) -> None:
        self.demux: Demux[Receiver] = Demux()
        self.transport: asyncio.DatagramTransport | None = None
        self.counters: Counter[str] = Counter()
        self._trusted = tuple(trusted)
        self._trusted_sources: dict[str, bool] = {}  # relays are few: cache the verdict

    @classmethod
    async def bind(
        cls, host: str, port: int, trusted: Sequence[Network] = LOOPBACK
    ) -> SharedSocket:
        loop = asyncio.get_running_loop()
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_DGRAM)
        # Room for bursts of many calls' packets while the loop is busy.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 * 1024 * 1024)
        sock.bind((host, port))
        _, protocol = await loop.create_datagram_endpoint(lambda: cls(trusted), sock=sock)
        return protocol

    @property
    def address(self) -> Address:
        assert self.transport is not None
        host, port = self.transport.get_extra_info("sockname")[:2]
        return host, port

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's UDP transport does not subclass asyncio.DatagramTransport.
        self.transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: tuple[Any, ...]) -> None:
        self.counters["rx_packets"] += 1
        if not self._is_trusted(addr[0]):
            # Only relays may speak here: a client forging the header is ignored.
            self.counters["drop_untrusted_source"] += 1
            return
        routed = self.demux.route(data, (addr[0], addr[1]))
        if not isinstance(routed, Delivery):
            self.counters[f"drop_{routed.value}"] += 1
            return
        routed.endpoint.datagram_received(routed.payload, routed.client)

    def _is_trusted(self, host: str) -> bool:
        verdict = self._trusted_sources.get(host)
        if verdict is None:
            ip = ipaddress.ip_address(host)
            if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
                ip = ip.ipv4_mapped
            verdict = any(ip in network for network in self._trusted)
            if len(self._trusted_sources) < MAX_CACHED_SOURCES:
                self._trusted_sources[host] = verdict
        return verdict

    def error_received(self, exc: Exception) -> None:
        self.counters["socket_errors"] += 1

    def send_to_client(self, data: bytes, client: Address, ingress: int) -> None:
        relay = self.demux.relay_for(client)
        if relay is None or self.transport is None:
            # Only addresses learned through a relay are ever targets: never
            # send to a client directly.
            self.counters["drop_no_relay"] += 1
            return
        self.counters["tx_packets"] += 1
        ingress = self.demux.ingress_for(client, ingress)
        self.transport.sendto(encap.pack_header(client, ingress) + data, relay)

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()


class RelayedTransport(asyncio.DatagramTransport):
    """One session's transport for one relay ingress, over the shared socket."""

    def __init__(
        self,
        shared: SharedSocket,
        ingress: int,
        protocol: asyncio.DatagramProtocol,
    ) -> None:
        super().__init__()
        self._shared = shared
        self._ingress = ingress
        self._protocol = protocol
        self._closing = False

    def sendto(self, data: bytes | bytearray | memoryview, addr: Any = None) -> None:
        if self._closing or addr is None:
            return
        self._shared.send_to_client(bytes(data), (addr[0], addr[1]), self._ingress)

    def is_closing(self) -> bool:
        return self._closing

    def close(self) -> None:
        if self._closing:
            return
        self._closing = True
        # aioice waits for connection_lost before a close completes.
        self._protocol.connection_lost(None)

    def abort(self) -> None:
        self.close()

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        if name == "sockname":
            return self._shared.address
        return default
