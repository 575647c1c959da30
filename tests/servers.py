"""Servers the tests start for real (never a fake): ``redis-server``."""

from __future__ import annotations

import os
import select
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path

READY_TIMEOUT_S = 20.0


class RedisServer:
    """A real ``redis-server``, no persistence; ``url`` for clients.

    ``prefix`` runs it elsewhere, e.g. ``ip netns exec NS`` for a host of the
    multi-host lab.
    """

    def __init__(
        self,
        directory: Path,
        port: int,
        bind: str = "127.0.0.1",
        prefix: Sequence[str] = (),
        extra: Sequence[str] = (),
    ) -> None:
        self.port = port
        self._extra = list(extra)  # more redis-server options (e.g. --requirepass)
        self.bind = bind
        self.url = f"redis://{bind}:{port}/0"
        self._directory = directory
        self._prefix = list(prefix)
        self.proc: subprocess.Popen[bytes] | None = None
        self.start()

    def start(self) -> None:
        """(Re)start on the same port, empty: a restarted Redis has lost everything."""
        self.proc = subprocess.Popen(
            [*self._prefix, "redis-server", "--port", str(self.port), "--bind", self.bind,
             "--save", "", "--appendonly", "no", "--dir", str(self._directory),
             # Off loopback only inside a test's own namespaces, never a real network.
             "--protected-mode", "no" if self.bind not in ("127.0.0.1", "::1") else "yes",
             *self._extra],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )  # fmt: skip
        assert self.proc.stdout is not None
        deadline = time.monotonic() + READY_TIMEOUT_S
        seen = b""
        while b"Ready to accept connections" not in seen:
            readable, _, _ = select.select([self.proc.stdout], [], [], 1.0)
            if readable:
                chunk = os.read(self.proc.stdout.fileno(), 4096)
                if not chunk:
                    raise AssertionError(f"redis-server exited: {seen.decode(errors='replace')}")
                seen += chunk
            if time.monotonic() > deadline:
                self.kill()
                raise AssertionError(f"redis-server not ready: {seen.decode(errors='replace')}")

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
        if self.proc is not None and self.proc.stdout is not None:
            self.proc.stdout.close()
        self.proc = None
