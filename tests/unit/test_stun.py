"""talkwire.stun: RFC 5769 vectors, malformed input, RFC 7983 demux, fuzzing."""

from __future__ import annotations

import struct
from collections.abc import Callable
from pathlib import Path

import aioice.stun
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from talkwire import route_token, stun
from talkwire.errors import StunError

VECTORS = Path(__file__).resolve().parent.parent / "vectors"
RFC5769_PASSWORD = "VOkJxbRl1RmTxUk/WvJxBt"
REQUEST = (VECTORS / "rfc5769-2.1-request.bin").read_bytes()
RESPONSE_V4 = (VECTORS / "rfc5769-2.2-ipv4-response.bin").read_bytes()
RESPONSE_V6 = (VECTORS / "rfc5769-2.3-ipv6-response.bin").read_bytes()
ALL_VECTORS = [REQUEST, RESPONSE_V4, RESPONSE_V6]
# Offsets inside the RFC 5769 §2.1 request (see tests/vectors/README.md).
REQUEST_MI = 76  # MESSAGE-INTEGRITY attribute header
REQUEST_FP = 100  # FINGERPRINT attribute header

FUZZ = settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def message(msg_type: int, attrs: list[tuple[int, bytes]], *, length: int | None = None) -> bytes:
    """A STUN message built by hand, so that tests can make it wrong on purpose."""
    body = b"".join(struct.pack("!HH", t, len(v)) + v + bytes(-len(v) % 4) for t, v in attrs)
    size = len(body) if length is None else length
    return struct.pack("!HHI12s", msg_type, size, stun.MAGIC_COOKIE, b"t" * 12) + body


def with_length(data: bytes, length: int) -> bytes:
    return data[:2] + struct.pack("!H", length) + data[4:]


def outcome_of(fn: Callable[..., object], *args: object) -> object:
    """The result, or the StunError class if that is what was raised (nothing else is caught)."""
    try:
        return fn(*args)
    except StunError:
        return StunError


# --- RFC 5769 vectors -------------------------------------------------------


def test_vectors_have_the_published_sizes() -> None:
    assert [len(v) for v in ALL_VECTORS] == [108, 80, 92]


@pytest.mark.parametrize("kind", [bytes, bytearray, memoryview])
def test_rfc5769_request_username(kind: type) -> None:
    assert stun.binding_request_username(kind(REQUEST)) == b"evtj:h6vY"


@pytest.mark.parametrize("kind", [bytes, bytearray, memoryview])
def test_rfc5769_request_integrity(kind: type) -> None:
    assert stun.verify_message_integrity(kind(REQUEST), RFC5769_PASSWORD) is True
    assert stun.verify_message_integrity(kind(REQUEST), "VOkJxbRl1RmTxUk/WvJxBu") is False
    assert stun.verify_message_integrity(kind(REQUEST), "") is False


@pytest.mark.parametrize("vector", [RESPONSE_V4, RESPONSE_V6], ids=["2.2", "2.3"])
def test_rfc5769_responses_are_not_binding_requests(vector: bytes) -> None:
    assert stun.binding_request_username(vector) is None


@pytest.mark.parametrize("vector", [RESPONSE_V4, RESPONSE_V6], ids=["2.2", "2.3"])
def test_rfc5769_responses_integrity(vector: bytes) -> None:
    # The integrity check is class-agnostic: the transceiver also checks responses.
    assert stun.verify_message_integrity(vector, RFC5769_PASSWORD) is True
    assert stun.verify_message_integrity(vector, "wrong") is False


def test_rfc5769_parse_message_through_wrapper() -> None:
    msg = stun.parse_message(REQUEST)
    assert msg.message_method == aioice.stun.Method.BINDING
    assert msg.message_class == aioice.stun.Class.REQUEST
    assert msg.attributes["USERNAME"] == "evtj:h6vY"
    assert msg.attributes["SOFTWARE"] == "STUN test client"
    assert msg.check_message_integrity(RFC5769_PASSWORD.encode())
    v4 = stun.parse_message(RESPONSE_V4)
    assert v4.attributes["XOR-MAPPED-ADDRESS"] == ("192.0.2.1", 32853)
    v6 = stun.parse_message(RESPONSE_V6)
    assert v6.attributes["XOR-MAPPED-ADDRESS"] == ("2001:db8:1234:5678:11:2233:4455:6677", 32853)


def test_integrity_without_fingerprint_still_verifies() -> None:
    # The MAC covers the message up to MESSAGE-INTEGRITY, whatever follows it.
    stripped = with_length(REQUEST[:REQUEST_FP], REQUEST_FP - 20)
    assert stun.verify_message_integrity(stripped, RFC5769_PASSWORD) is True


