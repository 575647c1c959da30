"""talkwire.route_token against docs/wire.md "Route token", re-derived here independently."""

from __future__ import annotations

import base64
import hmac
import ipaddress
import re
import struct
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from talkwire import route_token
from talkwire.errors import ConfigError, TokenError
from talkwire.route_token import Keyring, RouteToken
from talkwire.secret_files import write_private

SECRET_1 = bytes(range(32))
SECRET_2 = bytes(range(100, 140))
ICE_CHARS = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
NONCE = b"\x01\x02\x03\x04\x05\x06\x07"
FUZZ = settings(max_examples=400, deadline=None)


def reference_token(
    secret: bytes,
    *,
    key_id: int,
    cluster: int,
    host: str,
    port: int,
    nonce: bytes,
    version: int = 1,
    family: int | None = None,
) -> str:
    """docs/wire.md, written out with the standard library only."""
    ip = ipaddress.ip_address(host)
    fam = family if family is not None else (4 if ip.version == 4 else 6)
    body = bytes([version << 4 | key_id, cluster, fam]) + ip.packed + struct.pack("!H", port)
    body += nonce
    mac_key = hmac.digest(secret, b"talkwire route-token mac v1", "sha256")
    mac = hmac.digest(mac_key, body, "sha256")[:8]
    return base64.b64encode(body + mac).decode()


def reference_password(secret: bytes, ufrag: str) -> str:
    pwd_key = hmac.digest(secret, b"talkwire ice-pwd v1", "sha256")
    return base64.b64encode(hmac.digest(pwd_key, ufrag.encode(), "sha256")).decode()[:32]


@pytest.fixture
def keyring() -> Keyring:
    return Keyring(1, {1: SECRET_1})


# --- layout and round trips -----------------------------------------------------


@pytest.mark.parametrize(
    ("host", "chars"),
    [("10.0.0.5", 32), ("192.168.255.254", 32), ("::1", 48), ("2001:db8::42", 48)],
)
def test_mint_matches_the_spec_byte_for_byte(keyring: Keyring, host: str, chars: int) -> None:
    ufrag = route_token.mint(keyring, 7, (host, 4000), nonce=NONCE)
    expected = reference_token(SECRET_1, key_id=1, cluster=7, host=host, port=4000, nonce=NONCE)
    assert ufrag == expected
    assert len(ufrag) == chars
    assert re.fullmatch(r"[A-Za-z0-9+/]+", ufrag)


@pytest.mark.parametrize(
    ("given_host", "decoded_host"),
    [
        ("10.0.0.5", "10.0.0.5"),
        ("127.0.0.1", "127.0.0.1"),
        ("::1", "::1"),
        ("2001:DB8:0:0:0:0:0:1", "2001:db8::1"),  # printed the way ipaddress prints it
        ("fd00::abcd:5", "fd00::abcd:5"),
        ("::ffff:10.1.2.3", "10.1.2.3"),  # IPv4-mapped is stored as IPv4
    ],
)
def test_round_trip(keyring: Keyring, given_host: str, decoded_host: str) -> None:
    ufrag = route_token.mint(keyring, 255, (given_host, 65535), nonce=NONCE)
    expected = RouteToken(1, 1, 255, (decoded_host, 65535), NONCE)
    assert route_token.verify(keyring, ufrag) == expected
    assert route_token.verify(keyring, ufrag.encode("ascii")) == expected
    assert route_token.decode_unverified(ufrag) == expected


def test_cluster_and_port_bounds_round_trip(keyring: Keyring) -> None:
    for cluster, port in [(0, 1), (255, 65535), (128, 3478)]:
        ufrag = route_token.mint(keyring, cluster, ("10.9.8.7", port))
        token = route_token.verify(keyring, ufrag)
        assert (token.cluster, token.address[1]) == (cluster, port)


def test_nonce_is_random_per_mint(keyring: Keyring) -> None:
    ufrags = {route_token.mint(keyring, 1, ("10.0.0.1", 9)) for _ in range(50)}
    assert len(ufrags) == 50
    nonces = {route_token.verify(keyring, u).nonce for u in ufrags}
    assert len(nonces) == 50 and all(len(n) == 7 for n in nonces)


