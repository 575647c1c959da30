"""A transceiver announcing itself in the shared registry (Redis), so signaling
finds it without being told its address.

Every interval it publishes what ``/health`` says, stamped now; placement
treats a record older than a few seconds as gone, so a transceiver that dies
stops getting calls without anyone removing it. Draining is published like
any other state, and the record is removed when the transceiver exits.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable

from talkwire.registry.base import Registry, TransceiverInfo
from talkwire.transceiver.service import Transceiver

log = logging.getLogger(__name__)

ANNOUNCE_INTERVAL_S = 1.0


async def announce(
    registry: Registry,
    transceiver: Transceiver,
    api_url: str,
    *,
    interval_s: float = ANNOUNCE_INTERVAL_S,
    clock: Callable[[], float] = time.time,
) -> None:
    """Publish until cancelled, then remove the record (best effort)."""
    failing = False
    try:
        while True:
            info = TransceiverInfo.from_json(
                {**transceiver.health(), "api_url": api_url}, updated_at=clock()
            )
            try:
                await registry.publish(info)
            except Exception as exc:
                # The registry being away must not take the transceiver, or its calls, down.
                transceiver.metrics.errors.labels("registry_publish").inc()
                if not failing:
                    log.warning("cannot announce in the registry (retrying): %s", exc)
                failing = True
            else:
                if failing:
                    log.warning("announcing in the registry again")
                failing = False
            await asyncio.sleep(interval_s)
    finally:
        with contextlib.suppress(Exception):
            async with asyncio.timeout(2.0):
                await registry.remove(transceiver.config.id)
