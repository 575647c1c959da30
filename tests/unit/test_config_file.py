"""The TOML config file: tables become flags, checked like flags."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from talkwire.config_file import table_arguments
from talkwire.errors import ConfigError

KNOWN = {"--listen", "--workers", "--flow-cache", "--pin-cpus", "--verify-integrity", "--config"}

FLEET = """
[relay]
listen = ["0.0.0.0:3478", "[::]:3478"]
workers = 2
pin-cpus = true
verify-integrity = false

[agent]
listen = "0.0.0.0:8090"

[agent.voice]
listen = "0.0.0.0:8091"
"""


def test_a_table_becomes_flags_lists_repeat_and_switches_appear_only_when_true() -> None:
    assert table_arguments(FLEET, "f.toml", ["relay"], KNOWN) == [
        "--listen", "0.0.0.0:3478", "--listen", "[::]:3478", "--workers", "2", "--pin-cpus",
    ]  # fmt: skip


def test_a_sub_table_follows_its_parent_so_it_wins() -> None:
    args = table_arguments(FLEET, "f.toml", ["agent", "voice"], KNOWN)
    assert args == ["--listen", "0.0.0.0:8090", "--listen", "0.0.0.0:8091"]
    assert table_arguments(FLEET, "f.toml", ["agent", "echo"], KNOWN) == [
        "--listen", "0.0.0.0:8090",
    ]  # fmt: skip
    assert table_arguments(FLEET, "f.toml", ["signaling"], KNOWN) == []


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[relay]\nworkrs = 2\n", r"f.toml \[relay\]: unknown key 'workrs'"),
        ("[relay]\nconfig = 'other.toml'\n", r"unknown key 'config'"),
        ("[relay]\nlisten = {a = 1}\n", r"^$"),  # a sub-table is not a flag: ignored
        ("[relay]\nworkers = [[1]]\n", r"'workers' must be a string, number"),
        ("relay = 3\n", r"\[relay\] must be a table"),
        ("[relay\n", r"f.toml: not TOML"),
    ],
)
def test_mistakes_name_the_file_table_and_key(text: str, message: str) -> None:
    if message == "^$":
        assert table_arguments(text, "f.toml", ["relay"], KNOWN) == []
        return
    with pytest.raises(ConfigError, match=message):
        table_arguments(text, "f.toml", ["relay"], KNOWN)


def run(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "talkwire.cli", *args],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
        check=False,
    )


def test_the_command_line_checks_the_file_like_flags_and_wins_over_it(tmp_path: Path) -> None:
    config = tmp_path / "talkwire.toml"
    config.write_text("[token]\nnope = 1\n")
    done = run("token", "keygen", "--config", str(config))
    assert done.returncode == 2
    assert "unknown key 'nope'" in done.stderr and str(config) in done.stderr
    done = run("token", "keygen", "--config", str(tmp_path / "missing.toml"))
    assert done.returncode == 2 and "missing.toml" in done.stderr