def test_integrity_ignores_unauthenticated_attributes_after_it() -> None:
    # An attribute between MESSAGE-INTEGRITY and FINGERPRINT is not covered and
    # must not change the result (RFC 8489 §14.5). No FINGERPRINT here.
    extra = struct.pack("!HH", 0x8022, 4) + b"evil"
    data = REQUEST[:REQUEST_FP] + extra
    data = with_length(data, len(data) - 20)
    assert stun.verify_message_integrity(data, RFC5769_PASSWORD) is True


def test_integrity_absent_is_false() -> None:
    data = message(0x0001, [(0x0006, b"abcd:efgh")])
    assert stun.verify_message_integrity(data, "pwd") is False


def test_bad_fingerprint_fails_integrity() -> None:
    tampered = bytearray(REQUEST)
    tampered[-1] ^= 0x01
    assert stun.verify_message_integrity(tampered, RFC5769_PASSWORD) is False


def test_every_covered_byte_flip_is_detected() -> None:
    # Flip each byte the MAC covers (except the length field, which only makes it
    # malformed): the check must fail, or the structure break; never pass.
    for i in [*range(0, 2), *range(4, REQUEST_MI), *range(REQUEST_MI + 4, REQUEST_FP)]:
        tampered = bytearray(REQUEST)
        tampered[i] ^= 0x40
        outcome = outcome_of(stun.verify_message_integrity, tampered, RFC5769_PASSWORD)
        assert outcome in (False, StunError), i


def test_integrity_matches_aioice_built_request() -> None:
    msg = aioice.stun.Message(aioice.stun.Method.BINDING, aioice.stun.Class.REQUEST)
    msg.attributes["USERNAME"] = "serv:clnt"
    msg.attributes["PRIORITY"] = 1853824767
    msg.attributes["ICE-CONTROLLING"] = 0x1122334455667788
    msg.attributes["USE-CANDIDATE"] = None
    msg.add_message_integrity(b"a-password-of-some-length")
    data = bytes(msg)
    assert stun.binding_request_username(data) == b"serv:clnt"
    assert stun.verify_message_integrity(data, "a-password-of-some-length") is True
    assert stun.verify_message_integrity(data, "another-password") is False


def test_relay_first_packet_path_with_route_token() -> None:
    """The relay's sequence: username -> split -> verify token -> derive pwd -> check MAC."""
    keyring = route_token.Keyring.generate(3)
    ufrag = route_token.mint(keyring, 9, ("10.0.0.7", 5000))
    pwd = route_token.ice_password(keyring, ufrag)
    msg = aioice.stun.Message(aioice.stun.Method.BINDING, aioice.stun.Class.REQUEST)
    msg.attributes["USERNAME"] = f"{ufrag}:Ab+/"
    msg.add_message_integrity(pwd.encode())
    data = bytes(msg)

    username = stun.binding_request_username(data)
    assert username is not None
    server, client = stun.split_username(username)
    assert client == b"Ab+/"
    token = route_token.verify(keyring, server)
    assert token.address == ("10.0.0.7", 5000)
    assert stun.verify_message_integrity(data, route_token.ice_password(keyring, server))
    other = route_token.ice_password(keyring, route_token.mint(keyring, 9, ("10.0.0.7", 5000)))
    assert not stun.verify_message_integrity(data, other)


# --- not mine / malformed ---------------------------------------------------


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"\x00\x01",
        REQUEST[:19],
        b"\x16\xfe\xfd" + bytes(40),  # DTLS record
        b"\x80\x00" + bytes(30),  # RTP
        b"\x40\x00\x00\x04abcd",  # TURN ChannelData
        b"\x01\x01" + REQUEST[2:],  # response type
        b"\x00\x11" + REQUEST[2:],  # binding indication
        b"\x00\x03" + REQUEST[2:],  # allocate request
        b"\x01\x11" + REQUEST[2:],  # error response
        b"\x40\x01" + REQUEST[2:],  # first two bits not 00
        REQUEST[:4] + b"\x21\x12\xa4\x43" + REQUEST[8:],  # wrong cookie
    ],
)
def test_not_a_binding_request_is_none(data: bytes) -> None:
    assert stun.binding_request_username(data) is None


