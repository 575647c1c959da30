"""talkwire.relay.router: every decision and drop reason, with real codec bytes."""

from __future__ import annotations

import ipaddress
import struct

import aioice.stun
import pytest
from aioice.stun import Class, Method
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from talkwire import route_token
from talkwire.encap import HEADER_SIZE, pack_header, unpack_header
from talkwire.rate_limit import Rate
from talkwire.relay.flows import (
    Address,
    Flow,
    FlowTable,
    StoredFlow,
    client_key,
    flow_header,
)
from talkwire.relay.router import (
    MOVED_HOLD_S,
    VIRTUAL_PER_PEER,
    Drop,
    FlowSource,
    ReturnRoute,
    Router,
    RouterSettings,
    client_prefix,
    decode_peer_flow,
    encode_peer_flow,
)

KEYRING = route_token.Keyring.generate(key_id=1)
TRANSCEIVER = ("127.0.0.1", 5000)
CLIENT = ("192.0.2.10", 40000)
CLUSTER_2_INGRESS = ("127.0.0.2", 6000)
DTLS = bytes([22]) + b"\xfe\xfd" + bytes(40)
RTP = bytes([0x80, 111]) + bytes(30)


def binding_request(
    ufrag: str | None,
    *,
    password: str | None = None,
    method: Method = Method.BINDING,
    message_class: Class = Class.REQUEST,
) -> bytes:
    """A binding request as a client sends it (aioice's encoder): USERNAME '<ufrag>:abcd'."""
    message = aioice.stun.Message(message_method=method, message_class=message_class)
    if ufrag is not None:
        message.attributes["USERNAME"] = f"{ufrag}:abcd"
    message.attributes["PRIORITY"] = 1853824767
    if password is not None:
        message.add_message_integrity(password.encode("ascii"))
    else:
        message.add_fingerprint()
    return bytes(message)


def make_router(
    *,
    capacity: int = 100,
    families: tuple[int, ...] = (4, 6),
    verify_integrity: bool = False,
    store: _DictStore | None = None,
    new_flows_per_prefix: Rate | None = None,
) -> Router:
    settings = RouterSettings(
        keyring=KEYRING,
        cluster=1,
        ingress_families=families,
        internal_family=4,
        cluster_ingress={2: CLUSTER_2_INGRESS},
        verify_integrity=verify_integrity,
        new_flows_per_prefix=new_flows_per_prefix,
    )
    return Router(settings, FlowTable(len(families), capacity=capacity), store)


class _DictStore:
    """A real in-memory FlowStore (the shape the Redis one has)."""

    errors = 0
    overflows = 0

    def __init__(self) -> None:
        self.flows: dict[tuple[Address, int], StoredFlow] = {}

    def record(self, flow: StoredFlow) -> None:
        self.flows[(flow.client, flow.ingress)] = flow

    def lookup(self, client: Address, ingress: int) -> StoredFlow | None:
        return self.flows.get((client, ingress))


def token(cluster: int = 1, address: tuple[str, int] = TRANSCEIVER) -> str:
    return route_token.mint(KEYRING, cluster, address)


def assert_dropped(router: Router, decision: object, reason: Drop) -> None:
    assert decision is reason
    assert router.drops[reason] == 1
    assert sum(router.drops) == 1
    assert len(router.table) == 0


# -- public side: flow creation --------------------------------------------


def test_stun_with_valid_token_creates_a_flow_to_the_token_address() -> None:
    router = make_router()
    flow = router.from_public(binding_request(token()), CLIENT, 0, now=1.0)
    assert isinstance(flow, Flow)
    assert router.table.hop(flow) == TRANSCEIVER
    header = unpack_header(flow_header(flow))
    assert (header.client, header.ingress) == (CLIENT, 0)
    assert router.created[FlowSource.STUN] == 1
    assert sum(router.drops) == 0


@pytest.mark.parametrize("packet", [DTLS, RTP, b"\x00\x01garbage-after-the-flow"])
def test_later_packets_follow_the_flow_without_parsing(packet: bytes) -> None:
    router = make_router()
    created = router.from_public(binding_request(token()), CLIENT, 0, now=1.0)
    assert isinstance(created, Flow)
    assert router.from_public(packet, CLIENT, 0, now=2.0) is created
    assert router.created[FlowSource.STUN] == 1 and sum(router.drops) == 0


