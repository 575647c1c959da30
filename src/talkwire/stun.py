"""The STUN the relay and the transceiver need (RFC 8489) and RFC 7983 demux.

Sans-IO. Two fast paths that never build a message object:
``binding_request_username`` (the relay's first-packet routing key) and
``verify_message_integrity`` (short-term credential check). ``parse_message``
wraps aioice's full codec so that only StunError escapes it.

Decoders return None for "not STUN / not mine" and raise StunError for a
datagram that carries the magic cookie but is malformed.
"""

from __future__ import annotations

import enum
import hashlib
import hmac
import re
import struct
import zlib

import aioice.stun

from talkwire.errors import StunError, StunMissingUsername

HEADER_SIZE = 20
MAGIC_COOKIE = 0x2112A442
BINDING_REQUEST = 0x0001
ATTR_USERNAME = 0x0006
ATTR_MESSAGE_INTEGRITY = 0x0008
ATTR_FINGERPRINT = 0x8028
INTEGRITY_SIZE = 20  # HMAC-SHA1
FINGERPRINT_SIZE = 4
FINGERPRINT_XOR = 0x5354554E
# RFC 5389 allowed < 513 bytes (RFC 8489 narrowed it to < 509); accept the older bound.
MAX_USERNAME = 513

_HEADER = struct.Struct("!HHI")  # type, length, cookie; the transaction id is not needed
_ATTR = struct.Struct("!HH")
_LENGTH = struct.Struct("!H")
_FINGERPRINT = struct.Struct("!I")
_TYPE_CLASS_BITS = 0xC000  # must be 00 in every STUN message (RFC 8489 §5)
_CLASS_HIGH, _CLASS_LOW = 0x01, 0x10  # C1 in the type's first byte, C0 in its second
_ABSENT = -1
# RFC 8839 ice-char ufrags of 4..256 chars; fullmatch, unlike `$`, refuses a trailing newline.
_USERNAME = re.compile(rb"([A-Za-z0-9+/]{4,256}):([A-Za-z0-9+/]{4,256})")


class PacketKind(enum.IntEnum):
    """What a datagram is, by its first byte (RFC 7983 §7)."""

    STUN = 0
    ZRTP = 1
    DTLS = 2
    TURN_CHANNEL = 3
    RTP = 4  # RTP and RTCP
    OTHER = 5


def _kind_table() -> tuple[PacketKind, ...]:
    ranges = (
        (0, 3, PacketKind.STUN),
        (16, 19, PacketKind.ZRTP),
        (20, 63, PacketKind.DTLS),
        (64, 79, PacketKind.TURN_CHANNEL),
        (128, 191, PacketKind.RTP),
    )
    table = [PacketKind.OTHER] * 256
    for low, high, kind in ranges:
        table[low : high + 1] = [kind] * (high - low + 1)
    return tuple(table)


_KINDS = _kind_table()


def classify(first_byte: int) -> PacketKind:
    """Demultiplex by the first byte of a datagram (RFC 7983 §7)."""
    if not 0 <= first_byte <= 0xFF:
        raise ValueError(f"first byte {first_byte} out of range 0..255")
    return _KINDS[first_byte]


def _stun_length(data: bytes | bytearray | memoryview) -> int | None:
    """Body length from a header that carries the cookie; None if not STUN."""
    if len(data) < HEADER_SIZE:
        return None
    msg_type: int
    length: int
    cookie: int
    msg_type, length, cookie = _HEADER.unpack_from(data)
    if msg_type & _TYPE_CLASS_BITS or cookie != MAGIC_COOKIE:
        return None
    if length % 4:
        raise StunError(f"STUN: length {length} is not a multiple of 4")
    if HEADER_SIZE + length != len(data):
        raise StunError(f"STUN: length {length} does not match a {len(data)}-byte datagram")
    return length


