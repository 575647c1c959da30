"""Route tokens: the server ICE ufrag as a signed route (docs/wire.md "Route token")."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass

TOKEN_VERSION = 1


@dataclass(frozen=True, slots=True)
class Keyring:
    current: int
    keys: Mapping[int, bytes]

    @classmethod
    def from_file(cls, path: str | os.PathLike[str]) -> Keyring:
        raise NotImplementedError

    @classmethod
    def generate(cls, key_id: int = 1) -> Keyring:
        raise NotImplementedError

    def to_text(self) -> str:
        raise NotImplementedError


@dataclass(frozen=True, slots=True)
class RouteToken:
    version: int
    key_id: int
    cluster: int
    address: tuple[str, int]
    nonce: bytes


def mint(
    keyring: Keyring, cluster: int, address: tuple[str, int], nonce: bytes | None = None
) -> str:
    raise NotImplementedError


def verify(keyring: Keyring, ufrag: str | bytes) -> RouteToken:
    raise NotImplementedError


def decode_unverified(ufrag: str | bytes) -> RouteToken:
    raise NotImplementedError


def ice_password(keyring: Keyring, ufrag: str) -> str:
    raise NotImplementedError