@pytest.mark.parametrize(
    ("data", "message_part"),
    [
        (with_length(REQUEST, 0x56), "not a multiple of 4"),
        (with_length(REQUEST, 0x5C), "does not match"),
        (REQUEST + b"\x00\x00\x00\x00", "does not match"),
        (message(0x0001, []), "without USERNAME"),
        (message(0x0001, [(0x0024, b"\x00\x00\x00\x01")]), "without USERNAME"),
        (message(0x0001, [(0x0006, b"")]), "USERNAME of 0 bytes"),
        (message(0x0001, [(0x0006, b"a" * 514)]), "USERNAME of 514 bytes"),
        # attribute claims more than the message holds
        (message(0x0001, [], length=12) + b"\x00\x06\x00\x20" + bytes(8), "overruns"),
        (message(0x0001, [(0x8028, b"\x00\x00\x00\x00"), (0x0006, b"ab:cd")]), "after FINGERPRINT"),
        (message(0x0001, [(0x0008, bytes(16)), (0x0006, b"ab:cd")]), "MESSAGE-INTEGRITY of 16"),
        (message(0x0001, [(0x0006, b"ab:cd"), (0x8028, b"\x00\x00")]), "FINGERPRINT of 2"),
    ],
)
def test_malformed_binding_request_raises(data: bytes, message_part: str) -> None:
    with pytest.raises(StunError, match=message_part):
        stun.binding_request_username(data)


def test_username_of_513_bytes_is_accepted() -> None:
    assert stun.binding_request_username(message(0x0001, [(0x0006, b"u" * 513)])) == b"u" * 513


def test_username_after_message_integrity_is_ignored() -> None:
    # Attributes after MESSAGE-INTEGRITY are unauthenticated (RFC 8489 §14.5).
    data = message(0x0001, [(0x0008, bytes(20)), (0x0006, b"abcd:efgh")])
    with pytest.raises(StunError, match="without USERNAME"):
        stun.binding_request_username(data)


def test_first_username_wins() -> None:
    data = message(0x0001, [(0x0006, b"abcd:efgh"), (0x0006, b"wxyz:wxyz")])
    assert stun.binding_request_username(data) == b"abcd:efgh"


def test_verify_integrity_on_non_stun_raises() -> None:
    with pytest.raises(StunError):
        stun.verify_message_integrity(b"\x16\xfe\xfd" + bytes(40), "pwd")
    with pytest.raises(StunError):
        stun.verify_message_integrity(REQUEST[:50], RFC5769_PASSWORD)


@pytest.mark.parametrize("vector", ALL_VECTORS, ids=["2.1", "2.2", "2.3"])
def test_truncated_at_every_length(vector: bytes) -> None:
    is_request = vector is REQUEST
    integrity_end = len(vector) - 8  # every vector ends in an 8-byte FINGERPRINT
    for n in range(len(vector)):
        cut = vector[:n]
        # As received: the length field no longer matches.
        expected = StunError if is_request and n >= 20 else None
        assert outcome_of(stun.binding_request_username, cut) is expected, n
        assert outcome_of(stun.verify_message_integrity, cut, RFC5769_PASSWORD) is StunError
        assert outcome_of(stun.parse_message, cut) is StunError
        if n < 20:
            continue
        # Length fixed up to match, so the attribute walk itself meets the cut.
        fixed = with_length(cut, n - 20)
        username = outcome_of(stun.binding_request_username, fixed)
        assert username in ((StunError, b"evtj:h6vY") if is_request else (None,)), n
        verified = outcome_of(stun.verify_message_integrity, fixed, RFC5769_PASSWORD)
        assert verified in (StunError, False, True), n
        # Only a cut right after MESSAGE-INTEGRITY leaves a message that verifies.
        assert (verified is True) == (n == integrity_end), n
        parsed = outcome_of(stun.parse_message, fixed)
        assert parsed is StunError or isinstance(parsed, aioice.stun.Message)


# --- split_username ----------------------------------------------------------


def test_split_username() -> None:
    assert stun.split_username(b"evtj:h6vY") == (b"evtj", b"h6vY")
    assert stun.split_username(b"A+/z09Zz:abcd") == (b"A+/z09Zz", b"abcd")
    long = b"x" * 256
    assert stun.split_username(long + b":" + long) == (long, long)


@pytest.mark.parametrize(
    "username",
    [
        b"",
        b"evtjh6vY",
        b"evtj:h6vY\n",  # aioice's `$` accepted this; fullmatch must not
        b"evtj\n:h6vY",
        b"evtj:h6vY:more",
        b":h6vY",
        b"evtj:",
        b"abc:defg",  # ufrag under 4 chars (RFC 8839)
        b"abcd:efg",
        b"x" * 257 + b":abcd",
        b"ev=j:h6vY",
        b"ev-j:h6vY",
        b"ev j:h6vY",
        b"\xc3\xa9vtj:h6vY",
    ],
)
def test_split_username_rejects(username: bytes) -> None:
    with pytest.raises(StunError):
        stun.split_username(username)