def test_a_flow_idle_for_a_generation_is_found_and_made_current() -> None:
    router = make_router()
    created = router.from_public(binding_request(token()), CLIENT, 0, now=0.0)
    router.table.sweep(0.0)
    router.table.sweep(router.table.idle_timeout)  # rotation: the flow is now "previous"
    assert client_key(CLIENT) not in router.table.by_ingress[0]  # the loop's lookup misses...
    assert router.from_new_client(DTLS, CLIENT, 0, now=31.0) == created  # ...this finds it
    assert router.table.by_ingress[0][client_key(CLIENT)] == created
    assert sum(router.drops) == 0 and router.created[FlowSource.STUN] == 1


def test_ipv6_ingress_keys_flows_like_recvfrom() -> None:
    router = make_router()
    client = ("::1", 40000, 0, 0)
    flow = router.from_public(binding_request(token()), client, 1, now=0.0)
    assert isinstance(flow, Flow)
    assert unpack_header(flow_header(flow)).client == ("::1", 40000)
    assert unpack_header(flow_header(flow)).ingress == 1
    assert router.from_public(DTLS, client, 1, now=1.0) is flow


def test_other_cluster_goes_to_that_clusters_ingress() -> None:
    router = make_router()
    flow = router.from_public(binding_request(token(cluster=2)), CLIENT, 0, now=0.0)
    assert isinstance(flow, Flow) and router.table.hop(flow) == CLUSTER_2_INGRESS


def test_integrity_checked_when_enabled() -> None:
    router = make_router(verify_integrity=True)
    ufrag = token()
    password = route_token.ice_password(KEYRING, ufrag)
    assert isinstance(
        router.from_public(binding_request(ufrag, password=password), CLIENT, 0, 0.0), Flow
    )
    other = ("192.0.2.11", 40000)
    wrong = router.from_public(binding_request(ufrag, password="x" * 32), other, 0, 0.0)
    assert wrong is Drop.BAD_INTEGRITY
    unsigned = router.from_public(binding_request(ufrag), other, 0, 0.0)
    assert unsigned is Drop.BAD_INTEGRITY
    assert len(router.table) == 1 and router.drops[Drop.BAD_INTEGRITY] == 2


def test_integrity_not_required_by_default() -> None:
    router = make_router()
    request = binding_request(token(), password="x" * 32)
    assert isinstance(router.from_public(request, CLIENT, 0, 0.0), Flow)


# -- public side: every drop reason ----------------------------------------


def _flip_char(ufrag: str, index: int) -> str:
    replacement = "A" if ufrag[index] != "A" else "B"
    return ufrag[:index] + replacement + ufrag[index + 1 :]


def _with_length(data: bytes, length: int) -> bytes:
    return data[:2] + struct.pack("!H", length) + data[4:]


def _other_keyring_token(key_id: int) -> str:
    return route_token.mint(route_token.Keyring.generate(key_id=key_id), 1, TRANSCEIVER)


DROP_CASES = {
    "empty": (b"", Drop.TOO_SHORT),
    "dtls-unknown-client": (DTLS, Drop.NOT_STUN),
    "rtp-unknown-client": (RTP, Drop.NOT_STUN),
    "stun-range-no-cookie": (b"\x00\x01" + bytes(30), Drop.NOT_BINDING_REQUEST),
    "binding-response": (
        binding_request(token(), message_class=Class.RESPONSE),
        Drop.NOT_BINDING_REQUEST,
    ),
    "binding-indication": (
        binding_request(token(), message_class=Class.INDICATION),
        Drop.NOT_BINDING_REQUEST,
    ),
    "truncated": (binding_request(token())[:-6], Drop.MALFORMED_STUN),
    "length-lies": (
        _with_length(binding_request(token()), len(binding_request(token()))),
        Drop.MALFORMED_STUN,
    ),
    "no-username": (binding_request(None), Drop.NO_USERNAME),
    "username-without-colon": (
        binding_request(token()).replace(b":abcd", b"aabcd"),
        Drop.BAD_USERNAME,
    ),
    "short-ufrag": (binding_request("abcd"), Drop.BAD_TOKEN),
    "unknown-key": (binding_request(_other_keyring_token(key_id=2)), Drop.UNKNOWN_KEY),
    "other-secret": (binding_request(_other_keyring_token(key_id=1)), Drop.BAD_MAC),
    "flipped-mac-char": (binding_request(_flip_char(token(), 31)), Drop.BAD_MAC),
    "flipped-address-char": (binding_request(_flip_char(token(), 6)), Drop.BAD_MAC),
    "unknown-cluster": (binding_request(token(cluster=7)), Drop.UNKNOWN_CLUSTER),
    "ipv6-hop-on-ipv4-internal": (
        binding_request(token(address=("::1", 5000))),
        Drop.WRONG_FAMILY,
    ),
}


