"""Relay <-> transceiver encapsulation header (docs/wire.md "Encapsulation header").

Every datagram between a relay and a transceiver, in both directions, is the
original datagram behind this fixed 24-byte header::

    'T' 'W' | version=1 | flags=0 | client port (2) | ingress socket index (2)
    client IP (16 bytes; IPv4 as ::ffff:a.b.c.d)

relay -> transceiver it names the client's real address and the relay's public
socket the datagram arrived on; transceiver -> relay it names where the relay
must send the payload, and from which public socket. Sans-IO: bytes in, values
out. The first byte (0x54) lies outside every RFC 7983 range, so a stray
encapsulated datagram is never taken for STUN, DTLS or RTP.
"""

from __future__ import annotations

import socket
import struct
from dataclasses import dataclass

from talkwire.errors import EncapError

HEADER_SIZE = 24
MAGIC = b"TW"
VERSION = 1
FLAGS = 0
MAX_INGRESS = 0xFFFF

_HEADER = struct.Struct("!2sBBHH16s")
_MAGIC0, _MAGIC1 = MAGIC
_V4_MAPPED_PREFIX = b"\x00" * 10 + b"\xff\xff"

assert _HEADER.size == HEADER_SIZE
_INGRESS_AT = 6  # after magic, version, flags and the client port


@dataclass(frozen=True, slots=True)
class EncapHeader:
    """Decoded header: ``client`` is (ip text, port), ``ingress`` the relay socket index."""

    client: tuple[str, int]
    ingress: int


def _packed_ip(host: str) -> bytes:
    # inet_pton is strict (no "1.2.3" shorthand) and several times faster than
    # ipaddress, which matters because the relay may build headers per flow.
    try:
        if ":" in host:
            # A scope ("fe80::1%eth0") has no place on the wire; the relay's
            # sockets, not the header, decide the interface.
            return socket.inet_pton(socket.AF_INET6, host.partition("%")[0])
        return _V4_MAPPED_PREFIX + socket.inet_pton(socket.AF_INET, host)
    except (OSError, ValueError, TypeError) as exc:
        raise EncapError(f"encap: client address {host!r} is not an IP address") from exc


def pack_header(client: tuple[str, int] | tuple[str, int, int, int], ingress: int) -> bytes:
    """Build the 24-byte header for ``client`` and ingress socket index ``ingress``.

    ``client`` is (host, port) or the (host, port, flowinfo, scope_id) tuple an
    AF_INET6 ``recvfrom`` returns; only host and port are used. IPv4 hosts are
    stored as IPv4-mapped IPv6. Raises EncapError on an unusable address, port
    or index.
    """
    host, port = client[0], client[1]
    if not 0 < port <= 0xFFFF:
        raise EncapError(f"encap: client port {port} out of range 1..65535")
    if not 0 <= ingress <= MAX_INGRESS:
        raise EncapError(f"encap: ingress index {ingress} out of range 0..{MAX_INGRESS}")
    return _HEADER.pack(MAGIC, VERSION, FLAGS, port, ingress, _packed_ip(host))


def unpack_header(data: bytes | bytearray | memoryview) -> EncapHeader:
    """Decode the header at the start of ``data`` (the payload follows at HEADER_SIZE).

    IPv4-mapped addresses come back as plain IPv4 text; IPv6 text is formatted
    by ``inet_ntop``, like the addresses ``recvfrom`` returns. Raises EncapError
    when the buffer is short or magic, version, flags or port are wrong.
    """
    if len(data) < HEADER_SIZE:
        raise EncapError(f"encap: datagram of {len(data)} bytes is shorter than the header")
    magic, version, flags, port, ingress, ip = _HEADER.unpack_from(data)
    if magic != MAGIC:
        raise EncapError("encap: bad magic")
    if version != VERSION:
        raise EncapError(f"encap: unsupported version {version}")
    if flags != FLAGS:
        raise EncapError(f"encap: unknown flags 0x{flags:02x}")
    if port == 0:
        raise EncapError("encap: client port 0")
    if ip[:12] == _V4_MAPPED_PREFIX:
        host = socket.inet_ntop(socket.AF_INET, ip[12:])
    else:
        host = socket.inet_ntop(socket.AF_INET6, ip)
    return EncapHeader((host, port), ingress)


def is_encapsulated(data: bytes | bytearray | memoryview) -> bool:
    """Cheap test for the magic; a full header still needs ``unpack_header``."""
    return len(data) >= HEADER_SIZE and data[0] == _MAGIC0 and data[1] == _MAGIC1


def with_ingress(datagram: bytes | bytearray | memoryview, ingress: int) -> bytearray:
    """A copy of an encapsulated ``datagram`` whose header names ``ingress``
    instead (a relay passing a reply on to the global relay it came through)."""
    if not 0 <= ingress <= MAX_INGRESS:
        raise EncapError(f"encap: ingress index {ingress} out of range 0..{MAX_INGRESS}")
    if len(datagram) < HEADER_SIZE:
        raise EncapError(f"encap: {len(datagram)} bytes is shorter than a header")
    copy = bytearray(datagram)
    copy[_INGRESS_AT : _INGRESS_AT + 2] = ingress.to_bytes(2, "big")
    return copy
