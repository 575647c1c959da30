"""Demultiplexing of the transceiver's one UDP socket (sans-IO).

Every datagram arrives from a relay with the encapsulation header. A STUN
binding request is routed by the server ufrag in its USERNAME (which is how a
session claims a client address); everything else by the client address the
header names. This is pion's UDPMux idea with the relay's header supplying
the real client address.

It also keeps the transceiver from answering strangers. aioice answers every
STUN request it is handed, with an error if need be (400 for another method,
401 for a wrong MESSAGE-INTEGRITY): each answer would leave through the relay
to whatever source address the request claimed. So a binding request reaches
aioice only once its MESSAGE-INTEGRITY verifies with the session's password,
and other requests never do; only the real client, who holds the password from
the answer SDP, gets a reply.
"""

from __future__ import annotations

import enum
from collections import Counter
from dataclasses import dataclass
from typing import Generic, TypeVar

from talkwire import encap, stun
from talkwire.errors import EncapError, StunError

Endpoint = TypeVar("Endpoint")

Address = tuple[str, int]


class Drop(enum.Enum):
    BAD_HEADER = "bad_header"
    UNKNOWN_UFRAG = "unknown_ufrag"
    UNKNOWN_CLIENT = "unknown_client"
    MALFORMED_STUN = "malformed_stun"
    UNKNOWN_INGRESS = "unknown_ingress"
    BAD_INTEGRITY = "bad_integrity"
    NOT_BINDING_REQUEST = "not_binding_request"


@dataclass(frozen=True, slots=True)
class Delivery(Generic[Endpoint]):
    endpoint: Endpoint
    client: Address
    payload: bytes


class Demux(Generic[Endpoint]):
    """Maps server ufrags and client addresses to session endpoints.

    An endpoint is whatever the I/O layer delivers to (a per-session virtual
    transport); the demux only needs to know, per ufrag, the endpoint for each
    relay ingress index.
    """

    def __init__(self) -> None:
        # Server ufrag -> (ICE password, endpoint per relay ingress index).
        self._sessions: dict[bytes, tuple[str, dict[int, Endpoint]]] = {}
        self._by_client: dict[Address, tuple[bytes, Endpoint]] = {}
        self._clients_of: dict[bytes, set[Address]] = {}
        # Where a client's packets last came from: replies go back the same way,
        # so a restarted or replaced relay is followed without signalling.
        self._relay_of: dict[Address, Address] = {}
        # Clients that reached the relay through a global relay carry a virtual
        # ingress (past the relay's own sockets); replies must name it again.
        self._virtual_ingress_of: dict[Address, int] = {}
        self.drops: Counter[Drop] = Counter()

    def register(self, ufrag: str, password: str, endpoints: dict[int, Endpoint]) -> None:
        """A session's server ufrag, its ICE password, and its endpoint per ingress."""
        key = ufrag.encode("ascii")
        self._sessions[key] = (password, endpoints)
        self._clients_of.setdefault(key, set())

    def unregister(self, ufrag: str) -> None:
        key = ufrag.encode("ascii")
        self._sessions.pop(key, None)
        for client in self._clients_of.pop(key, set()):
            self._by_client.pop(client, None)
            self._relay_of.pop(client, None)
            self._virtual_ingress_of.pop(client, None)

    @property
    def sessions(self) -> int:
        return len(self._sessions)

    @property
    def clients(self) -> int:
        return len(self._by_client)

    def relay_for(self, client: Address) -> Address | None:
        return self._relay_of.get(client)

    def ingress_for(self, client: Address, ingress: int) -> int:
        """The ingress a reply to ``client`` names: its virtual one if it came
        through a global relay, else the session endpoint's own."""
        return self._virtual_ingress_of.get(client, ingress)

    def route(self, datagram: bytes, relay: Address) -> Delivery[Endpoint] | Drop:
        try:
            header = encap.unpack_header(datagram)
        except EncapError:
            return self._drop(Drop.BAD_HEADER)
        payload = datagram[encap.HEADER_SIZE :]
        client = header.client
        endpoint = None
        if payload and stun.classify(payload[0]) is stun.PacketKind.STUN:
            try:
                username = stun.binding_request_username(payload)
                if username is not None:
                    server_ufrag, _ = stun.split_username(username)
                    session = self._sessions.get(server_ufrag)
                    if session is None:
                        return self._drop(Drop.UNKNOWN_UFRAG)
                    password, endpoints = session
                    if not stun.verify_message_integrity(payload, password):
                        return self._drop(Drop.BAD_INTEGRITY)
                    endpoint = endpoints.get(header.ingress)
                    if endpoint is None and header.ingress >= len(endpoints) and endpoints:
                        # Past the relay's own sockets: a global relay's, whose
                        # relay forwarded the client here. ICE runs on the first
                        # endpoint; replies carry the virtual ingress back.
                        endpoint = endpoints[0]
                        self._virtual_ingress_of[client] = header.ingress
                    elif endpoint is None:
                        return self._drop(Drop.UNKNOWN_INGRESS)
                    else:
                        self._virtual_ingress_of.pop(client, None)
                    self._claim(server_ufrag, endpoint, client)
                elif stun.is_request(payload):
                    return self._drop(Drop.NOT_BINDING_REQUEST)
            except StunError:
                return self._drop(Drop.MALFORMED_STUN)
        if endpoint is None:
            claimed = self._by_client.get(client)
            if claimed is None:
                return self._drop(Drop.UNKNOWN_CLIENT)
            endpoint = claimed[1]
        self._relay_of[client] = relay
        return Delivery(endpoint, client, payload)

    def _claim(self, server_ufrag: bytes, endpoint: Endpoint, client: Address) -> None:
        previous = self._by_client.get(client)
        if previous is None or previous[1] is not endpoint:
            if previous is not None:
                # A client address reused by a new session moves to that session.
                self._clients_of.get(previous[0], set()).discard(client)
            self._by_client[client] = (server_ufrag, endpoint)
            self._clients_of[server_ufrag].add(client)

    def _drop(self, reason: Drop) -> Drop:
        self.drops[reason] += 1
        return reason