@pytest.mark.parametrize(
    ("cluster", "address", "nonce", "message"),
    [
        (-1, ("10.0.0.1", 9), None, "cluster -1"),
        (256, ("10.0.0.1", 9), None, "cluster 256"),
        (1, ("10.0.0.1", 0), None, "port 0"),
        (1, ("10.0.0.1", 65536), None, "port 65536"),
        (1, ("localhost", 9), None, "not an IP address"),
        (1, ("10.0.0", 9), None, "not an IP address"),
        (1, ("fe80::1%eth0", 9), None, "scoped"),
        (1, ("10.0.0.1", 9), b"123456", "nonce must be 7 bytes"),
        (1, ("10.0.0.1", 9), b"12345678", "nonce must be 7 bytes"),
    ],
)
def test_mint_rejects_bad_input(
    keyring: Keyring,
    cluster: int,
    address: tuple[str, int],
    nonce: bytes | None,
    message: str,
) -> None:
    with pytest.raises(TokenError, match=message):
        route_token.mint(keyring, cluster, address, nonce=nonce)


# --- tampering ------------------------------------------------------------------


@pytest.mark.parametrize("host", ["10.0.0.5", "2001:db8::42"])
def test_any_single_bit_flip_is_rejected(keyring: Keyring, host: str) -> None:
    raw = base64.b64decode(route_token.mint(keyring, 3, (host, 4000), nonce=NONCE))
    for bit in range(len(raw) * 8):
        flipped = bytearray(raw)
        flipped[bit // 8] ^= 0x80 >> (bit % 8)
        with pytest.raises(TokenError):
            route_token.verify(keyring, base64.b64encode(flipped).decode())


@pytest.mark.parametrize("host", ["10.0.0.5", "2001:db8::42"])
def test_any_single_char_change_is_rejected(keyring: Keyring, host: str) -> None:
    ufrag = route_token.mint(keyring, 3, (host, 4000), nonce=NONCE)
    for i, original in enumerate(ufrag):
        for char in ICE_CHARS.replace(original, "") + "=-:\n ":
            changed = ufrag[:i] + char + ufrag[i + 1 :]
            with pytest.raises(TokenError):
                route_token.verify(keyring, changed)


def test_wrong_secret_is_rejected(keyring: Keyring) -> None:
    ufrag = route_token.mint(keyring, 3, ("10.0.0.5", 4000))
    other = Keyring(1, {1: SECRET_2})
    with pytest.raises(TokenError, match=r"^route token: MAC does not match$"):
        route_token.verify(other, ufrag)


def test_key_rotation() -> None:
    old = Keyring(1, {1: SECRET_1})
    ufrag = route_token.mint(old, 3, ("10.0.0.5", 4000))
    rotated = Keyring(2, {1: SECRET_1, 2: SECRET_2})
    assert route_token.verify(rotated, ufrag).key_id == 1
    assert route_token.ice_password(rotated, ufrag) == route_token.ice_password(old, ufrag)
    new = route_token.mint(rotated, 3, ("10.0.0.5", 4000))
    assert route_token.verify(rotated, new).key_id == 2
    with pytest.raises(TokenError, match="unknown key id 2"):
        route_token.verify(old, new)

    retired = Keyring(2, {2: SECRET_2})
    with pytest.raises(TokenError, match=r"^route token: unknown key id 1$"):
        route_token.verify(retired, ufrag)
    with pytest.raises(TokenError, match="unknown key id 1"):
        route_token.ice_password(retired, ufrag)


def test_same_secret_under_another_key_id_is_rejected() -> None:
    # The key id is inside the MAC: relabelling a key must not validate old tokens.
    ufrag = route_token.mint(Keyring(1, {1: SECRET_1}), 3, ("10.0.0.5", 4000))
    raw = bytearray(base64.b64decode(ufrag))
    raw[0] = (raw[0] & 0xF0) | 2
    relabelled = base64.b64encode(raw).decode()
    with pytest.raises(TokenError, match="MAC"):
        route_token.verify(Keyring(2, {1: SECRET_1, 2: SECRET_1}), relabelled)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"version": 2}, "unsupported version 2"),
        ({"version": 0}, "unsupported version 0"),
        ({"family": 6}, "family 6 does not match length 24"),
        ({"family": 5}, "family 5 does not match"),
        ({"port": 0}, "port 0"),
    ],
)
def test_well_signed_but_invalid_fields_are_rejected(kwargs: dict[str, int], message: str) -> None:
    args: dict[str, object] = {
        "key_id": 1,
        "cluster": 1,
        "host": "10.0.0.1",
        "port": 9,
        "nonce": NONCE,
        **kwargs,
    }
    ufrag = reference_token(SECRET_1, **args)  # type: ignore[arg-type]
    with pytest.raises(TokenError, match=message):
        route_token.verify(Keyring(1, {1: SECRET_1}), ufrag)
    with pytest.raises(TokenError, match=message):
        route_token.decode_unverified(ufrag)


