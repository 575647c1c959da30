"""A bounded queue of text frames for one WebSocket peer that may stop reading.

Events for a peer are produced by callbacks that must not block (the agent
link, a call's event stream); the outbox takes them at once and a writer task
sends them. A peer that lets ``limit`` frames pile up is declared stalled
rather than allowed to grow memory without bound.
"""

from __future__ import annotations

import asyncio

from aiohttp import web


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
