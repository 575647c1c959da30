"""Batched UDP system calls (Linux ``recvmmsg``/``sendmmsg``) through ctypes.

Python's socket module has no batched calls, and building ctypes objects per
datagram would cost what batching saves. So everything is built once: one
buffer of ``count`` slots, ``mmsghdr`` vectors whose single iovec points at a
fixed offset in each slot, and one address area per vector. Per datagram the
caller only reads lengths and addresses through ``struct`` (one call per
batch returns all of them) and writes a length (a memoryview store) or a
28-byte destination address (a memoryview slice copy).

Layouts come from ctypes (``msghdr``/``iovec`` as glibc declares them for
LP64 Linux); ``AVAILABLE`` is False where the calls cannot be had, and the
relay then uses its one-datagram-per-call loop.
"""

from __future__ import annotations

import ctypes
import mmap
import struct
import sys
from collections.abc import Callable

from talkwire.relay.flows import SOCKADDR_SIZE, V4_KEY_SIZE, V6_KEY_SIZE

MSG_DONTWAIT = 0x40
MSG_TRUNC = 0x20
SOCKADDR_IPV4 = 16  # sizeof(sockaddr_in); address areas are 28 (sockaddr_in6) apart


class _IoVec(ctypes.Structure):
    _fields_ = (("iov_base", ctypes.c_void_p), ("iov_len", ctypes.c_size_t))


class _MsgHdr(ctypes.Structure):
    _fields_ = (
        ("msg_name", ctypes.c_void_p),
        ("msg_namelen", ctypes.c_uint32),
        ("msg_iov", ctypes.c_void_p),
        ("msg_iovlen", ctypes.c_size_t),
        ("msg_control", ctypes.c_void_p),
        ("msg_controllen", ctypes.c_size_t),
        ("msg_flags", ctypes.c_int),
    )


class _MMsgHdr(ctypes.Structure):
    _fields_ = (("msg_hdr", _MsgHdr), ("msg_len", ctypes.c_uint))


MMSGHDR_SIZE = ctypes.sizeof(_MMsgHdr)
_LEN_OFFSET = _MMsgHdr.msg_len.offset
# Vector.iov_words relies on it: iovec i is words 2i (base) and 2i + 1 (length).
_IOVEC_WORDS = ctypes.sizeof(_IoVec) // 8

_Call = Callable[..., int]


def _load() -> tuple[_Call, _Call, Callable[[], int]] | None:
    if not sys.platform.startswith("linux") or _IOVEC_WORDS != 2:
        return None
    try:
        # PyDLL keeps the GIL: every call is non-blocking (MSG_DONTWAIT on
        # non-blocking sockets), so releasing it would only cost time.
        libc = ctypes.PyDLL(None, use_errno=True)
        recv = libc.recvmmsg
        send = libc.sendmmsg
    except (OSError, AttributeError):
        return None
    # No argtypes: converting arguments through them doubled the cost of a call
    # (~0.5 us each on this VM). Callers pass plain ints (fd, count, flags),
    # None (no timeout) and prebuilt c_void_p objects (vector entries), which
    # ctypes passes as they are.
    recv.restype = ctypes.c_int
    send.restype = ctypes.c_int
    return recv, send, ctypes.get_errno


_LIBC = _load()
AVAILABLE = _LIBC is not None


