"""The internal secret: where it comes from, what a request must carry, and the warning
when an internal port is open to the network without one."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
from aiohttp.test_utils import make_mocked_request

from talkwire.errors import ConfigError
from talkwire.internal_auth import SECRET_ENV, authorized, bearer, load_secret, warn_if_exposed
from talkwire.secret_files import write_private

SECRET = "k" * 40


def test_the_file_wins_over_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(SECRET_ENV, "e" * 40)
    path = tmp_path / "secret"
    write_private(path, f"# internal\n{SECRET}\n")
    assert load_secret(path) == SECRET
    assert load_secret(None) == "e" * 40
    monkeypatch.delenv(SECRET_ENV)
    assert load_secret(None) is None


def test_a_short_empty_or_readable_secret_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(SECRET_ENV, "short")
    with pytest.raises(ConfigError, match=f"\\${SECRET_ENV}: .*at least 16"):
        load_secret(None)
    empty = tmp_path / "empty"
    write_private(empty, "# nothing\n\n")
    with pytest.raises(ConfigError, match="holds no secret"):
        load_secret(empty)
    shared = tmp_path / "shared"
    shared.write_text(SECRET)
    shared.chmod(0o644)
    with pytest.raises(ConfigError, match="chmod 600"):
        load_secret(shared)


@pytest.mark.parametrize(
    ("header", "ok"),
    [
        (f"Bearer {SECRET}", True),
        (f"bearer {SECRET}", True),  # the scheme is case-insensitive (RFC 9110)
        (f"Bearer {SECRET}x", False),
        (f"Basic {SECRET}", False),
        (SECRET, False),
        ("Bearer ", False),
        ("Bearer ü" + SECRET, False),
    ],
)
def test_only_the_exact_bearer_secret_is_authorized(header: str, ok: bool) -> None:
    request = make_mocked_request("POST", "/calls", headers={"Authorization": header})
    assert authorized(request, SECRET) is ok
    assert authorized(make_mocked_request("POST", "/calls"), SECRET) is False


def test_no_secret_sends_no_header() -> None:
    assert bearer(None) == {}
    assert bearer(SECRET) == {"Authorization": f"Bearer {SECRET}"}


@pytest.mark.parametrize(
    ("host", "secret", "warned"),
    [
        ("0.0.0.0", None, True),
        ("10.1.2.3", None, True),
        ("[::]", None, True),
        ("127.0.0.1", None, False),
        ("::1", None, False),
        ("localhost", None, False),
        ("0.0.0.0", SECRET, False),
    ],
)
def test_an_open_internal_port_off_loopback_is_warned_about(
    caplog: pytest.LogCaptureFixture, host: str, secret: str | None, warned: bool
) -> None:
    with caplog.at_level(logging.WARNING, logger="talkwire.internal_auth"):
        warn_if_exposed("the transceiver API", host, secret)
    assert bool(caplog.records) is warned
    if warned:
        assert SECRET_ENV in caplog.text and host in caplog.text
