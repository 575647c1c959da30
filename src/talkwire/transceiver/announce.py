"""A transceiver announcing itself in the shared registry (Redis), so signaling
finds it without being told its address.

Every interval it publishes what ``/health`` says, stamped now; placement
treats a record older than a few seconds as gone, so a transceiver that dies
stops getting calls without anyone removing it. Draining is published like
any other state, and the record is removed when the transceiver exits.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from talkwire.registry.announce import ANNOUNCE_INTERVAL_S, keep_announced
from talkwire.registry.base import Registry, TransceiverInfo
from talkwire.transceiver.service import Transceiver


async def announce(
    registry: Registry,
    transceiver: Transceiver,
    api_url: str,
    *,
    interval_s: float = ANNOUNCE_INTERVAL_S,
    clock: Callable[[], float] = time.time,
) -> None:
    """Publish until cancelled, then remove the record (best effort)."""

    async def publish() -> None:
        health = {**transceiver.health(), "api_url": api_url}
        await registry.publish(TransceiverInfo.from_json(health, updated_at=clock()))

    await keep_announced(
        publish,
        lambda: registry.remove(transceiver.config.id),
        what=f"transceiver {transceiver.config.id}",
        interval_s=interval_s,
        on_failure=transceiver.metrics.errors.labels("registry_publish").inc,
    )