def _scan(data: bytes | bytearray | memoryview) -> tuple[int, int, int]:
    """Offsets of USERNAME, MESSAGE-INTEGRITY and FINGERPRINT (-1 when absent).

    Walks attribute headers only: every step advances at least 4 bytes, so the
    walk is bounded by the datagram size. Attributes after MESSAGE-INTEGRITY
    are skipped except FINGERPRINT, which must come last (RFC 8489 §14.5, §14.7).
    """
    end = len(data)
    pos = HEADER_SIZE
    username = integrity = fingerprint = _ABSENT
    while pos < end:
        if fingerprint != _ABSENT:
            raise StunError("STUN: attribute after FINGERPRINT")
        if pos + 4 > end:
            raise StunError("STUN: truncated attribute header")
        attr_type, attr_len = _ATTR.unpack_from(data, pos)
        next_pos = pos + 4 + attr_len + (-attr_len % 4)
        if next_pos > end:
            raise StunError(f"STUN: attribute 0x{attr_type:04x} overruns the message")
        if attr_type == ATTR_FINGERPRINT:
            if attr_len != FINGERPRINT_SIZE:
                raise StunError(f"STUN: FINGERPRINT of {attr_len} bytes")
            fingerprint = pos
        elif integrity != _ABSENT:
            pass  # unauthenticated: ignored (RFC 8489 §14.5)
        elif attr_type == ATTR_MESSAGE_INTEGRITY:
            if attr_len != INTEGRITY_SIZE:
                raise StunError(f"STUN: MESSAGE-INTEGRITY of {attr_len} bytes")
            integrity = pos
        elif attr_type == ATTR_USERNAME and username == _ABSENT:
            username = pos
        pos = next_pos
    return username, integrity, fingerprint


def binding_request_username(data: bytes | bytearray | memoryview) -> bytes | None:
    """USERNAME of a STUN binding request (``b"<server ufrag>:<client ufrag>"``).

    None when ``data`` is not a binding request (not STUN, no cookie, another
    method or class). StunError when it is STUN but malformed, or a binding
    request without a usable USERNAME.
    """
    if len(data) < HEADER_SIZE or data[0] != 0 or data[1] != BINDING_REQUEST:
        return None
    if _stun_length(data) is None:
        return None
    pos = _scan(data)[0]
    if pos == _ABSENT:
        raise StunMissingUsername("STUN: binding request without USERNAME")
    (length,) = _LENGTH.unpack_from(data, pos + 2)
    if not 0 < length <= MAX_USERNAME:
        raise StunError(f"STUN: USERNAME of {length} bytes")
    return bytes(data[pos + 4 : pos + 4 + length])


def is_request(data: bytes | bytearray | memoryview) -> bool:
    """A STUN request of any method: the class that makes an ICE agent answer
    (with an error, if nothing else). StunError when it is STUN but malformed."""
    if len(data) < HEADER_SIZE or data[0] & _CLASS_HIGH or data[1] & _CLASS_LOW:
        return False
    return _stun_length(data) is not None


def split_username(username: bytes) -> tuple[bytes, bytes]:
    """Split an ICE USERNAME into (server ufrag, client ufrag); StunError if malformed."""
    match = _USERNAME.fullmatch(username)
    if match is None:
        raise StunError("STUN: USERNAME is not '<ufrag>:<ufrag>' of ice-chars")
    return match[1], match[2]


def verify_message_integrity(data: bytes | bytearray | memoryview, password: str) -> bool:
    """Check MESSAGE-INTEGRITY with a short-term credential (RFC 8489 §9.1, §14.5).

    HMAC-SHA1 keyed with the password over the message up to the attribute,
    with the header length covering it. A FINGERPRINT after it is checked too.
    False when the attribute is absent or either value is wrong; StunError when
    ``data`` is not a well-formed STUN message.
    """
    if _stun_length(data) is None:
        raise StunError("STUN: not a STUN message")
    _, integrity, fingerprint = _scan(data)
    if integrity == _ABSENT:
        return False
    view = memoryview(data)
    if fingerprint != _ABSENT:
        (value,) = _FINGERPRINT.unpack_from(view, fingerprint + 4)
        # FINGERPRINT is last, so the header length already covers it as sent.
        if zlib.crc32(view[:fingerprint]) ^ FINGERPRINT_XOR != value:
            return False
    covered = _LENGTH.pack(integrity + 4 + INTEGRITY_SIZE - HEADER_SIZE)
    signed = b"".join((view[:2], covered, view[4:integrity]))
    expected = hmac.digest(password.encode("utf-8"), signed, hashlib.sha1)
    received = view[integrity + 4 : integrity + 4 + INTEGRITY_SIZE]
    return hmac.compare_digest(expected, bytes(received))


# Everything aioice's decoder is known to let escape on hostile input.
_AIOICE_ERRORS = (ValueError, struct.error, IndexError, KeyError, TypeError, OverflowError)


def parse_message(data: bytes) -> aioice.stun.Message:
    """Full STUN decode through aioice; any failure becomes StunError.

    MESSAGE-INTEGRITY is not checked here (``Message.check_message_integrity``
    or ``verify_message_integrity`` do that).
    """
    try:
        return aioice.stun.parse_message(bytes(data))
    except _AIOICE_ERRORS as exc:
        raise StunError(f"STUN: {exc}") from exc
