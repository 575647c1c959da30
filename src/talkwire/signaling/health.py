"""Static transceiver list with health polling: every interval, GET each
configured transceiver's ``/health`` and publish what it says into the
registry. One owner task, started and cancelled by the app."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import aiohttp

from talkwire.registry.base import Registry, TransceiverInfo
from talkwire.signaling.transceiver_client import TransceiverUnavailable, health

log = logging.getLogger("talkwire.signaling.health")


@dataclass
class _Target:
    url: str
    failures: int = 0
    last_id: str | None = None


class HealthPoller:
    """Publishes each healthy transceiver with ``updated_at`` = now; removes it
    after ``max_failures`` failed checks in a row. Between those, a failed
    check leaves the record to age out (placement's freshness test)."""

    def __init__(
        self,
        registry: Registry,
        urls: Sequence[str],
        http: aiohttp.ClientSession,
        *,
        clock: Callable[[], float],
        interval_s: float = 1.0,
        timeout_s: float = 1.0,
        max_failures: int = 2,
    ) -> None:
        self._registry = registry
        self._targets = [_Target(url) for url in urls]
        self._http = http
        self._clock = clock
        self._interval_s = interval_s
        self._timeout_s = timeout_s
        self._max_failures = max_failures
        self._task: asyncio.Task[None] | None = None
        self.rounds = 0

    async def poll_once(self) -> None:
        await asyncio.gather(*(self._check(t) for t in self._targets))
        self.rounds += 1

    async def _check(self, target: _Target) -> None:
        try:
            data = await health(self._http, target.url, self._timeout_s)
            # The configured URL is the one known to reach it from here; the
            # transceiver's own idea of its URL may be a bind address.
            info = TransceiverInfo.from_json(
                {**data, "api_url": target.url}, updated_at=self._clock()
            )
        except (TransceiverUnavailable, ValueError) as exc:
            target.failures += 1
            if target.failures == self._max_failures:
                log.warning("transceiver %s unhealthy: %s", target.url, exc)
            if target.failures >= self._max_failures and target.last_id is not None:
                await self._registry.remove(target.last_id)
            return
        if target.last_id is not None and target.last_id != info.id:
            # Restarted under a new id at the same address: the old one is gone.
            await self._registry.remove(target.last_id)
        if target.failures >= self._max_failures:
            log.info("transceiver %s healthy again as %s", target.url, info.id)
        target.failures = 0
        target.last_id = info.id
        await self._registry.publish(info)

    async def _run(self) -> None:
        while True:
            try:
                await self.poll_once()
            except Exception:
                # A registry hiccup must not end polling for good.
                log.exception("health poll round failed")
            await asyncio.sleep(self._interval_s)

    def start(self) -> None:
        if self._task is None and self._targets:
            self._task = asyncio.create_task(self._run(), name="signaling-health-poller")

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is None:
            return
        task.cancel()
        # gather, not a bare await: a cancellation of our own caller must
        # still propagate, only the poller's own CancelledError is expected.
        await asyncio.gather(task, return_exceptions=True)
