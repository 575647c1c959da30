"""Binding an aioice connection to the relay path.

aiortc creates one ``aioice.Connection`` per transport and lets it gather
host candidates on fresh sockets. For a talkwire call we instead:

- set the minted route token as the local ufrag and its derived password;
- give it one candidate per relay public address, each backed by a virtual
  transport on the shared socket, registered with the demux during gathering
  (so before the answer leaves: the first check can beat the HTTP response);
- replace aioice's 20 ms check-list polling with waiting on the outcome: the
  client's candidates are stripped, so every check we make is triggered by one
  of its requests and starts immediately inside aioice already.
"""

from __future__ import annotations

import asyncio
import types
from collections.abc import Callable
from dataclasses import dataclass, field

from aioice import Candidate, Connection
from aioice.candidate import candidate_foundation, candidate_priority
from aioice.ice import ICE_COMPLETED, StunProtocol

from talkwire.transceiver.demux import Address
from talkwire.transceiver.udp import RelayedTransport, SharedSocket


@dataclass
class RelayBinding:
    ufrag: str
    password: str
    public_addresses: list[Address]  # index = relay ingress index
    shared: SharedSocket
    transports: list[RelayedTransport] = field(default_factory=list)

    def release(self) -> None:
        self.shared.demux.unregister(self.ufrag)
        for transport in self.transports:
            transport.close()


def bind_connection(connection: Connection, binding: RelayBinding) -> None:
    """Make `connection` use the route token and the relay; call before gathering."""
    # aioice validates these in its constructor only; ours are ice-chars of valid length.
    connection._local_username = binding.ufrag
    connection._local_password = binding.password
    connection.get_component_candidates = types.MethodType(  # type: ignore[method-assign]
        _relay_candidates(binding), connection
    )
    connection.connect = types.MethodType(_connect_on_events, connection)  # type: ignore[method-assign]


def _relay_candidates(
    binding: RelayBinding,
) -> Callable[..., object]:
    async def get_component_candidates(
        self: Connection,
        component: int,
        addresses: list[str],
        timeout: int = 5,
    ) -> list[Candidate]:
        candidates: list[Candidate] = []
        endpoints: dict[int, asyncio.DatagramProtocol] = {}
        for ingress, (host, port) in enumerate(binding.public_addresses):
            protocol = StunProtocol(self)
            transport = RelayedTransport(binding.shared, ingress, protocol)
            binding.transports.append(transport)
            protocol.connection_made(transport)
            protocol.local_candidate = Candidate(
                foundation=candidate_foundation("host", "udp", host),
                component=component,
                transport="udp",
                priority=candidate_priority(component, "host"),
                host=host,
                port=port,
                type="host",
            )
            self._protocols.append(protocol)
            candidates.append(protocol.local_candidate)
            endpoints[ingress] = protocol
        binding.shared.demux.register(binding.ufrag, binding.password, endpoints)
        return candidates

    return get_component_candidates


async def _connect_on_events(self: Connection) -> None:
    if not self._local_candidates_end:
        raise ConnectionError("Local candidates gathering was not performed")
    if self.remote_username is None or self.remote_password is None:
        raise ConnectionError("Remote username or password is missing")

    for remote_candidate in self._remote_candidates:
        self._pair_remote_candidate(remote_candidate)
    self.sort_check_list()
    self._unfreeze_initial()
    for early_check in self._early_checks:
        self.check_incoming(*early_check)
    self._early_checks.clear()
    self._early_checks_done = True
    # Pairs formed from signalled candidates (none, unless a caller kept them)
    # still need starting; triggered checks start themselves in check_incoming.
    for pair in self._check_list:
        self.check_start_task(pair)

    result = await self._check_list_state.get()
    for pair in self._check_list:
        if pair.task:
            pair.task.cancel()
    if result != ICE_COMPLETED:
        raise ConnectionError("ICE negotiation failed")
    self._query_consent_task = asyncio.create_task(self.query_consent())