@pytest.mark.parametrize(("packet", "reason"), DROP_CASES.values(), ids=DROP_CASES.keys())
def test_public_drops(packet: bytes, reason: Drop) -> None:
    router = make_router()
    assert_dropped(router, router.from_public(packet, CLIENT, 0, now=0.0), reason)


def test_new_flows_per_prefix_are_limited_and_live_flows_keep_going() -> None:
    router = make_router(new_flows_per_prefix=Rate(per_s=1.0, burst=2))
    request = binding_request(token())
    flood = [(f"198.51.100.{i}", 5000) for i in range(1, 6)]
    decisions = [router.from_public(request, client, 0, 0.0) for client in flood]
    assert [isinstance(d, Flow) for d in decisions] == [True, True, False, False, False]
    assert router.drops[Drop.RATE_LIMITED] == 3
    assert isinstance(router.from_public(request, ("198.51.101.1", 5000), 0, 0.0), Flow)
    for client in flood[:2]:  # flows made before the limit bit still forward
        assert isinstance(router.from_public(DTLS, client, 0, 0.0), Flow)
    # Forgeries from the prefix spend nothing: a second later one real client gets in.
    forged = binding_request(token()[:-1] + ("A" if token()[-1] != "A" else "B"))
    assert router.from_public(forged, ("198.51.100.9", 5000), 0, 1.0) is Drop.BAD_MAC
    assert isinstance(router.from_public(request, ("198.51.100.9", 5000), 0, 1.0), Flow)
    assert router.from_public(request, ("198.51.100.10", 5000), 0, 1.0) is Drop.RATE_LIMITED
    assert len(router.table) == 4


def test_client_prefix_is_the_slash_24_or_slash_64() -> None:
    assert client_prefix("198.51.100.7") == client_prefix("198.51.100.250")
    assert client_prefix("198.51.100.7") != client_prefix("198.51.101.7")
    assert client_prefix("2001:db8:1:2::1") == client_prefix("2001:db8:1:2:ffff::9")
    assert client_prefix("2001:db8:1:2::1") != client_prefix("2001:db8:1:3::1")


def test_full_table_refuses_the_next_client_only() -> None:
    router = make_router(capacity=2)
    first = router.from_public(binding_request(token()), ("192.0.2.1", 1), 0, 0.0)
    second = router.from_public(binding_request(token()), ("192.0.2.2", 2), 0, 0.0)
    third = router.from_public(binding_request(token()), ("192.0.2.3", 3), 0, 0.0)
    assert isinstance(first, Flow) and isinstance(second, Flow)
    assert third is Drop.TABLE_FULL and router.drops[Drop.TABLE_FULL] == 1
    assert router.from_public(DTLS, ("192.0.2.1", 1), 0, 1.0) is first
    assert router.from_public(DTLS, ("192.0.2.2", 2), 0, 1.0) is second


# -- internal side ----------------------------------------------------------


def test_return_packet_routes_to_client_and_creates_the_flow() -> None:
    router = make_router()
    packet = pack_header(CLIENT, 0) + DTLS
    route = router.from_internal(packet, TRANSCEIVER, now=3.0)
    assert route == ReturnRoute(0, CLIENT)
    assert router.created[FlowSource.RETURN] == 1
    # The client's next packet now follows without any STUN (restart recovery).
    flow = router.from_public(DTLS, CLIENT, 0, now=4.0)
    assert isinstance(flow, Flow) and router.table.hop(flow) == TRANSCEIVER
    assert router.announcements == [encode_peer_flow(flow_header(flow), TRANSCEIVER)]


