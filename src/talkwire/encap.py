"""Relay <-> transceiver encapsulation header (docs/wire.md "Encapsulation header")."""

from __future__ import annotations

from dataclasses import dataclass

HEADER_SIZE = 24
MAGIC = b"TW"
VERSION = 1


@dataclass(frozen=True, slots=True)
class EncapHeader:
    client: tuple[str, int]
    ingress: int


def pack_header(client: tuple[str, int] | tuple[str, int, int, int], ingress: int) -> bytes:
    raise NotImplementedError


def unpack_header(data: bytes | bytearray | memoryview) -> EncapHeader:
    raise NotImplementedError


def is_encapsulated(data: bytes | bytearray | memoryview) -> bool:
    raise NotImplementedError
