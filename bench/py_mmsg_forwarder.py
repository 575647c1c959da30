"""Headroom sketch for the relay bench: a Python loop on recvmmsg/sendmmsg through ctypes.

    python bench/py_mmsg_forwarder.py LISTEN_PORT DEST_PORT     (127.0.0.1, IPv4, Linux)

Not a relay: per datagram it does what talkwire's fast path does (a dict
lookup keyed by the client address, the 24-byte header copied in front of
the payload) but receives and sends 64 datagrams per system call, with every
ctypes structure built once and only lengths written per datagram (through
memoryview casts, not ctypes attribute access). It shows what batching could
give the relay's forwarding loop; the bench reports it beside the C baseline.
Prints "ready PORT"; exits when stdin closes (the bench is gone) or after 900 s.
"""

from __future__ import annotations

import ctypes
import select
import signal
import socket
import sys

BATCH = 64
SLOT = 2048
HEADER = 24
MSG_DONTWAIT = 0x40
PR_SET_PDEATHSIG = 1
SOCKADDR_KEY = 8  # family, port, IPv4 address: the bytes that name a client


class IoVec(ctypes.Structure):
    _fields_ = (("iov_base", ctypes.c_void_p), ("iov_len", ctypes.c_size_t))


class MsgHdr(ctypes.Structure):
    _fields_ = (
        ("msg_name", ctypes.c_void_p),
        ("msg_namelen", ctypes.c_uint32),
        ("msg_iov", ctypes.c_void_p),
        ("msg_iovlen", ctypes.c_size_t),
        ("msg_control", ctypes.c_void_p),
        ("msg_controllen", ctypes.c_size_t),
        ("msg_flags", ctypes.c_int),
    )


class MMsgHdr(ctypes.Structure):
    _fields_ = (("msg_hdr", MsgHdr), ("msg_len", ctypes.c_uint))


def main() -> int:
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    signal.alarm(900)
    recvmmsg = libc.recvmmsg
    recvmmsg.argtypes = (
        ctypes.c_int,
        ctypes.c_void_p,
        ctypes.c_uint,
        ctypes.c_int,
        ctypes.c_void_p,
    )
    sendmmsg = libc.sendmmsg
    sendmmsg.argtypes = (ctypes.c_int, ctypes.c_void_p, ctypes.c_uint, ctypes.c_int)

    bufs = (ctypes.c_char * (BATCH * SLOT))()
    names = (ctypes.c_char * (BATCH * 16))()
    rx_iov, tx_iov = (IoVec * BATCH)(), (IoVec * BATCH)()
    rx, tx = (MMsgHdr * BATCH)(), (MMsgHdr * BATCH)()
    base = ctypes.addressof(bufs)
    for i in range(BATCH):
        # Received behind room for the header; sent from the slot start, header included.
        rx_iov[i].iov_base, rx_iov[i].iov_len = base + i * SLOT + HEADER, SLOT - HEADER
        rx[i].msg_hdr.msg_name = ctypes.addressof(names) + i * 16
        rx[i].msg_hdr.msg_namelen = 16
        rx[i].msg_hdr.msg_iov, rx[i].msg_hdr.msg_iovlen = ctypes.addressof(rx_iov[i]), 1
        tx_iov[i].iov_base = base + i * SLOT
        tx[i].msg_hdr.msg_iov, tx[i].msg_hdr.msg_iovlen = ctypes.addressof(tx_iov[i]), 1
    buf = memoryview(bufs).cast("B")
    name_bytes = memoryview(names).cast("B")
    # msg_len is the 15th uint32 of each 64-byte mmsghdr; iov_len the 2nd uint64 of an iovec.
    words_per_msg = ctypes.sizeof(MMsgHdr) // 4
    len_word = MMsgHdr.msg_len.offset // 4
    rx_words = memoryview(rx).cast("B").cast("I")
    tx_lens = memoryview(tx_iov).cast("B").cast("Q")
    rx_at, tx_at = ctypes.addressof(rx), ctypes.addressof(tx)

    listen = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    listen.bind(("127.0.0.1", int(sys.argv[1])))
    listen.setblocking(False)
    out = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    out.connect(("127.0.0.1", int(sys.argv[2])))
    header = b"TW\x01\x00" + bytes(HEADER - 4)
    flows: dict[bytes, bytes] = {}  # stands in for the flow table; learns every client
    print("ready", listen.getsockname()[1], flush=True)
    epoll = select.epoll()
    epoll.register(listen.fileno(), select.EPOLLIN)
    epoll.register(sys.stdin.fileno(), select.EPOLLIN)
    fd, out_fd, stdin_fd = listen.fileno(), out.fileno(), sys.stdin.fileno()
    while True:
        for ready, _ in epoll.poll(1.0):
            if ready == stdin_fd:
                return 0
        for _ in range(BATCH):
            n = recvmmsg(fd, rx_at, BATCH, MSG_DONTWAIT, None)
            if n <= 0:
                break
            for i in range(n):
                key = name_bytes[i * 16 : i * 16 + SOCKADDR_KEY].tobytes()
                flow = flows.get(key)
                if flow is None:
                    flow = flows[key] = header
                slot = i * SLOT
                buf[slot : slot + HEADER] = flow
                tx_lens[i * 2 + 1] = rx_words[i * words_per_msg + len_word] + HEADER
            sendmmsg(out_fd, tx_at, n, 0)


if __name__ == "__main__":
    sys.exit(main())
