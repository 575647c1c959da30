"""What every signaling handler shares, reached through the app."""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import aiohttp
from aiohttp import web

from talkwire.rate_limit import RateLimiter
from talkwire.registry.base import Registry
from talkwire.signaling.config import SignalingConfig
from talkwire.signaling.metrics import SignalingMetrics


@dataclass
class SignalingState:
    config: SignalingConfig
    registry: Registry
    clock: Callable[[], float]
    rng: random.Random
    metrics: SignalingMetrics = field(default_factory=SignalingMetrics)
    limits: dict[str, RateLimiter] = field(default_factory=dict)  # "ip", "key"
    # Created on startup (needs the running loop), closed on cleanup.
    http: aiohttp.ClientSession | None = None
    # Live Realtime WebSocket sessions (realtime_ws.Bridge), closed on shutdown.
    websockets: set[Any] = field(default_factory=set)

    def client(self) -> aiohttp.ClientSession:
        if self.http is None:
            raise RuntimeError("signaling app is not started")
        return self.http


STATE = web.AppKey("talkwire_signaling", SignalingState)


def state(request: web.Request) -> SignalingState:
    return request.app[STATE]
