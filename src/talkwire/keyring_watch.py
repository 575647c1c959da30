"""The keyring file as it is now, for processes that run for months.

A rotation (``talkwire token keygen --rotate FILE --out FILE``) replaces the
file; each relay worker and each transceiver polls it from its own loop, takes
the new keys within a poll interval, and drops a retired key when its grace
ends. Polling a stat, not inotify or SIGHUP: it works the same for a file
replaced by rename, a Kubernetes Secret volume (a symlink swapped under the
mount) and a file edited in place, and a relay worker has no event loop to
hang a signal on.

A file that turns bad (unreadable, malformed, mode opened up) is refused and
counted, and the keys in use stay: a typo must not stop every new call.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable

from talkwire.errors import ConfigError
from talkwire.route_token import Keyring

POLL_INTERVAL_S = 1.0

log = logging.getLogger(__name__)

_Stamp = tuple[int, int, int, int] | None


def _stamp(path: str) -> _Stamp:
    try:
        st = os.stat(path)
    except OSError:
        return None
    # The mode too: fixing a refused file's permissions must be picked up.
    return (st.st_ino, st.st_mtime_ns, st.st_size, st.st_mode)


class KeyringWatch:
    """``keyring`` is always the latest good keyring; ``poll`` says when it changed."""

    def __init__(
        self,
        path: str | os.PathLike[str],
        keyring: Keyring | None = None,
        *,
        clock: Callable[[], float] = time.time,
        interval_s: float = POLL_INTERVAL_S,
    ) -> None:
        self.path = os.fspath(path)
        self._clock = clock
        self._interval_s = interval_s
        self._seen = _stamp(self.path)
        self.keyring = (keyring or Keyring.from_file(self.path)).live(clock())
        self.reloads = 0
        self.errors = 0
        self._next_poll = 0.0

    def poll(self, now: float) -> bool:
        """Re-read the file if it changed and drop ended keys; at most once an interval.

        ``now`` is the caller's monotonic clock (it only paces the polling).
        True when ``keyring`` is a new one.
        """
        if now < self._next_poll:
            return False
        self._next_poll = now + self._interval_s
        before = self.keyring
        stamp = _stamp(self.path)
        if stamp != self._seen:
            self._seen = stamp
            try:
                self.keyring = Keyring.from_file(self.path)
            except ConfigError as exc:
                self.errors += 1
                log.error("keyring not reloaded, keeping key ids %s: %s", self._ids(), exc)
            else:
                self.reloads += 1
                log.warning("keyring reloaded: current key %d", self.keyring.current)
        self.keyring = self.keyring.live(self._clock())
        return self.keyring is not before

    def _ids(self) -> list[int]:
        return sorted(self.keyring.keys)
