"""Route tokens: the server ICE ufrag as a signed route (docs/wire.md "Route token").

Binary layout, then unpadded standard base64 (alphabet == RFC 8839 ice-char)::

    ver<<4|kid | cluster | family (4|6) | address (4|16) | port (2) | nonce (7) | mac (8)

``mac`` is HMAC-SHA256(mac_key, preceding bytes)[:8] with
``mac_key = HMAC-SHA256(secret, b"talkwire route-token mac v1")``. The ICE
password is ``base64(HMAC-SHA256(pwd_key, ufrag))[:32]`` with
``pwd_key = HMAC-SHA256(secret, b"talkwire ice-pwd v1")``, so a relay holding
the keyring can check a first binding request before it creates a flow.

Sans-IO except ``Keyring.from_file``. ``verify`` runs on the relay's
first-packet path: the per-key derived keys are computed once per Keyring.
"""

from __future__ import annotations

import base64
import binascii
import datetime
import functools
import hashlib
import hmac
import ipaddress
import os
import re
import secrets
import socket
import struct
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

from talkwire.errors import ConfigError, TokenError
from talkwire.secret_files import read_private

TOKEN_VERSION = 1
MAX_KEY_ID = 15
MAX_CLUSTER = 255
MIN_SECRET_BYTES = 32
NONCE_SIZE = 7
MAC_SIZE = 8
PASSWORD_CHARS = 32

_MAC_LABEL = b"talkwire route-token mac v1"
_PWD_LABEL = b"talkwire ice-pwd v1"
_FAMILY_V4 = 4
_FAMILY_V6 = 6
_PREFIX = struct.Struct("!BBB")  # ver|kid, cluster, family
_PORT = struct.Struct("!H")
_PREFIX_SIZE = _PREFIX.size
# Total binary sizes; both are multiples of 3, so base64 never pads.
_SIZE_V4 = _PREFIX_SIZE + 4 + 2 + NONCE_SIZE + MAC_SIZE  # 24 -> 32 chars
_SIZE_V6 = _PREFIX_SIZE + 16 + 2 + NONCE_SIZE + MAC_SIZE  # 36 -> 48 chars
# Checked before any decoding: only the two lengths a token can have, only ice-chars.
_UFRAG_STR = re.compile(r"[A-Za-z0-9+/]{32}|[A-Za-z0-9+/]{48}")
_UFRAG_BYTES = re.compile(rb"[A-Za-z0-9+/]{32}|[A-Za-z0-9+/]{48}")
_KEYRING_LINE = re.compile(r"(\d+)\s+([0-9A-Fa-f]+)(?:\s+(current|until=(\S+)))?")


def _derive(secret: bytes, label: bytes) -> bytes:
    return hmac.digest(secret, label, "sha256")


class _PrekeyedHmac:
    """HMAC-SHA256 (RFC 2104) with the keyed inner and outer states computed once.

    Copying two hash states costs about a third of ``hmac.digest``, which
    re-hashes the padded key on every call.
    """

    __slots__ = ("_inner", "_outer")
    _BLOCK = 64

    def __init__(self, key: bytes) -> None:
        if len(key) > self._BLOCK:
            key = hashlib.sha256(key).digest()
        key = key.ljust(self._BLOCK, b"\0")
        self._inner = hashlib.sha256(bytes(b ^ 0x36 for b in key))
        self._outer = hashlib.sha256(bytes(b ^ 0x5C for b in key))

    def digest(self, message: bytes) -> bytes:
        inner = self._inner.copy()
        inner.update(message)
        outer = self._outer.copy()
        outer.update(inner.digest())
        return outer.digest()