def test_return_packet_retargets_and_only_announces_changes() -> None:
    router = make_router()
    router.from_public(binding_request(token()), CLIENT, 0, 0.0)
    packet = pack_header(CLIENT, 0) + DTLS
    assert router.from_internal(packet, TRANSCEIVER, 1.0) == ReturnRoute(0, CLIENT)
    assert router.announcements == []  # flow already pointed there
    moved = ("127.0.0.3", 5001)
    assert router.from_internal(packet, moved, 2.0) == ReturnRoute(0, CLIENT)
    flow = router.table.get(CLIENT, 0)
    assert flow is not None and router.table.hop(flow) == moved
    assert len(router.announcements) == 1
    # The cached-header fast path must notice the flow points elsewhere now.
    assert router.from_internal(packet, TRANSCEIVER, 3.0) == ReturnRoute(0, CLIENT)
    flow = router.table.get(CLIENT, 0)
    assert flow is not None and router.table.hop(flow) == TRANSCEIVER
    assert len(router.announcements) == 2
    assert router.created[FlowSource.RETURN] == 0


def test_return_packet_recreates_a_flow_that_expired() -> None:
    router = make_router()
    packet = pack_header(CLIENT, 0) + DTLS
    assert router.from_internal(packet, TRANSCEIVER, 0.0) == ReturnRoute(0, CLIENT)
    assert router.table.remove(CLIENT, 0)  # as an idle sweep would
    # Same header bytes again (the decoded-header cache must not hide the loss).
    assert router.from_internal(packet, TRANSCEIVER, 1.0) == ReturnRoute(0, CLIENT)
    assert router.table.get(CLIENT, 0) is not None
    assert router.created[FlowSource.RETURN] == 2
    assert len(router.announcements) == 2


def test_cached_header_still_checks_trust() -> None:
    router = make_router()
    packet = pack_header(CLIENT, 0) + DTLS
    router.from_internal(packet, TRANSCEIVER, 0.0)
    assert router.from_internal(packet, ("10.0.0.5", 5000), 1.0) is Drop.UNTRUSTED_SOURCE


def test_return_packet_to_ipv6_client() -> None:
    router = make_router()
    route = router.from_internal(pack_header(("::1", 4000), 1) + RTP, TRANSCEIVER, 0.0)
    assert route == ReturnRoute(1, ("::1", 4000, 0, 0))


def test_return_packet_still_delivered_when_table_full() -> None:
    router = make_router(capacity=1)
    router.from_public(binding_request(token()), ("192.0.2.1", 1), 0, 0.0)
    route = router.from_internal(pack_header(CLIENT, 0) + RTP, TRANSCEIVER, 0.0)
    assert route == ReturnRoute(0, CLIENT)
    assert router.table.get(CLIENT, 0) is None and router.announcements == []


INTERNAL_DROPS = {
    "untrusted-source": (pack_header(CLIENT, 0) + DTLS, ("10.0.0.5", 5000), Drop.UNTRUSTED_SOURCE),
    "untrusted-v6": (
        pack_header(CLIENT, 0) + DTLS,
        ("2001:db8::1", 5000, 0, 0),
        Drop.UNTRUSTED_SOURCE,
    ),
    "short": (pack_header(CLIENT, 0)[:20], TRANSCEIVER, Drop.TOO_SHORT),
    "garbage": (bytes(range(40)), TRANSCEIVER, Drop.BAD_HEADER),
    "client-port-0": (
        pack_header(CLIENT, 0)[:4] + b"\0\0" + pack_header(CLIENT, 0)[6:],
        TRANSCEIVER,
        Drop.BAD_HEADER,
    ),
    "v6-client-on-v4-ingress": (pack_header(("::1", 4000), 0) + DTLS, TRANSCEIVER, Drop.BAD_HEADER),
    "v4-client-on-v6-ingress": (pack_header(CLIENT, 1) + DTLS, TRANSCEIVER, Drop.BAD_HEADER),
    "unknown-ingress": (pack_header(CLIENT, 2) + DTLS, TRANSCEIVER, Drop.UNKNOWN_INGRESS),
}


@pytest.mark.parametrize(
    ("packet", "source", "reason"), INTERNAL_DROPS.values(), ids=INTERNAL_DROPS.keys()
)
def test_internal_drops(packet: bytes, source: Address, reason: Drop) -> None:
    router = make_router()
    assert_dropped(router, router.from_internal(packet, source, now=0.0), reason)
    assert router.announcements == []