# --- shape checks before decoding -----------------------------------------------------


@pytest.mark.parametrize(
    "ufrag",
    [
        "",
        "abc",
        "A" * 31,
        "A" * 33,
        "A" * 47,
        "A" * 49,
        "A" * 256,
        "A" * 257,
        "A" * 31 + "=",
        "A" * 31 + "-",
        "A" * 31 + ":",
        "A" * 31 + "\n",
        "A" * 32 + "\n",
        "A" * 30 + "==",
        "A" * 31 + "é",
        "A" * 31 + "\x00",
        b"A" * 31 + b"\xff",
    ],
)
def test_malformed_shapes_are_rejected(keyring: Keyring, ufrag: str | bytes) -> None:
    with pytest.raises(TokenError, match="not 32 or 48 ice-chars"):
        route_token.verify(keyring, ufrag)
    with pytest.raises(TokenError, match="not 32 or 48 ice-chars"):
        route_token.decode_unverified(ufrag)
    if isinstance(ufrag, str):
        with pytest.raises(TokenError):
            route_token.ice_password(keyring, ufrag)


def test_trailing_newline_after_valid_token_is_rejected(keyring: Keyring) -> None:
    ufrag = route_token.mint(keyring, 1, ("10.0.0.1", 9))
    with pytest.raises(TokenError):
        route_token.verify(keyring, ufrag + "\n")
    with pytest.raises(TokenError):
        route_token.verify(keyring, (ufrag + "\n").encode())


def test_decode_unverified_ignores_the_mac(keyring: Keyring) -> None:
    raw = bytearray(base64.b64decode(route_token.mint(keyring, 4, ("10.0.0.1", 9), nonce=NONCE)))
    raw[-1] ^= 0xFF
    forged = base64.b64encode(raw).decode()
    assert route_token.decode_unverified(forged) == RouteToken(1, 1, 4, ("10.0.0.1", 9), NONCE)
    with pytest.raises(TokenError, match="MAC"):
        route_token.verify(keyring, forged)


# --- ICE password -------------------------------------------------------------------


def test_password_matches_spec_and_is_ice_chars(keyring: Keyring) -> None:
    ufrag = route_token.mint(keyring, 1, ("10.0.0.1", 9))
    pwd = route_token.ice_password(keyring, ufrag)
    assert pwd == reference_password(SECRET_1, ufrag)
    assert re.fullmatch(r"[A-Za-z0-9+/]{32}", pwd)
    assert route_token.ice_password(keyring, ufrag.encode()) == pwd


def test_password_differs_per_ufrag_and_secret(keyring: Keyring) -> None:
    ufrags = [route_token.mint(keyring, 1, ("10.0.0.1", 9)) for _ in range(20)]
    assert len({route_token.ice_password(keyring, u) for u in ufrags}) == 20
    other = Keyring(1, {1: SECRET_2})
    assert route_token.ice_password(keyring, ufrags[0]) != route_token.ice_password(
        other, ufrags[0]
    )
    # Independent of the MAC key: knowing a ufrag's MAC tells nothing of the pwd.
    assert reference_password(SECRET_1, ufrags[0]) != reference_password(SECRET_2, ufrags[0])


# --- keyring --------------------------------------------------------------------


def test_keyring_file_round_trip(tmp_path: Path) -> None:
    ring = Keyring(2, {1: SECRET_1, 2: SECRET_2})
    path = tmp_path / "keyring"
    write_private(path, ring.to_text())
    loaded = Keyring.from_file(path)
    assert loaded == ring
    assert loaded.current == 2 and dict(loaded.keys) == {1: SECRET_1, 2: SECRET_2}
    assert Keyring.from_file(str(path)) == ring


