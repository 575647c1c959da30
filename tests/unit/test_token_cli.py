"""`talkwire token ...` through talkwire.cli.main, plus one run of the console script."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest

from talkwire import cli, route_token
from talkwire.route_token import Keyring
from talkwire.secret_files import write_private

SECRET_1 = bytes(range(32))
SECRET_2 = bytes(range(50, 90))


@pytest.fixture(autouse=True)
def _restore_argv(monkeypatch: pytest.MonkeyPatch) -> None:
    # cli.main(argv) rewrites sys.argv; give it back after each test.
    monkeypatch.setattr(sys, "argv", ["talkwire"])


@pytest.fixture
def ring_file(tmp_path: Path) -> Path:
    path = tmp_path / "keyring"
    write_private(path, Keyring(2, {1: SECRET_1, 2: SECRET_2}).to_text())
    return path


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = cli.main(["token", *argv])
    out, err = capsys.readouterr()
    return code, out, err


def fields(out: str) -> dict[str, str]:
    return dict(line.split(": ", 1) for line in out.splitlines())


def assert_no_secret(*texts: str) -> None:
    for text in texts:
        for secret in (SECRET_1, SECRET_2):
            assert secret.hex() not in text.lower()


def test_mint_prints_ufrag_and_pwd(capsys: pytest.CaptureFixture[str], ring_file: Path) -> None:
    code, out, err = run(
        capsys,
        "mint",
        "--keyring",
        str(ring_file),
        "--cluster",
        "17",
        "--transceiver",
        "10.2.3.4:4000",
    )
    assert code == 0 and err == ""
    lines = out.splitlines()
    assert [line.split(" ")[0] for line in lines] == ["ufrag", "pwd"]
    ufrag, pwd = (line.split(" ", 1)[1] for line in lines)
    ring = Keyring.from_file(ring_file)
    token = route_token.verify(ring, ufrag)
    assert (token.key_id, token.cluster, token.address) == (2, 17, ("10.2.3.4", 4000))
    assert pwd == route_token.ice_password(ring, ufrag)
    assert_no_secret(out, err)


def test_mint_ipv6(capsys: pytest.CaptureFixture[str], ring_file: Path) -> None:
    code, out, _ = run(
        capsys,
        "mint",
        "--keyring",
        str(ring_file),
        "--cluster",
        "0",
        "--transceiver",
        "[::1]:65535",
    )
    assert code == 0
    ufrag = out.splitlines()[0].split(" ")[1]
    assert len(ufrag) == 48
    assert route_token.verify(Keyring.from_file(ring_file), ufrag).address == ("::1", 65535)


@pytest.mark.parametrize(
    ("transceiver", "message"),
    [
        ("10.2.3.4", "is not HOST:PORT"),
        ("10.2.3.4:", "is not HOST:PORT"),
        ("::1:4000", "is not HOST:PORT"),
        ("[::1]", "is not HOST:PORT"),
        ("[10.2.3.4]:4000", "write IPv6 as"),
        ("transceiver.local:4000", "is not an IP address"),
        ("10.2.3:4000", "is not an IP address"),
        ("10.2.3.4:0", "port 0 out of range"),
        ("10.2.3.4:70000", "port 70000 out of range"),
        ("[fe80::1%eth0]:4000", "scoped"),
    ],
)
def test_mint_bad_address(
    capsys: pytest.CaptureFixture[str], ring_file: Path, transceiver: str, message: str
) -> None:
    code, out, err = run(
        capsys, "mint", "--keyring", str(ring_file), "--cluster", "1", "--transceiver", transceiver
    )
    assert code == 2 and out == ""
    assert err.startswith("talkwire token: error: ") and message in err
    assert len(err.splitlines()) == 1


@pytest.mark.parametrize("cluster", ["256", "-1", "x", "1.5", ""])
def test_mint_bad_cluster(
    capsys: pytest.CaptureFixture[str], ring_file: Path, cluster: str
) -> None:
    code, out, err = run(
        capsys,
        "mint",
        "--keyring",
        str(ring_file),
        "--cluster",
        cluster,
        "--transceiver",
        "10.0.0.1:9",
    )
    assert code == 2 and out == ""
    assert f"cluster {cluster!r} is not an integer 0..255" in err


def test_mint_missing_keyring(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    missing = tmp_path / "absent.keyring"
    code, out, err = run(
        capsys, "mint", "--keyring", str(missing), "--cluster", "1", "--transceiver", "10.0.0.1:9"
    )
    assert code == 2 and out == ""
    assert f"keyring file not found: {missing}" in err


def test_mint_bad_keyring_names_the_line(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    path = tmp_path / "bad.keyring"
    write_private(path, f"# ok\n1 {SECRET_1.hex()} current\n2 nothex\n")
    code, _, err = run(
        capsys, "mint", "--keyring", str(path), "--cluster", "1", "--transceiver", "10.0.0.1:9"
    )
    assert code == 2 and f"{path}:3:" in err
    assert_no_secret(err)


def mint_with(ring: Keyring, address: tuple[str, int] = ("10.2.3.4", 4000)) -> str:
    return route_token.mint(ring, 9, address, nonce=bytes.fromhex("00112233445566"))


def test_inspect_without_keyring(capsys: pytest.CaptureFixture[str]) -> None:
    ufrag = mint_with(Keyring(1, {1: SECRET_1}))
    code, out, err = run(capsys, "inspect", ufrag)
    assert code == 0 and err == ""
    assert fields(out) == {
        "version": "1",
        "key id": "1",
        "cluster": "9",
        "transceiver": "10.2.3.4:4000",
        "nonce": "00112233445566",
        "mac": "unchecked (no keyring)",
    }


def test_inspect_ipv6_is_bracketed(capsys: pytest.CaptureFixture[str]) -> None:
    ufrag = mint_with(Keyring(1, {1: SECRET_1}), ("fd00::7", 3478))
    code, out, _ = run(capsys, "inspect", ufrag)
    assert code == 0 and fields(out)["transceiver"] == "[fd00::7]:3478"


def test_inspect_verified(capsys: pytest.CaptureFixture[str], ring_file: Path) -> None:
    ufrag = mint_with(Keyring(1, {1: SECRET_1}))  # previous key of ring_file
    code, out, err = run(capsys, "inspect", ufrag, "--keyring", str(ring_file))
    assert code == 0
    assert fields(out)["mac"] == "verified"
    assert_no_secret(out, err)


def test_inspect_invalid_mac_exits_1(capsys: pytest.CaptureFixture[str], ring_file: Path) -> None:
    forged = mint_with(Keyring(2, {2: SECRET_1}))  # key id 2 of ring_file, wrong secret
    code, out, err = run(capsys, "inspect", forged, "--keyring", str(ring_file))
    assert code == 1
    assert fields(out)["mac"].startswith("INVALID")
    assert fields(out)["cluster"] == "9"  # the fields are still shown
    assert_no_secret(out, err)


def test_inspect_unknown_key_exits_1(capsys: pytest.CaptureFixture[str], ring_file: Path) -> None:
    ufrag = mint_with(Keyring(5, {5: SECRET_1}))
    code, out, _ = run(capsys, "inspect", ufrag, "--keyring", str(ring_file))
    assert code == 1
    assert fields(out)["mac"] == "INVALID (route token: unknown key id 5)"


@pytest.mark.parametrize("ufrag", ["abc", "A" * 32, "=" * 32])
def test_inspect_not_a_token(capsys: pytest.CaptureFixture[str], ufrag: str) -> None:
    code, out, err = run(capsys, "inspect", ufrag)
    assert code == 2 and out == ""
    assert "not a route token" in err


def test_keygen(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "keygen")
    assert code == 0
    ring = Keyring.from_text(out)
    assert ring.current == 1 and len(ring.keys[1]) == 32
    code, out2, _ = run(capsys, "keygen", "--key-id", "15")
    assert code == 0 and Keyring.from_text(out2).current == 15
    assert Keyring.from_text(out2).keys[15] != ring.keys[1]


@pytest.mark.parametrize("key_id", ["16", "-1", "one"])
def test_keygen_bad_key_id(capsys: pytest.CaptureFixture[str], key_id: str) -> None:
    code, out, err = run(capsys, "keygen", "--key-id", key_id)
    assert code == 2 and out == ""
    assert f"key id {key_id!r} is not an integer 0..15" in err


def test_keygen_rotate(capsys: pytest.CaptureFixture[str], ring_file: Path) -> None:
    old = Keyring.from_file(ring_file)
    code, out, _ = run(capsys, "keygen", "--key-id", "3", "--rotate", str(ring_file))
    assert code == 0
    new = Keyring.from_text(out)
    # Current becomes 3, the old current (2) stays as the previous key, key 1 retires.
    assert new.current == 3 and sorted(new.keys) == [2, 3]
    assert new.keys[2] == old.keys[2]
    issued = route_token.mint(old, 1, ("10.0.0.1", 9))
    assert route_token.verify(new, issued).key_id == 2

    code, _, err = run(capsys, "keygen", "--key-id", "2", "--rotate", str(ring_file))
    assert code == 2 and "already the current key" in err


def test_keygen_rotate_twice_gives_each_retired_key_its_own_grace(
    capsys: pytest.CaptureFixture[str], ring_file: Path
) -> None:
    first = Keyring.from_file(ring_file)  # current 2
    before = time.time()
    code, _, _ = run(
        capsys, "keygen", "--rotate", str(ring_file), "--grace", "90m", "--out", str(ring_file)
    )
    assert code == 0
    second = Keyring.from_file(ring_file)
    assert second.current == 3  # the next id when none is named
    assert before + 5400 - 1 <= second.until[2] <= time.time() + 5400
    code, _, _ = run(capsys, "keygen", "--rotate", str(ring_file), "--out", str(ring_file))
    third = Keyring.from_file(ring_file)
    assert third.current == 4 and sorted(third.until) == [2, 3]
    assert third.until[2] == pytest.approx(second.until[2], abs=1)  # kept, not extended
    assert third.until[3] >= before + 7 * 3600 - 1  # the default grace outlasts a call
    assert route_token.verify(third, route_token.mint(first, 1, ("10.0.0.1", 9))).key_id == 2
    assert sorted(third.live(third.until[2] + 1).keys) == [3, 4]


@pytest.mark.parametrize("grace", ["soon", "-5m", "6w", "1.5h"])
def test_keygen_bad_grace(capsys: pytest.CaptureFixture[str], ring_file: Path, grace: str) -> None:
    code, out, err = run(capsys, "keygen", "--rotate", str(ring_file), f"--grace={grace}")
    assert code == 2 and out == ""
    assert "--grace: expected a duration like 90m" in err


def test_console_script_inspect(tmp_path: Path) -> None:
    script = Path(sys.executable).parent / "talkwire"
    ring = tmp_path / "keyring"
    keyring = Keyring(1, {1: SECRET_1})
    write_private(ring, keyring.to_text())
    ufrag = mint_with(keyring)
    result = subprocess.run(
        [str(script), "token", "inspect", ufrag, "--keyring", str(ring)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert fields(result.stdout)["mac"] == "verified"
    assert fields(result.stdout)["transceiver"] == "10.2.3.4:4000"


def test_keygen_rotates_a_file_in_place_and_keeps_it_private(
    capsys: pytest.CaptureFixture[str], ring_file: Path
) -> None:
    old = Keyring.from_file(ring_file)
    code, out, _ = run(
        capsys, "keygen", "--key-id", "4", "--rotate", str(ring_file), "--out", str(ring_file)
    )
    assert code == 0 and out == ""
    assert ring_file.stat().st_mode & 0o777 == 0o600
    new = Keyring.from_file(ring_file)
    assert new.current == 4 and new.keys[2] == old.keys[2]