@dataclass(frozen=True, slots=True)
class Keyring:
    """Cluster secrets by key id; ``current`` mints, every listed id verifies.

    ``until`` (unix seconds) ends a retired key's grace: ``live(now)`` drops
    it, so calls minted before a rotation keep working until then.
    ``repr`` shows key ids only: a keyring in a log line must not leak a secret.
    """

    current: int
    keys: Mapping[int, bytes]
    until: Mapping[int, float] = field(default_factory=dict)
    # Derived once here so that verify() costs one HMAC, not three.
    _macs: Mapping[int, _PrekeyedHmac] = field(init=False, repr=False, compare=False)
    _pwds: Mapping[int, _PrekeyedHmac] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        keys = dict(self.keys)
        for key_id, secret in keys.items():
            if not 0 <= key_id <= MAX_KEY_ID:
                raise ConfigError(f"keyring: key id {key_id} out of range 0..{MAX_KEY_ID}")
            if len(secret) < MIN_SECRET_BYTES:
                raise ConfigError(
                    f"keyring: secret of key id {key_id} is {len(secret)} bytes, "
                    f"needs >= {MIN_SECRET_BYTES}"
                )
        if self.current not in keys:
            raise ConfigError(f"keyring: current key id {self.current} has no secret")
        if self.current in self.until:
            raise ConfigError(f"keyring: the current key {self.current} cannot have an end")
        if not set(self.until) <= set(keys):
            raise ConfigError(f"keyring: an end for a key it lacks: {sorted(self.until)}")
        # Frozen: copy so a caller mutating its dict cannot desync the derived keys.
        object.__setattr__(self, "keys", MappingProxyType(keys))
        object.__setattr__(self, "until", MappingProxyType(dict(self.until)))
        macs = {k: _PrekeyedHmac(_derive(s, _MAC_LABEL)) for k, s in keys.items()}
        pwds = {k: _PrekeyedHmac(_derive(s, _PWD_LABEL)) for k, s in keys.items()}
        object.__setattr__(self, "_macs", macs)
        object.__setattr__(self, "_pwds", pwds)

    def __repr__(self) -> str:
        return f"Keyring(current={self.current}, key_ids={sorted(self.keys)})"

    def live(self, now: float) -> Keyring:
        """This keyring without the retired keys whose grace ended by ``now``."""
        ended = {k for k, end in self.until.items() if end <= now}
        if not ended:
            return self
        keys = {k: s for k, s in self.keys.items() if k not in ended}
        until = {k: end for k, end in self.until.items() if k not in ended}
        return Keyring(self.current, keys, until)

    def rotated(self, key_id: int, secret: bytes, grace_s: float, now: float) -> Keyring:
        """``key_id`` becomes current; the old current key is accepted ``grace_s`` more.

        Keys still in an earlier grace keep it; a retired key with no end (the
        older two-key format) retires now, as a rotation always retired it.
        """
        if key_id == self.current:
            raise ConfigError(f"key id {key_id} is already the current key")
        old = self.live(now)
        if key_id in old.until:
            raise ConfigError(
                f"key id {key_id} is still accepted for calls minted before an earlier"
                " rotation (its grace has not ended); choose another --key-id"
            )
        until = {k: end for k, end in old.until.items() if k != key_id}
        until[old.current] = now + grace_s
        keys = {k: old.keys[k] for k in until} | {key_id: secret}
        return Keyring(key_id, keys, until)

    @classmethod
    def from_text(cls, text: str, source: str = "<keyring>") -> Keyring:
        """Parse the keyring file format; ConfigError names ``source`` and the line."""
        keys: dict[int, bytes] = {}
        until: dict[int, float] = {}
        current: list[int] = []
        for lineno, raw in enumerate(text.splitlines(), start=1):
            line = raw.partition("#")[0].strip()
            if not line:
                continue
            where = f"{source}:{lineno}"
            match = _KEYRING_LINE.fullmatch(line)
            if match is None:
                raise ConfigError(
                    f"{where}: expected '<key-id> <hex secret> [current | until=<UTC time>]'"
                )
            key_id = int(match[1])
            if not 0 <= key_id <= MAX_KEY_ID:
                raise ConfigError(f"{where}: key id {key_id} out of range 0..{MAX_KEY_ID}")
            if key_id in keys:
                raise ConfigError(f"{where}: key id {key_id} listed twice")
            if len(match[2]) % 2:
                raise ConfigError(f"{where}: secret has an odd number of hex digits")
            secret = bytes.fromhex(match[2])
            if len(secret) < MIN_SECRET_BYTES:
                raise ConfigError(
                    f"{where}: secret is {len(secret)} bytes, needs >= {MIN_SECRET_BYTES}"
                )
            keys[key_id] = secret
            if match[4] is not None:
                until[key_id] = _parse_utc(match[4], where)
            elif match[3]:
                current.append(key_id)
        if len(current) != 1:
            raise ConfigError(
                f"{source}: exactly one key must be marked 'current' (found {len(current)})"
            )
        return cls(current[0], keys, until)

    @classmethod
    def from_file(cls, path: str | os.PathLike[str]) -> Keyring:
        """Read a keyring file (docs/wire.md "Keyring file"); it must be private."""
        return cls.from_text(read_private(path, "keyring file"), source=os.fspath(path))

    @classmethod
    def generate(cls, key_id: int = 1) -> Keyring:
        """A one-key keyring with a fresh random 32-byte secret."""
        return cls(key_id, {key_id: secrets.token_bytes(MIN_SECRET_BYTES)})

    def to_text(self) -> str:
        """The keyring file text; ``from_text``/``from_file`` read it back."""
        lines = ["# key-id  secret (hex, >= 32 bytes)  [current | until=<UTC time>]"]
        for key_id in sorted(self.keys):
            mark = ""
            if key_id == self.current:
                mark = "  current"
            elif key_id in self.until:
                mark = "  until=" + _format_utc(self.until[key_id])
            lines.append(f"{key_id}  {self.keys[key_id].hex()}{mark}")
        return "\n".join(lines) + "\n"