def test_keyring_file_with_comments(tmp_path: Path) -> None:
    path = tmp_path / "keyring"
    write_private(
        path,
        "# rotated 2024-05-01\n"
        "\n"
        f"1  {SECRET_1.hex()}   # previous\n"
        f"  2\t{SECRET_2.hex().upper()}  current\n",
    )
    ring = Keyring.from_file(path)
    assert ring.current == 2 and ring.keys[1] == SECRET_1 and ring.keys[2] == SECRET_2


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (f"1 {SECRET_1.hex()}\n16 {SECRET_2.hex()} current\n", r":2: key id 16 out of range"),
        (f"1 {SECRET_1.hex()[:62]} current\n", r":1: secret is 31 bytes"),
        (f"# c\n1 {SECRET_1.hex()}0 current\n", r":2: secret has an odd number"),
        (f"1 {SECRET_1.hex()}\n1 {SECRET_2.hex()} current\n", r":2: key id 1 listed twice"),
        (f"1 {SECRET_1.hex()}\n", r"exactly one key must be marked 'current' \(found 0\)"),
        (f"1 {SECRET_1.hex()} current\n2 {SECRET_2.hex()} current\n", r"\(found 2\)"),
        (f"1 {SECRET_1.hex()} current extra\n", r":1: expected"),
        (f"one {SECRET_1.hex()} current\n", r":1: expected"),
        (f"1 {SECRET_1.hex()[:-1]}z current\n", r":1: expected"),
        ("", r"found 0"),
    ],
)
def test_keyring_file_errors_name_the_line(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "ring.txt"
    write_private(path, text)
    with pytest.raises(ConfigError, match=message) as info:
        Keyring.from_file(path)
    assert str(path) in str(info.value)
    assert SECRET_1.hex() not in str(info.value)


def test_keyring_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"keyring file not found: .*nope"):
        Keyring.from_file(tmp_path / "nope")


