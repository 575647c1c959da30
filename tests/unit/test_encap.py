"""talkwire.encap against docs/wire.md "Encapsulation header"."""

from __future__ import annotations

import ipaddress
import socket
import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from talkwire import encap, stun
from talkwire.encap import EncapHeader
from talkwire.errors import EncapError

FUZZ = settings(max_examples=400, deadline=None)


def test_layout_is_the_documented_one() -> None:
    header = encap.pack_header(("192.0.2.1", 0x1234), 0x0506)
    assert header == bytes.fromhex("545701001234050600000000000000000000ffffc0000201")
    assert len(header) == encap.HEADER_SIZE == 24
    v6 = encap.pack_header(("2001:db8::1", 3478), 0)
    assert v6[:8] == b"TW\x01\x00" + struct.pack("!HH", 3478, 0)
    assert v6[8:] == ipaddress.IPv6Address("2001:db8::1").packed


@pytest.mark.parametrize(
    ("client", "ingress", "expected"),
    [
        (("10.0.0.1", 1), 0, ("10.0.0.1", 1)),
        (("255.255.255.255", 65535), 65535, ("255.255.255.255", 65535)),
        (("::1", 5000), 3, ("::1", 5000)),
        (("2001:DB8::A", 5000), 3, ("2001:db8::a", 5000)),
        (("::ffff:10.1.2.3", 5000), 3, ("10.1.2.3", 5000)),  # mapped comes back as IPv4
        (("::1", 5000, 0, 0), 7, ("::1", 5000)),  # AF_INET6 recvfrom 4-tuple
        (("fe80::1%lo", 5000, 0, 1), 7, ("fe80::1", 5000)),  # scope is not carried
    ],
)
def test_round_trip(
    client: tuple[str, int] | tuple[str, int, int, int], ingress: int, expected: tuple[str, int]
) -> None:
    header = encap.pack_header(client, ingress)
    payload = b"\x00\x01payload"
    for buf in (header, header + payload, bytearray(header + payload), memoryview(header)):
        assert encap.unpack_header(buf) == EncapHeader(expected, ingress)
    assert (header + payload)[encap.HEADER_SIZE :] == payload


def test_ipv4_and_mapped_pack_identically() -> None:
    assert encap.pack_header(("10.1.2.3", 9), 1) == encap.pack_header(("::ffff:10.1.2.3", 9), 1)


@pytest.mark.parametrize(
    ("client", "ingress", "message"),
    [
        (("10.0.0.1", 0), 0, "client port 0"),
        (("10.0.0.1", 65536), 0, "client port 65536"),
        (("10.0.0.1", 1), -1, "ingress index -1"),
        (("10.0.0.1", 1), 65536, "ingress index 65536"),
        (("example.com", 1), 0, "not an IP address"),
        (("10.0.0", 1), 0, "not an IP address"),
        (("1:2:3", 1), 0, "not an IP address"),
        (("", 1), 0, "not an IP address"),
    ],
)
def test_pack_rejects(client: tuple[str, int], ingress: int, message: str) -> None:
    with pytest.raises(EncapError, match=message):
        encap.pack_header(client, ingress)


GOOD = encap.pack_header(("10.0.0.1", 4000), 2)


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"", "0 bytes is shorter"),
        (GOOD[:23], "23 bytes is shorter"),
        (b"XW" + GOOD[2:], "bad magic"),
        (b"Tw" + GOOD[2:], "bad magic"),
        (GOOD[:2] + b"\x02" + GOOD[3:], "unsupported version 2"),
        (GOOD[:2] + b"\x00" + GOOD[3:], "unsupported version 0"),
        (GOOD[:3] + b"\x01" + GOOD[4:], "unknown flags 0x01"),
        (GOOD[:4] + b"\x00\x00" + GOOD[6:], "client port 0"),
    ],
)
def test_unpack_rejects(data: bytes, message: str) -> None:
    with pytest.raises(EncapError, match=message):
        encap.unpack_header(data)


