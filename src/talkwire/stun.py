"""STUN subset for routing and checks (RFC 8489) and first-byte demux (RFC 7983)."""

from __future__ import annotations

import enum

import aioice.stun


class PacketKind(enum.IntEnum):
    STUN = 0
    ZRTP = 1
    DTLS = 2
    TURN_CHANNEL = 3
    RTP = 4
    OTHER = 5


def classify(first_byte: int) -> PacketKind:
    raise NotImplementedError


def binding_request_username(data: bytes | bytearray | memoryview) -> bytes | None:
    raise NotImplementedError


def split_username(username: bytes) -> tuple[bytes, bytes]:
    raise NotImplementedError


def verify_message_integrity(data: bytes | bytearray | memoryview, password: str) -> bool:
    raise NotImplementedError


def parse_message(data: bytes) -> aioice.stun.Message:
    raise NotImplementedError
