"""Keeping a record alive in the shared registry: publish it every interval,
remove it at the end. Used by transceivers and agent servers, so signaling
finds them without being told their addresses.

A record older than a few seconds counts as gone, so a process that dies stops
getting work without anyone removing it. The registry being away never takes
the process (or its calls) down: a failed round is reported and retried.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable

log = logging.getLogger(__name__)

ANNOUNCE_INTERVAL_S = 1.0


async def keep_announced(
    publish: Callable[[], Awaitable[None]],
    remove: Callable[[], Awaitable[None]],
    *,
    what: str,
    interval_s: float = ANNOUNCE_INTERVAL_S,
    on_failure: Callable[[], None] | None = None,
) -> None:
    """``publish()`` every ``interval_s`` until cancelled, then ``remove()`` (best effort)."""
    failing = False
    try:
        while True:
            try:
                await publish()
            except Exception as exc:
                if on_failure is not None:
                    on_failure()
                if not failing:
                    log.warning("cannot announce %s in the registry (retrying): %s", what, exc)
                failing = True
            else:
                if failing:
                    log.warning("announcing %s in the registry again", what)
                failing = False
            await asyncio.sleep(interval_s)
    finally:
        with contextlib.suppress(Exception):
            async with asyncio.timeout(2.0):
                await remove()