def test_is_encapsulated() -> None:
    assert encap.is_encapsulated(GOOD)
    assert encap.is_encapsulated(memoryview(GOOD + b"x"))
    assert encap.is_encapsulated(bytearray(GOOD))
    assert not encap.is_encapsulated(GOOD[:23])
    assert not encap.is_encapsulated(b"")
    assert not encap.is_encapsulated(b"\x00\x01" + GOOD[2:])  # STUN
    assert not encap.is_encapsulated(b"\x16\xfe" + GOOD[2:])  # DTLS


def test_magic_is_outside_every_rfc7983_range() -> None:
    assert stun.classify(encap.MAGIC[0]) is stun.PacketKind.OTHER


@pytest.mark.parametrize(
    ("family", "host"), [(socket.AF_INET, "127.0.0.1"), (socket.AF_INET6, "::1")]
)
def test_text_matches_what_recvfrom_reports(family: socket.AddressFamily, host: str) -> None:
    # The relay keys flows by recvfrom's address and relearns them from headers;
    # both spellings must be the same string.
    with (
        socket.socket(family, socket.SOCK_DGRAM) as rx,
        socket.socket(family, socket.SOCK_DGRAM) as tx,
    ):
        rx.bind((host, 0))
        tx.bind((host, 0))
        rx.settimeout(5)
        tx.sendto(b"ping", rx.getsockname())
        _, source = rx.recvfrom(64)
    header = encap.pack_header(source, 1)
    assert encap.unpack_header(header).client == tuple(source[:2])


# --- fuzzing -------------------------------------------------------------------------------


@st.composite
def headerish(draw: st.DrawFn) -> bytes:
    """Mostly-valid headers with a field or two disturbed, plus random tails."""
    data = bytearray(
        encap.MAGIC
        + bytes([draw(st.sampled_from([1, 1, 1, 0, 2])), draw(st.sampled_from([0, 0, 0, 1, 128]))])
        + draw(st.binary(min_size=20, max_size=20))
    )
    data += draw(st.binary(max_size=8))
    return bytes(data[: draw(st.integers(0, len(data)))])


@FUZZ
@given(st.one_of(st.binary(max_size=64), headerish()))
def test_fuzz_unpack_header(data: bytes) -> None:
    assert isinstance(encap.is_encapsulated(data), bool)
    try:
        header = encap.unpack_header(data)
    except EncapError:
        return
    # Anything that decodes re-encodes to the same 24 bytes.
    assert encap.pack_header(header.client, header.ingress) == data[: encap.HEADER_SIZE]


@FUZZ
@given(
    st.one_of(st.ip_addresses(v=4), st.ip_addresses(v=6)),
    st.integers(1, 65535),
    st.integers(0, 65535),
)
def test_fuzz_round_trip(
    ip: ipaddress.IPv4Address | ipaddress.IPv6Address, port: int, ingress: int
) -> None:
    header = encap.unpack_header(encap.pack_header((str(ip), port), ingress))
    assert header.ingress == ingress
    assert header.client[1] == port
    decoded = ipaddress.ip_address(header.client[0])
    mapped = ip.ipv4_mapped if isinstance(ip, ipaddress.IPv6Address) else None
    assert decoded == (mapped or ip)


def test_with_ingress_rewrites_only_the_ingress_of_a_copy() -> None:
    datagram = encap.pack_header(("203.0.113.9", 4242), 17) + b"payload"
    moved = encap.with_ingress(memoryview(datagram), 3)
    assert encap.unpack_header(moved) == EncapHeader(("203.0.113.9", 4242), 3)
    assert moved[encap.HEADER_SIZE :] == b"payload"
    assert encap.unpack_header(datagram).ingress == 17  # the original is untouched
    with pytest.raises(EncapError, match="out of range"):
        encap.with_ingress(datagram, 1 << 16)
    with pytest.raises(EncapError, match="shorter than a header"):
        encap.with_ingress(datagram[:10], 1)
