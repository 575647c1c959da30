"""The parts every WebSocket session here is made of: a bounded outbox, and
running its tasks until the first one ends.

Events for a peer are produced by callbacks that must not block (the agent
link, a call's event stream); the outbox takes them at once and a writer task
sends them. A peer that lets ``limit`` frames pile up is declared stalled
rather than allowed to grow memory without bound.
"""

from __future__ import annotations

import asyncio
from collections.abc import Collection
from typing import Any

from aiohttp import web


async def until_first(tasks: Collection[asyncio.Task[Any]]) -> set[asyncio.Task[Any]]:
    """Wait for the first of ``tasks`` to end; the rest are cancelled and reaped,
    also when the caller itself is cancelled. Returns the ones that had ended."""
    try:
        done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    return done


class Outbox:
    def __init__(self, limit: int) -> None:
        self._queue: asyncio.Queue[str] = asyncio.Queue(limit)
        self.stalled = asyncio.Event()

    def put(self, text: str) -> None:
        try:
            self._queue.put_nowait(text)
        except asyncio.QueueFull:
            self.stalled.set()

    async def send_to(self, ws: web.WebSocketResponse) -> None:
        """Send until cancelled, or until the peer goes away (not an error: it hung up)."""
        while True:
            text = await self._queue.get()
            try:
                await ws.send_str(text)
            except ConnectionError:
                return
