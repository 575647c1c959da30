"""The keyring watcher: a rotated file is taken, a broken one refused with the old keys kept,
and a retired key dropped when its grace ends."""

from __future__ import annotations

from pathlib import Path

import pytest

from talkwire.keyring_watch import KeyringWatch
from talkwire.route_token import Keyring
from talkwire.secret_files import write_private


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def ring(tmp_path: Path) -> Path:
    path = tmp_path / "keyring"
    write_private(path, Keyring.generate(1).to_text())
    return path


def test_a_rotation_is_taken_at_the_next_poll_and_the_old_key_kept_for_its_grace(
    ring: Path,
) -> None:
    clock = Clock()
    watch = KeyringWatch(ring, clock=clock, interval_s=1.0)
    first = watch.keyring
    assert watch.poll(0.0) is False  # nothing changed
    write_private(ring, first.rotated(2, b"\x02" * 32, grace_s=60, now=clock.now).to_text())
    assert watch.poll(0.5) is False  # not yet an interval since the last look
    assert watch.poll(1.0) is True
    assert watch.keyring.current == 2 and sorted(watch.keyring.keys) == [1, 2]
    assert watch.reloads == 1 and watch.errors == 0
    clock.now += 59
    assert watch.poll(2.0) is False
    clock.now += 1  # the grace ends: no file change needed to drop the key
    assert watch.poll(3.0) is True
    assert sorted(watch.keyring.keys) == [2]


@pytest.mark.parametrize("damage", ["garbage", "mode", "missing"])
def test_a_broken_file_is_refused_counted_and_the_keys_in_use_stay(
    ring: Path, damage: str, caplog: pytest.LogCaptureFixture
) -> None:
    watch = KeyringWatch(ring, interval_s=0.0)
    keys = watch.keyring
    if damage == "garbage":
        write_private(ring, "1 nothex current\n")
    elif damage == "mode":
        ring.chmod(0o644)
    else:
        ring.unlink()
    assert watch.poll(1.0) is False
    assert watch.keyring is keys and watch.errors == 1
    assert "keeping key ids [1]" in caplog.text
    assert keys.keys[1].hex() not in caplog.text
    assert watch.poll(2.0) is False and watch.errors == 1  # counted once, not every poll
    fixed = Keyring.generate(5)
    write_private(ring, fixed.to_text())  # also puts the mode right
    assert watch.poll(3.0) is True and watch.keyring.current == 5 and watch.reloads == 1


def test_a_key_whose_grace_ended_before_the_start_is_not_kept(ring: Path) -> None:
    clock = Clock()
    ended = Keyring.from_file(ring).rotated(2, b"\x02" * 32, grace_s=10, now=clock.now - 60)
    write_private(ring, ended.to_text())
    watch = KeyringWatch(ring, Keyring.from_file(ring), clock=clock)
    assert sorted(watch.keyring.keys) == [2]