# --- RFC 7983 demux ----------------------------------------------------------


def test_classify_every_byte() -> None:
    expected = {
        **dict.fromkeys(range(0, 4), stun.PacketKind.STUN),
        **dict.fromkeys(range(16, 20), stun.PacketKind.ZRTP),
        **dict.fromkeys(range(20, 64), stun.PacketKind.DTLS),
        **dict.fromkeys(range(64, 80), stun.PacketKind.TURN_CHANNEL),
        **dict.fromkeys(range(128, 192), stun.PacketKind.RTP),
    }
    for b in range(256):
        assert stun.classify(b) is expected.get(b, stun.PacketKind.OTHER), b


def test_classify_samples() -> None:
    assert stun.classify(REQUEST[0]) is stun.PacketKind.STUN
    assert stun.classify(0x16) is stun.PacketKind.DTLS  # handshake record
    assert stun.classify(0x80) is stun.PacketKind.RTP
    assert stun.classify(0x54) is stun.PacketKind.OTHER  # encapsulation magic 'T'


@pytest.mark.parametrize("value", [-1, 256, 1000])
def test_classify_out_of_range(value: int) -> None:
    with pytest.raises(ValueError, match="out of range"):
        stun.classify(value)


# --- parse_message wrapper ---------------------------------------------------


@pytest.mark.parametrize(
    "data",
    [
        message(0x0001, [(0x8028, b"\x00\x00")]),  # struct.error inside aioice
        message(0x0001, [(0x0006, b"\xff\xfe:abcd")]),  # UnicodeDecodeError
        message(0x0001, [(0x0020, b"\x00\x01")]),  # short XOR-MAPPED-ADDRESS
        message(0x0001, [(0x0020, b"\x00\x09" + bytes(6))]),  # unknown family
        message(0x0005, []),  # unknown method
        message(0x0001, [(0x0006, b"abcd")], length=4),  # length mismatch
        message(0x0001, [(0x0024, b"\x00\x01")]),  # short PRIORITY
        message(0x0001, [(0x0009, b"\x00")]),  # short ERROR-CODE
    ],
)
def test_parse_message_converts_aioice_errors(data: bytes) -> None:
    with pytest.raises(StunError):
        stun.parse_message(data)


# --- fuzzing -------------------------------------------------------------------

ATTR_TYPES = st.sampled_from(
    [0x0001, 0x0006, 0x0008, 0x0009, 0x0014, 0x0020, 0x0024, 0x0025, 0x8022, 0x8028, 0x8029, 0x7777]
)


@st.composite
def stun_like(draw: st.DrawFn) -> bytes:
    """Datagrams that get past the cookie check: a plausible header, random attributes."""
    attrs = draw(st.lists(st.tuples(ATTR_TYPES, st.binary(max_size=40)), max_size=6))
    msg_type = draw(st.sampled_from([0x0001, 0x0101, 0x0011, 0x0003, 0x0111, 0x3EEF]))
    data = message(msg_type, attrs)
    if draw(st.booleans()):
        data = with_length(data, draw(st.integers(0, 0xFFFF)))
    if draw(st.booleans()):
        data = data[: draw(st.integers(0, len(data)))]
    return data


@st.composite
def mutated_vector(draw: st.DrawFn) -> bytes:
    data = bytearray(draw(st.sampled_from(ALL_VECTORS)))
    for _ in range(draw(st.integers(1, 4))):
        data[draw(st.integers(0, len(data) - 1))] = draw(st.integers(0, 255))
    return bytes(data)


DATAGRAMS = st.one_of(st.binary(max_size=200), stun_like(), mutated_vector())


@FUZZ
@given(DATAGRAMS)
def test_fuzz_binding_request_username(data: bytes) -> None:
    try:
        result = stun.binding_request_username(data)
    except StunError:
        return
    assert result is None or (isinstance(result, bytes) and 0 < len(result) <= 513)


@FUZZ
@given(DATAGRAMS, st.text(max_size=30))
def test_fuzz_verify_message_integrity(data: bytes, password: str) -> None:
    try:
        result = stun.verify_message_integrity(data, password)
    except StunError:
        return
    assert isinstance(result, bool)


@FUZZ
@given(DATAGRAMS)
def test_fuzz_parse_message(data: bytes) -> None:
    try:
        msg = stun.parse_message(data)
    except StunError:
        return
    assert isinstance(msg, aioice.stun.Message)


@FUZZ
@given(st.binary(max_size=600))
def test_fuzz_split_username(username: bytes) -> None:
    try:
        server, client = stun.split_username(username)
    except StunError:
        return
    assert server + b":" + client == username
