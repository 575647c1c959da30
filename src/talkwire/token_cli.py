"""`talkwire token`: mint, inspect and generate keys for route tokens.

Prints tokens, derived ICE passwords and decoded fields; never a keyring
secret (``keygen`` output is the one exception: it *is* a new keyring file).
"""

from __future__ import annotations

import argparse
import re
import time

from talkwire import route_token
from talkwire.config import format_address, parse_address
from talkwire.errors import ConfigError, TokenError
from talkwire.secret_files import write_private

# A call lasts at most signaling's call TTL (6 h); a token minted just before a
# rotation must verify at a restarted relay until then.
DEFAULT_GRACE = "7h"
_DURATION_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


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
    keygen.add_argument(
        "--key-id", metavar="N", help="key id 0..15 (default 1; with --rotate the next one)"
    )
    keygen.add_argument(
        "--rotate",
        metavar="FILE",
        help="add a new current key to FILE's keys; the old current one is accepted for --grace",
    )
    keygen.add_argument(
        "--grace",
        default=DEFAULT_GRACE,
        metavar="DURATION",
        help="how long the retired key stays accepted, e.g. 90m, 6h, 1d (default"
        f" {DEFAULT_GRACE}: a call minted before the rotation may last that long)",
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


def parse_duration(text: str, what: str) -> float:
    """Seconds in ``90``, ``90s``, ``30m``, ``6h`` or ``1d``."""
    match = re.fullmatch(r"(\d{1,7})([smhd]?)", text.strip())
    if match is None:
        raise ConfigError(f"{what}: expected a duration like 90m, 6h or 1d, got {text!r}")
    return float(int(match[1]) * _DURATION_UNITS[match[2] or "s"])


def _keygen(args: argparse.Namespace) -> int:
    if args.rotate is None:
        keyring = route_token.Keyring.generate(
            _int_option("key id", args.key_id or "1", route_token.MAX_KEY_ID)
        )
    else:
        old = route_token.Keyring.from_file(args.rotate)
        # The next id by default, so rotating again and again needs no bookkeeping.
        next_id = str((old.current + 1) % (route_token.MAX_KEY_ID + 1))
        key_id = _int_option("key id", args.key_id or next_id, route_token.MAX_KEY_ID)
        if key_id == old.current:
            raise ConfigError(f"key id {key_id} is already the current key of {args.rotate}")
        fresh = route_token.Keyring.generate(key_id).keys[key_id]
        grace_s = parse_duration(args.grace, "--grace")
        keyring = old.rotated(key_id, fresh, grace_s, time.time())
    if args.out is None:
        print(keyring.to_text(), end="")
    else:
        write_private(args.out, keyring.to_text())
    return 0