@pytest.mark.parametrize(
    ("current", "keys", "message"),
    [
        (1, {}, "current key id 1 has no secret"),
        (2, {1: SECRET_1}, "current key id 2 has no secret"),
        (1, {1: b"short"}, "5 bytes"),
        (16, {16: SECRET_1}, "key id 16 out of range"),
    ],
)
def test_keyring_validates(current: int, keys: dict[int, bytes], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        Keyring(current, keys)


def test_keyring_generate() -> None:
    a, b = Keyring.generate(), Keyring.generate(7)
    assert a.current == 1 and len(a.keys[1]) >= 32
    assert b.current == 7 and list(b.keys) == [7]
    assert a.keys[1] != Keyring.generate().keys[1]
    assert Keyring.from_text(b.to_text()) == b


def test_keyring_repr_hides_secrets() -> None:
    ring = Keyring(2, {1: SECRET_1, 2: SECRET_2})
    for text in (repr(ring), str(ring)):
        assert SECRET_1.hex() not in text and SECRET_2.hex() not in text
        assert "current=2" in text and "[1, 2]" in text
    assert str(SECRET_1) not in repr(ring)


def test_keyring_copies_its_keys() -> None:
    keys = {1: SECRET_1}
    ring = Keyring(1, keys)
    ufrag = route_token.mint(ring, 1, ("10.0.0.1", 9))
    keys[1] = SECRET_2  # a caller's later mutation must not desync the derived keys
    assert ring.keys[1] == SECRET_1
    assert route_token.verify(ring, ufrag).cluster == 1


@given(st.binary(max_size=200))
@FUZZ
def test_prekeyed_hmac_equals_hmac(key: bytes) -> None:
    # Private, but the MAC's correctness rests on it; include keys longer than a block.
    message = key[::-1] + b"message"
    prekeyed = route_token._PrekeyedHmac(key)
    assert prekeyed.digest(message) == hmac.digest(key, message, "sha256")


# --- fuzzing ---------------------------------------------------------------------------

ICE_TEXT = st.one_of(
    st.text(alphabet=ICE_CHARS, min_size=32, max_size=32),
    st.text(alphabet=ICE_CHARS, min_size=48, max_size=48),
)
UFRAGS = st.one_of(
    st.text(max_size=300),
    st.binary(max_size=300),
    ICE_TEXT,
    ICE_TEXT.map(str.encode),
    # Forged bodies with the right version nibble, so the decode gets past it.
    st.sampled_from([24, 36]).flatmap(
        lambda n: st.binary(min_size=n - 1, max_size=n - 1).map(
            lambda b: base64.b64encode(b"\x11" + b).decode()
        )
    ),
)


@FUZZ
@given(UFRAGS)
def test_fuzz_verify(ufrag: str | bytes) -> None:
    ring = Keyring(1, {1: SECRET_1})
    with pytest.raises(TokenError):  # a random forgery passing a 64-bit MAC: never
        route_token.verify(ring, ufrag)


@FUZZ
@given(UFRAGS)
def test_fuzz_decode_unverified(ufrag: str | bytes) -> None:
    try:
        token = route_token.decode_unverified(ufrag)
    except TokenError:
        return
    assert token.version == 1 and 0 <= token.key_id <= 15 and 0 <= token.cluster <= 255
    assert 0 < token.address[1] <= 65535 and len(token.nonce) == 7
    assert str(ipaddress.ip_address(token.address[0])) == token.address[0]


@FUZZ
@given(UFRAGS)
def test_fuzz_ice_password(ufrag: str | bytes) -> None:
    ring = Keyring(1, {1: SECRET_1})
    try:
        pwd = route_token.ice_password(ring, ufrag)
    except TokenError:
        return
    assert re.fullmatch(r"[A-Za-z0-9+/]{32}", pwd)


@FUZZ
@given(
    st.integers(0, 255),
    st.one_of(st.ip_addresses(v=4), st.ip_addresses(v=6)),
    st.integers(1, 65535),
    st.binary(min_size=7, max_size=7),
)
def test_fuzz_round_trip(
    cluster: int, ip: ipaddress.IPv4Address | ipaddress.IPv6Address, port: int, nonce: bytes
) -> None:
    ring = Keyring(1, {1: SECRET_1})
    ufrag = route_token.mint(ring, cluster, (str(ip), port), nonce=nonce)
    mapped = ip.ipv4_mapped if isinstance(ip, ipaddress.IPv6Address) else None
    host = str(mapped or ip)
    assert len(ufrag) == (32 if ip.version == 4 or mapped else 48)
    assert route_token.verify(ring, ufrag) == RouteToken(1, 1, cluster, (host, port), nonce)


def test_a_retired_key_verifies_until_its_grace_ends_and_survives_the_file() -> None:
    old = Keyring(1, {1: SECRET_1})
    issued = route_token.mint(old, 3, ("10.0.0.1", 4000))
    rotated = old.rotated(2, SECRET_2, grace_s=60, now=1_000_000)
    assert rotated.current == 2 and rotated.until == {1: 1_000_060}
    again = Keyring.from_text(rotated.to_text())
    assert again.until == {1: 1_000_060} and "until=1970-01-12T13:47:40Z" in rotated.to_text()
    assert route_token.verify(again.live(1_000_059), issued).key_id == 1
    ended = again.live(1_000_060)
    assert sorted(ended.keys) == [2] and ended.until == {}
    with pytest.raises(TokenError, match="unknown key id 1"):
        route_token.verify(ended, issued)
    assert ended.live(2_000_000) is ended  # nothing to drop: the same keyring


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (f"1 {SECRET_1.hex()} until=2026-12-07T18:00:00Z\n", "exactly one key"),
        (f"1 {SECRET_1.hex()} current\n2 {SECRET_2.hex()} until=tomorrow\n", "UTC time"),
        (f"1 {SECRET_1.hex()} current\n2 {SECRET_2.hex()} until=2026-12-07T18:00\n", "UTC"),
        (f"1 {SECRET_1.hex()} current until=2026-12-07T18:00:00Z\n", "expected"),
    ],
)
def test_a_bad_until_is_refused_with_its_line(text: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        Keyring.from_text(text, source="ring")


def test_a_key_id_still_in_its_grace_cannot_be_reused_by_a_rotation() -> None:
    once = Keyring(1, {1: SECRET_1}).rotated(2, SECRET_2, grace_s=60, now=1_000_000)
    with pytest.raises(ConfigError, match="key id 1 is still accepted"):
        once.rotated(1, b"\x03" * 32, grace_s=60, now=1_000_010)
    assert once.rotated(1, b"\x03" * 32, grace_s=60, now=1_000_060).current == 1  # grace over