class Vector:
    """``count`` mmsghdr entries; entry i's iovec covers ``length`` bytes at
    ``offset`` in slot i, its address (if any) is 28 bytes in ``names``."""

    def __init__(
        self,
        batch: Batch,
        offset: int,
        length: int,
        names: ctypes.Array[ctypes.c_char] | None,
        name_size: int,
    ) -> None:
        count = batch.count
        self._headers = (_MMsgHdr * count)()
        self._iovs = (_IoVec * count)()
        address = ctypes.addressof(self._headers)
        # entries[i]: a pointer to entry i, to send entries i.. in one call.
        self.entries = [ctypes.c_void_p(address + i * MMSGHDR_SIZE) for i in range(count)]
        base = batch.address + offset
        names_at = ctypes.addressof(names) if names is not None else 0
        for i in range(count):
            iov = self._iovs[i]
            iov.iov_base = base + i * batch.slot
            iov.iov_len = length
            header = self._headers[i].msg_hdr
            header.msg_iov = ctypes.addressof(iov)
            header.msg_iovlen = 1
            if names is not None:
                header.msg_name = names_at + i * SOCKADDR_SIZE
                header.msg_namelen = name_size
        # Entry i's iov_len is word 2*i + 1 of this view (sending sets lengths).
        self.iov_words = memoryview(self._iovs).cast("B").cast("Q")
        self._raw = memoryview(self._headers).cast("B")
        self._names = names
        self._key_size = V4_KEY_SIZE if name_size == SOCKADDR_IPV4 else V6_KEY_SIZE
        # Per datagram count: one struct that reads every entry's field at once.
        self._lengths: list[Callable[[memoryview], tuple[int, ...]] | None] = [None] * (count + 1)
        self._keys: list[Callable[[ctypes.Array[ctypes.c_char]], tuple[bytes, ...]] | None] = [
            None
        ] * (count + 1)

    def lengths(self, n: int) -> tuple[int, ...]:
        """``msg_len`` of the first ``n`` entries (after a receive: datagram sizes)."""
        unpack = self._lengths[n]
        if unpack is None:
            pad_after = MMSGHDR_SIZE - _LEN_OFFSET - 4
            fmt = "=" + f"{_LEN_OFFSET}xI{pad_after}x" * n
            unpack = self._lengths[n] = struct.Struct(fmt).unpack_from
        return unpack(self._raw)

    def keys(self, n: int) -> tuple[bytes, ...]:
        """Client keys of the first ``n`` source addresses of a receive (sockaddr
        bytes 2..8 for IPv4, 2..24 for IPv6: see ``flows.client_key``)."""
        unpack = self._keys[n]
        if unpack is None:
            pad_after = SOCKADDR_SIZE - 2 - self._key_size
            fmt = f"2x{self._key_size}s{pad_after}x" * n
            unpack = self._keys[n] = struct.Struct(fmt).unpack_from
        assert self._names is not None
        return unpack(self._names)

    def flags(self, i: int) -> int:
        """``msg_flags`` of entry i (MSG_TRUNC after a receive); not for every datagram."""
        return int(self._headers[i].msg_hdr.msg_flags)


class Batch:
    """One worker's preallocated batch: ``count`` slots of ``slot`` bytes, shared
    by every vector made from it (a worker handles one socket at a time)."""

    def __init__(self, count: int, slot: int) -> None:
        if count < 1:
            raise ValueError("a batch needs at least one slot")
        if _LIBC is None:
            raise OSError("recvmmsg/sendmmsg are not available on this platform")
        self.count = count
        self.slot = slot
        # Anonymous memory: only the pages datagrams touch become resident.
        self._memory = mmap.mmap(-1, count * slot)
        self._anchor = ctypes.c_char.from_buffer(self._memory)
        self.address = ctypes.addressof(self._anchor)
        self.buffer = memoryview(self._memory)
        self.rx_names = (ctypes.c_char * (count * SOCKADDR_SIZE))()
        self.tx_names = (ctypes.c_char * (count * SOCKADDR_SIZE))()
        self.tx_names_view = memoryview(self.tx_names).cast("B")
        self.recvmmsg, self.sendmmsg, self.errno = _LIBC

    def receiver(self, offset: int, name_size: int) -> Vector:
        """Receive into each slot from ``offset`` on, source addresses into ``rx_names``."""
        return Vector(self, offset, self.slot - offset, self.rx_names, name_size)

    def sender(self, offset: int, *, addressed: bool) -> Vector:
        """Send from ``offset`` in each slot; ``addressed``: to the 28-byte
        address written at entry i of ``tx_names`` (else a connected socket)."""
        names = self.tx_names if addressed else None
        return Vector(self, offset, 0, names, SOCKADDR_SIZE)

    def slice_reader(self, offset: int, size: int) -> Callable[[int], tuple[bytes, ...]]:
        """A function of n: ``size`` bytes at ``offset`` of each of the first n slots."""
        unpackers: list[Callable[[memoryview], tuple[bytes, ...]] | None] = [None] * (
            self.count + 1
        )
        buffer = self.buffer

        def read(n: int) -> tuple[bytes, ...]:
            unpack = unpackers[n]
            if unpack is None:
                fmt = f"{offset}x{size}s{self.slot - offset - size}x" * n
                unpack = unpackers[n] = struct.Struct(fmt).unpack_from
            return unpack(buffer)

        return read
