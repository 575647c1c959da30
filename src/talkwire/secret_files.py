"""Secrets kept in files: the route-token keyring, API keys, the internal secret.

A secret file that another user can read has leaked already, so a file with
any group or other permission bit set is refused, as ssh refuses such a
private key; the error says which chmod fixes it. One exception, PostgreSQL's
for its TLS key: a file owned by root may also be group-readable (0640 or
less). An administrator put it there for a service group, and it is how
Kubernetes hands a secret to a container that does not run as root (the
volume's files are root's, readable by the pod's fsGroup).
"""

from __future__ import annotations

import contextlib
import os
import stat
import tempfile

from talkwire.errors import ConfigError


def read_private(path: str | os.PathLike[str], what: str) -> str:
    """The text of ``path``; ConfigError if it is missing, unreadable or not private."""
    name = os.fspath(path)
    try:
        with open(name, encoding="utf-8") as f:
            info = os.fstat(f.fileno())
            group_may_read = stat.S_IRGRP if info.st_uid == 0 else 0
            if info.st_mode & (stat.S_IRWXG | stat.S_IRWXO) & ~group_may_read:
                raise ConfigError(
                    f"{what} {name} is mode {stat.S_IMODE(info.st_mode):04o}: other users can"
                    f" reach it; run 'chmod 600 {name}'"
                )
            return f.read()
    except FileNotFoundError:
        raise ConfigError(f"{what} not found: {name}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read {what} {name}: {exc}") from None


def secret_lines(text: str) -> list[str]:
    """One secret per line; blank lines and ``#`` comments are skipped."""
    lines = (line.strip() for line in text.splitlines())
    return [line for line in lines if line and not line.startswith("#")]


def write_private(path: str | os.PathLike[str], text: str) -> None:
    """Replace ``path`` with ``text``, readable by its owner only from the first byte.

    The text goes to a temporary file in the same directory that is then
    renamed over ``path``, so a process reloading the file sees the old
    secrets or the new ones, never half of them.
    """
    name = os.fspath(path)
    fd, temp = tempfile.mkstemp(dir=os.path.dirname(name) or ".", prefix=".tmp-")
    try:
        with open(fd, "w", encoding="utf-8") as f:
            f.write(text)  # mkstemp creates the file 0600
            f.flush()
            os.fsync(f.fileno())  # on disk before the rename: a crash leaves old or new
        os.replace(temp, name)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temp)
        raise
