"""The registry interface: which transceivers and agent servers exist, which
call lives where, which ephemeral keys are valid.

Backend-neutral on purpose: every value crosses it as plain JSON-serialisable
data so the in-memory backend and the Redis one (scale-out) are interchangeable.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any, Protocol, runtime_checkable

from talkwire.errors import TalkwireError


@dataclass(frozen=True, slots=True)
class TransceiverInfo:
    """What a transceiver says about itself; ``updated_at`` is unix seconds,
    ``cluster`` the cluster's name or its route-token number as text."""

    id: str
    api_url: str
    region: str
    cluster: str
    capacity: int
    active: int
    draining: bool
    updated_at: float
    load: float = 0.0  # measured share of one core (what admission watches)
    overloaded: bool = False  # refusing new calls until its load falls

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(
        cls, data: Mapping[str, Any], *, updated_at: float | None = None
    ) -> TransceiverInfo:
        """Validate a JSON object (a ``/health`` answer or a stored record).

        Raises ``ValueError`` naming the first bad field, so a transceiver that
        reports nonsense is treated as unhealthy rather than crashing a poller.
        """
        if not isinstance(data, Mapping):
            raise ValueError("transceiver info must be a JSON object")
        out: dict[str, Any] = {}
        cluster = data.get("cluster")
        # Route tokens number clusters 0..255; a transceiver may report that
        # number rather than a name. Either way it is kept as text.
        if isinstance(cluster, int) and not isinstance(cluster, bool) and cluster >= 0:
            data = {**data, "cluster": str(cluster)}
        for name in ("id", "api_url", "region", "cluster"):
            value = data.get(name)
            if not isinstance(value, str) or not value:
                raise ValueError(f"transceiver info: {name!r} must be a non-empty string")
            out[name] = value
        for name in ("capacity", "active"):
            value = data.get(name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                raise ValueError(f"transceiver info: {name!r} must be a non-negative integer")
            out[name] = value
        draining = data.get("draining", False)
        if not isinstance(draining, bool):
            raise ValueError("transceiver info: 'draining' must be a boolean")
        out["draining"] = draining
        overloaded = data.get("overloaded", False)
        if not isinstance(overloaded, bool):
            raise ValueError("transceiver info: 'overloaded' must be a boolean")
        out["overloaded"] = overloaded
        load = data.get("load", 0.0)
        if (
            not isinstance(load, int | float)
            or isinstance(load, bool)
            or not math.isfinite(load)
            or load < 0
        ):
            raise ValueError("transceiver info: 'load' must be a non-negative number")
        out["load"] = float(load)
        stamp = data.get("updated_at") if updated_at is None else updated_at
        if (
            not isinstance(stamp, int | float)
            or isinstance(stamp, bool)
            or not math.isfinite(stamp)
        ):
            raise ValueError("transceiver info: 'updated_at' must be a finite number")
        out["updated_at"] = float(stamp)
        return cls(**out)


@dataclass(frozen=True, slots=True)
class AgentInfo:
    """What an agent server says about itself: where it listens (``url``, the
    ``ws://`` base its ``/v1/agents/{model}`` paths hang off) and which models."""

    id: str
    url: str
    models: tuple[str, ...]
    region: str
    capacity: int
    active: int
    updated_at: float

    def to_json(self) -> dict[str, Any]:
        return {**asdict(self), "models": list(self.models)}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> AgentInfo:
        """Validate a stored record; ValueError names the bad field."""
        out: dict[str, Any] = {}
        for name in ("id", "url", "region"):
            value = data.get(name)
            if not isinstance(value, str) or not value:
                raise ValueError(f"agent info: {name!r} must be a non-empty string")
            out[name] = value
        if not out["url"].startswith(("ws://", "wss://")):
            raise ValueError("agent info: 'url' must be ws:// or wss://")
        models = data.get("models")
        if (
            not isinstance(models, list)
            or not models
            or not all(isinstance(m, str) and m for m in models)
        ):
            raise ValueError("agent info: 'models' must be a list of model names")
        out["models"] = tuple(models)
        for name in ("capacity", "active"):
            value = data.get(name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                raise ValueError(f"agent info: {name!r} must be a non-negative integer")
            out[name] = value
        stamp = data.get("updated_at")
        if (
            not isinstance(stamp, int | float)
            or isinstance(stamp, bool)
            or not math.isfinite(stamp)
        ):
            raise ValueError("agent info: 'updated_at' must be a finite number")
        out["updated_at"] = float(stamp)
        return cls(**out)


class RegistryUnavailable(TalkwireError):
    """The shared registry could not be reached; the request may be retried."""


@runtime_checkable
class Registry(Protocol):
    """Shared state of a signaling fleet. All methods are coroutines so a
    networked backend fits behind the same calls."""

    async def publish(self, info: TransceiverInfo) -> None:
        """Insert or replace a transceiver's record (keyed by ``info.id``)."""

    async def remove(self, id: str) -> None:
        """Forget a transceiver; unknown ids are ignored."""

    async def count_calls(self, id: str, delta: int) -> None:
        """Add ``delta`` to a transceiver's ``active`` (never below 0) until its
        next report replaces the record: atomic, changing nothing else, and a
        no-op for a record that is gone (never bringing it back)."""

    async def transceivers(self, region: str | None = None) -> list[TransceiverInfo]:
        """Every known transceiver, or those of one region; stale ones included
        (freshness is the caller's judgement, see ``signaling.placement``)."""

    async def publish_agent(self, info: AgentInfo) -> None:
        """Insert or replace an agent server's record; it lapses unless renewed."""

    async def remove_agent(self, id: str) -> None:
        """Forget an agent server; unknown ids are ignored."""

    async def agents(self) -> list[AgentInfo]:
        """Every agent server whose record has not lapsed (stale ones included)."""

    async def put_call(self, call_id: str, transceiver_id: str, ttl_s: float) -> None:
        """Remember which transceiver owns a call, for ``ttl_s`` seconds."""

    async def get_call(self, call_id: str) -> str | None:
        """The owning transceiver's id, or None if unknown or expired."""

    async def delete_call(self, call_id: str) -> None:
        """Forget a call; unknown ids are ignored."""

    async def put_client_secret(self, value: str, session: dict[str, Any], expires_at: int) -> None:
        """Store an ephemeral key's session until ``expires_at`` (unix seconds)."""

    async def get_client_secret(self, value: str) -> dict[str, Any] | None:
        """The stored session, or None if the key is absent or expired."""
