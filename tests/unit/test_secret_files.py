"""Secret files must be private to their owner, and say how to fix them if not."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from talkwire.errors import ConfigError
from talkwire.route_token import Keyring
from talkwire.secret_files import read_private, secret_lines, write_private

NOBODY = 65534


def not_roots(path: Path) -> None:
    if os.geteuid() == 0:  # as any other user, the file is that user's already
        os.chown(path, NOBODY, -1)


@pytest.mark.parametrize("mode", [0o640, 0o604, 0o644, 0o660, 0o601])
def test_a_file_other_users_can_reach_is_refused_with_the_fix(tmp_path: Path, mode: int) -> None:
    path = tmp_path / "keyring"
    path.write_text(Keyring.generate().to_text())
    path.chmod(mode)
    not_roots(path)
    with pytest.raises(ConfigError, match=f"mode {mode:04o}.*chmod 600 {path}"):
        Keyring.from_file(path)


@pytest.mark.skipif(os.geteuid() != 0, reason="only root can give a file to root")
@pytest.mark.parametrize(("mode", "accepted"), [(0o640, True), (0o440, True), (0o660, False)])
def test_a_file_root_owns_may_be_read_by_its_group_as_kubernetes_mounts_secrets(
    tmp_path: Path, mode: int, accepted: bool
) -> None:
    path = tmp_path / "keyring"
    path.write_text(Keyring.generate().to_text())
    os.chown(path, 0, NOBODY)
    path.chmod(mode)
    if accepted:
        assert Keyring.from_file(path).keys
    else:
        with pytest.raises(ConfigError, match=f"mode {mode:04o}"):
            Keyring.from_file(path)
    path.chmod(0o644)  # the world: never, whoever owns it
    with pytest.raises(ConfigError, match="mode 0644"):
        Keyring.from_file(path)


def test_a_private_file_is_read(tmp_path: Path) -> None:
    path = tmp_path / "keys"
    write_private(path, "# ours\nsk-one\n\n  sk-two  \n")
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert secret_lines(read_private(path, "API key file")) == ["sk-one", "sk-two"]


def test_writing_over_a_readable_file_makes_it_private(tmp_path: Path) -> None:
    path = tmp_path / "keyring"
    path.write_text("old")
    path.chmod(0o644)
    write_private(path, "new")
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert read_private(path, "keyring file") == "new"


def test_a_missing_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=f"API key file not found: {tmp_path / 'nope'}"):
        read_private(tmp_path / "nope", "API key file")


def test_a_rewrite_replaces_the_file_whole_and_leaves_no_temporary(tmp_path: Path) -> None:
    path = tmp_path / "keyring"
    write_private(path, "old")
    with open(path, encoding="utf-8") as reader:  # opened before the rewrite: sees the old file
        write_private(path, "new")
        assert reader.read() == "old"
    assert read_private(path, "keyring file") == "new"
    assert [p.name for p in tmp_path.iterdir()] == ["keyring"]