def _parse_utc(text: str, where: str) -> float:
    try:
        moment = datetime.datetime.fromisoformat(text)
    except ValueError:
        moment = None
    if moment is None or moment.utcoffset() != datetime.timedelta(0):
        raise ConfigError(f"{where}: until= wants a UTC time like 2026-12-07T18:00:00Z")
    return moment.timestamp()


def _format_utc(unix_s: float) -> str:
    moment = datetime.datetime.fromtimestamp(int(unix_s), datetime.UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass(frozen=True, slots=True)
class RouteToken:
    """Decoded fields; ``address`` is (ip text as ``ipaddress`` prints it, port)."""

    version: int
    key_id: int
    cluster: int
    address: tuple[str, int]
    nonce: bytes


def mint(
    keyring: Keyring, cluster: int, address: tuple[str, int], nonce: bytes | None = None
) -> str:
    """Mint a ufrag routing to ``address`` in ``cluster``, signed with the current key.

    ``address`` is (IP literal, port); an IPv4-mapped IPv6 address is stored as IPv4.

    Raises TokenError when cluster, address, port or nonce cannot be encoded.
    """
    if not 0 <= cluster <= MAX_CLUSTER:
        raise TokenError(f"route token: cluster {cluster} out of range 0..{MAX_CLUSTER}")
    host, port = address
    if not 0 < port <= 0xFFFF:
        raise TokenError(f"route token: port {port} out of range 1..65535")
    try:
        ip = ipaddress.ip_address(host)
    except ValueError as exc:
        raise TokenError(f"route token: {host!r} is not an IP address") from exc
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.scope_id is not None:
            raise TokenError(f"route token: scoped address {host!r} cannot be encoded")
        # An IPv4-mapped transceiver is an IPv4 one; the short form also keeps
        # the ufrag at 32 chars and the relay's send path on AF_INET.
        ip = ip.ipv4_mapped or ip
    if nonce is None:
        nonce = secrets.token_bytes(NONCE_SIZE)
    elif len(nonce) != NONCE_SIZE:
        raise TokenError(f"route token: nonce must be {NONCE_SIZE} bytes, got {len(nonce)}")
    family = _FAMILY_V4 if ip.version == 4 else _FAMILY_V6
    body = (
        _PREFIX.pack(TOKEN_VERSION << 4 | keyring.current, cluster, family)
        + ip.packed
        + _PORT.pack(port)
        + nonce
    )
    mac = keyring._macs[keyring.current].digest(body)[:MAC_SIZE]
    return base64.b64encode(body + mac).decode("ascii")


def _raw(ufrag: str | bytes) -> bytes:
    # Shape first, so garbage never reaches the base64 decoder.
    if isinstance(ufrag, str):
        if _UFRAG_STR.fullmatch(ufrag) is None:
            raise TokenError("route token: not 32 or 48 ice-chars")
    elif _UFRAG_BYTES.fullmatch(ufrag) is None:
        raise TokenError("route token: not 32 or 48 ice-chars")
    try:
        raw = base64.b64decode(ufrag, validate=True)
    except binascii.Error as exc:  # unreachable after the regex; kept as a guard
        raise TokenError("route token: not base64") from exc
    version = raw[0] >> 4
    if version != TOKEN_VERSION:
        raise TokenError(f"route token: unsupported version {version}")
    return raw


@functools.lru_cache(maxsize=1024)
def _v6_text(packed: bytes) -> str:
    # A cluster has few transceivers; formatting through ipaddress costs ~4 µs.
    return str(ipaddress.IPv6Address(packed))


def _fields(raw: bytes) -> RouteToken:
    first, cluster, family = _PREFIX.unpack_from(raw)
    if family == _FAMILY_V4 and len(raw) == _SIZE_V4:
        end = _PREFIX_SIZE + 4
        # inet_ntop prints IPv4 exactly as ipaddress does, at a fraction of the cost.
        host = socket.inet_ntop(socket.AF_INET, raw[_PREFIX_SIZE:end])
    elif family == _FAMILY_V6 and len(raw) == _SIZE_V6:
        end = _PREFIX_SIZE + 16
        host = _v6_text(raw[_PREFIX_SIZE:end])
    else:
        raise TokenError(f"route token: family {family} does not match length {len(raw)}")
    (port,) = _PORT.unpack_from(raw, end)
    if port == 0:
        raise TokenError("route token: port 0")
    nonce = raw[end + 2 : end + 2 + NONCE_SIZE]
    return RouteToken(first >> 4, first & 0x0F, cluster, (host, port), nonce)


def decode_unverified(ufrag: str | bytes) -> RouteToken:
    """Decode without checking the MAC (for inspection only; never route on it)."""
    return _fields(_raw(ufrag))


def verify(keyring: Keyring, ufrag: str | bytes) -> RouteToken:
    """Decode ``ufrag`` and check its MAC with the key its key id names.

    Raises TokenError when malformed, when the key id is not in ``keyring``, or
    when the MAC does not match.
    """
    raw = _raw(ufrag)
    key_id = raw[0] & 0x0F
    mac = keyring._macs.get(key_id)
    if mac is None:
        raise TokenError(f"route token: unknown key id {key_id}")
    expected = mac.digest(raw[:-MAC_SIZE])[:MAC_SIZE]
    if not hmac.compare_digest(expected, raw[-MAC_SIZE:]):
        raise TokenError("route token: MAC does not match")
    return _fields(raw)


def ice_password(keyring: Keyring, ufrag: str | bytes) -> str:
    """The ICE password that belongs to ``ufrag`` (32 ice-chars).

    Checks the shape and key id but not the MAC: call ``verify`` first when
    the ufrag comes from the network.
    """
    raw = _raw(ufrag)
    key_id = raw[0] & 0x0F
    pwd = keyring._pwds.get(key_id)
    if pwd is None:
        raise TokenError(f"route token: unknown key id {key_id}")
    digest = pwd.digest(ufrag.encode("ascii") if isinstance(ufrag, str) else bytes(ufrag))
    return base64.b64encode(digest)[:PASSWORD_CHARS].decode("ascii")