def test_trusted_networks_are_configurable() -> None:
    settings = RouterSettings(
        keyring=KEYRING,
        cluster=1,
        ingress_families=(4,),
        trusted=(ipaddress.ip_network("10.0.0.0/8"),),
    )
    router = Router(settings, FlowTable(1))
    packet = pack_header(CLIENT, 0) + DTLS
    assert router.from_internal(packet, TRANSCEIVER, 0.0) is Drop.UNTRUSTED_SOURCE
    assert router.from_internal(packet, ("10.1.2.3", 5000), 0.0) == ReturnRoute(0, CLIENT)


# -- sibling workers and the shared store -----------------------------------


def test_peer_announcement_round_trip() -> None:
    source = make_router()
    source.from_internal(pack_header(CLIENT, 0) + DTLS, TRANSCEIVER, 0.0)
    (message,) = source.announcements
    decoded = decode_peer_flow(message)
    assert decoded is not None and decoded[1] == TRANSCEIVER
    sibling = make_router()
    assert sibling.learn_from_peer(message, 1.0)
    flow = sibling.from_public(RTP, CLIENT, 0, 2.0)
    assert isinstance(flow, Flow) and sibling.table.hop(flow) == TRANSCEIVER
    assert sibling.created[FlowSource.PEER] == 1
    assert sibling.announcements == []  # never re-announced


@pytest.mark.parametrize(
    "message",
    [b"", b"x" * 42, pack_header(CLIENT, 0) + b"\x7f\0\0\x01", pack_header(CLIENT, 9) + bytes(6)],
)
def test_bad_peer_announcement_is_ignored(message: bytes) -> None:
    router = make_router()
    assert not router.learn_from_peer(message, 0.0)
    assert len(router.table) == 0


def test_store_records_created_flows_and_resolves_misses() -> None:
    store = _DictStore()
    writer = make_router(store=store)
    writer.from_public(binding_request(token()), CLIENT, 0, 0.0)
    assert store.flows[(CLIENT, 0)] == StoredFlow(CLIENT, 0, TRANSCEIVER)
    reader = make_router(store=store)  # e.g. another relay, or this one restarted
    flow = reader.from_public(DTLS, CLIENT, 0, 1.0)
    assert isinstance(flow, Flow) and reader.table.hop(flow) == TRANSCEIVER
    assert reader.created[FlowSource.STORE] == 1


# -- nothing escapes, nothing is created from garbage -----------------------

FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
_VALID = binding_request(token())


@FUZZ
@given(st.binary(max_size=200))
def test_fuzz_public_random(data: bytes) -> None:
    router = make_router()
    assert isinstance(router.from_public(data, CLIENT, 0, 0.0), Drop)
    assert len(router.table) == 0


@FUZZ
@given(st.integers(0, len(_VALID) - 1), st.integers(1, 255))
def test_fuzz_public_one_byte_changed_in_a_valid_request(index: int, xor: int) -> None:
    data = bytearray(_VALID)
    data[index] ^= xor
    router = make_router()
    decision = router.from_public(bytes(data), CLIENT, 0, 0.0)
    # A change outside the USERNAME may still verify; inside it never may.
    if isinstance(decision, Flow):
        assert router.table.hop(decision) == TRANSCEIVER
    else:
        assert len(router.table) == 0


@FUZZ
@given(st.binary(max_size=80), st.booleans())
def test_fuzz_internal(data: bytes, with_magic: bool) -> None:
    router = make_router()
    if with_magic:
        data = b"TW\x01\x00" + data
    decision = router.from_internal(data, TRANSCEIVER, 0.0)
    if isinstance(decision, ReturnRoute):
        assert len(data) >= HEADER_SIZE and decision.ingress < 2
    else:
        assert len(router.table) == 0


