"""`talkwire token`: mint, inspect and generate keys for route tokens.

Prints tokens, derived ICE passwords and decoded fields; never a keyring
secret (``keygen`` output is the one exception: it *is* a new keyring file).
"""

from __future__ import annotations

import argparse
import re

from talkwire import route_token
from talkwire.config import format_address, parse_address
from talkwire.errors import ConfigError, TokenError
from talkwire.secret_files import write_private


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="token_command", required=True, metavar="ACTION")

    mint = sub.add_parser("mint", help="mint a server ufrag and its ICE password")
    mint.add_argument("--keyring", required=True, metavar="FILE", help="keyring file")
    # Parsed by hand (not type=int) so a bad value gets talkwire's own one-line error.
    mint.add_argument("--cluster", required=True, metavar="N", help="cluster id 0..255")
    mint.add_argument(
        "--transceiver",
        required=True,
        metavar="HOST:PORT",
        help="transceiver UDP address, an IP literal ([::1]:port for IPv6)",
    )

    inspect = sub.add_parser("inspect", help="decode a ufrag and check its MAC")
    inspect.add_argument("ufrag", metavar="UFRAG")
    inspect.add_argument("--keyring", metavar="FILE", help="check the MAC with this keyring")

    keygen = sub.add_parser("keygen", help="print a new keyring file")
    keygen.add_argument("--key-id", default="1", metavar="N", help="key id 0..15 (default 1)")
    keygen.add_argument(
        "--rotate",
        metavar="FILE",
        help="keep FILE's current key as the previous one and add a new current key",
    )
    keygen.add_argument(
        "--out",
        metavar="FILE",
        help="write the keyring to FILE, mode 0600 (may be the --rotate FILE), not stdout",
    )


def run(args: argparse.Namespace) -> int:
    command: str = args.token_command
    if command == "mint":
        return _mint(args)
    if command == "inspect":
        return _inspect(args)
    return _keygen(args)


def _int_option(name: str, text: str, high: int) -> int:
    if re.fullmatch(r"\d{1,5}", text) is None or int(text) > high:
        raise ConfigError(f"{name} {text!r} is not an integer 0..{high}")
    return int(text)


def _mint(args: argparse.Namespace) -> int:
    keyring = route_token.Keyring.from_file(args.keyring)
    cluster = _int_option("cluster", args.cluster, route_token.MAX_CLUSTER)
    address = parse_address(args.transceiver, "transceiver address")
    try:
        ufrag = route_token.mint(keyring, cluster, address)
    except TokenError as exc:
        raise ConfigError(str(exc)) from exc
    print(f"ufrag {ufrag}")
    print(f"pwd {route_token.ice_password(keyring, ufrag)}")
    return 0


def _inspect(args: argparse.Namespace) -> int:
    keyring = route_token.Keyring.from_file(args.keyring) if args.keyring else None
    try:
        token = route_token.decode_unverified(args.ufrag)
    except TokenError as exc:
        raise ConfigError(f"not a route token: {exc}") from exc
    print(f"version: {token.version}")
    print(f"key id: {token.key_id}")
    print(f"cluster: {token.cluster}")
    print(f"transceiver: {format_address(token.address)}")
    print(f"nonce: {token.nonce.hex()}")
    if keyring is None:
        print("mac: unchecked (no keyring)")
        return 0
    try:
        route_token.verify(keyring, args.ufrag)
    except TokenError as exc:
        print(f"mac: INVALID ({exc})")
        return 1
    print("mac: verified")
    return 0


def _keygen(args: argparse.Namespace) -> int:
    key_id = _int_option("key id", args.key_id, route_token.MAX_KEY_ID)
    keyring = route_token.Keyring.generate(key_id)
    if args.rotate is not None:
        old = route_token.Keyring.from_file(args.rotate)
        if key_id == old.current:
            raise ConfigError(f"key id {key_id} is already the current key of {args.rotate}")
        keys = {old.current: old.keys[old.current], key_id: keyring.keys[key_id]}
        keyring = route_token.Keyring(key_id, keys)
    if args.out is None:
        print(keyring.to_text(), end="")
    else:
        write_private(args.out, keyring.to_text())
    return 0