def test_a_new_call_from_a_reused_client_address_is_re_targeted_by_its_stun() -> None:
    router = make_router()
    first = router.from_public(binding_request(token()), CLIENT, 0, 0.0)
    assert isinstance(first, bytes)
    # The same call's consent checks, and junk that merely looks like STUN, keep the flow.
    for packet in (binding_request(token()), binding_request("x" * 32), b"\x00\x01junk"):
        assert router.from_known_stun(packet, CLIENT, 0, first, 0.0) is first
    # A new call from the same address (NAT or OS port reuse) names another transceiver.
    elsewhere = ("127.0.0.1", 5001)
    moved = router.from_known_stun(binding_request(token(address=elsewhere)), CLIENT, 0, first, 0.0)
    assert moved != first
    assert router.table.hops[int.from_bytes(moved[:2], "big")] == elsewhere
    assert router.from_public(DTLS, CLIENT, 0, 0.0) == moved  # its media follows
    assert router.created[FlowSource.STUN] == 2
    # The old transceiver still sends until its call times out: dropped, the flow stays moved.
    stale = router.from_internal(pack_header(CLIENT, 0) + RTP, TRANSCEIVER, 1.0)
    assert stale is Drop.STALE_HOP and router.drops[Drop.STALE_HOP] == 1
    assert router.from_public(DTLS, CLIENT, 0, 1.0) == moved
    # Once the hold is over, return traffic may re-target as it always could (a relay restart).
    later = router.from_internal(pack_header(CLIENT, 0) + RTP, TRANSCEIVER, 1.0 + MOVED_HOLD_S)
    assert not isinstance(later, Drop)


GLOBAL_RELAY = ("10.9.0.1", 3479)  # a global relay's internal address: a backbone peer


def backbone_router() -> Router:
    settings = RouterSettings(
        keyring=KEYRING,
        cluster=1,
        ingress_families=(4,),
        internal_family=4,
        backbone_peers=(("10.9.0.9", 3479), GLOBAL_RELAY),
    )
    return Router(settings, FlowTable(1 + 2 * VIRTUAL_PER_PEER, capacity=10, idle_timeout=30))


def test_a_client_a_global_relay_forwards_gets_a_virtual_ingress_that_leads_replies_back() -> None:
    router = backbone_router()
    check = binding_request(route_token.mint(KEYRING, 1, TRANSCEIVER))
    # The global relay's socket 3 received it; peer 1's block starts at 1 + 16.
    forwarded = pack_header(CLIENT, 3) + check
    decision = router.from_backbone(forwarded, (GLOBAL_RELAY[0], 40001), 0.0)
    assert not isinstance(decision, Drop)
    flow, ingress = decision
    assert ingress == 1 + VIRTUAL_PER_PEER + 3
    assert unpack_header(flow_header(flow)) == unpack_header(pack_header(CLIENT, ingress))
    assert router.created[FlowSource.STUN] == 1
    # Media follows the flow; the transceiver's reply names the virtual ingress ...
    media = router.from_backbone(pack_header(CLIENT, 3) + RTP, (GLOBAL_RELAY[0], 40002), 1.0)
    assert media == (flow, ingress)
    route = router.from_internal(pack_header(CLIENT, ingress) + b"\x17reply", TRANSCEIVER, 1.0)
    assert route == ReturnRoute(ingress, CLIENT)
    # ... which names the global relay and its own socket to send from.
    assert router.backbone_route(ingress) == (GLOBAL_RELAY, 3)
    assert router.public_count == 1


@pytest.mark.parametrize(
    ("datagram", "source", "drop"),
    [
        (pack_header(CLIENT, 0) + RTP, ("10.9.0.77", 3479), Drop.UNTRUSTED_SOURCE),
        (pack_header(CLIENT, VIRTUAL_PER_PEER) + RTP, GLOBAL_RELAY, Drop.UNKNOWN_INGRESS),
        (b"TW\x01\x00" + bytes(30), GLOBAL_RELAY, Drop.BAD_HEADER),
        (pack_header(CLIENT, 0), GLOBAL_RELAY, Drop.TOO_SHORT),
        (pack_header(CLIENT, 0) + RTP, GLOBAL_RELAY, Drop.NOT_STUN),  # no flow yet
    ],
)
def test_backbone_datagrams_that_route_nowhere_are_dropped_and_counted(
    datagram: bytes, source: Address, drop: Drop
) -> None:
    router = backbone_router()
    assert router.from_backbone(datagram, source, 0.0) == drop
    assert router.drops[drop] == 1
    assert router.created == [0] * len(FlowSource)


def test_a_table_without_room_for_the_peers_blocks_is_refused() -> None:
    settings = RouterSettings(
        keyring=KEYRING, cluster=1, ingress_families=(4,), backbone_peers=(GLOBAL_RELAY,)
    )
    with pytest.raises(ValueError, match="number of ingresses"):
        Router(settings, FlowTable(1, capacity=10, idle_timeout=30))
