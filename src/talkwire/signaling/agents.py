"""Which agent serves a model: the ones signaling was given (``--model``), else
the agent servers announced in the registry. Pure where it decides."""

from __future__ import annotations

import random
from collections.abc import Iterable, Mapping

from talkwire.registry.base import AgentInfo
from talkwire.signaling.state import SignalingState


def announced_models(
    agents: Iterable[AgentInfo],
    region: str | None,
    now: float,
    max_age_s: float,
    rng: random.Random,
) -> dict[str, str]:
    """Model -> agent URL from announced agent servers: fresh ones with room,
    those in ``region`` first, then the least full, ties at random."""
    eligible = [a for a in agents if now - a.updated_at <= max_age_s and a.active < a.capacity]
    keyed = [(a.region != region, a.active / a.capacity, rng.random(), a) for a in eligible]
    keyed.sort(key=lambda k: k[:3])
    models: dict[str, str] = {}
    for *_, agent in keyed:
        for model in agent.models:
            models.setdefault(model, f"{agent.url.rstrip('/')}/v1/agents/{model}")
    return models


async def models_for(st: SignalingState, region: str | None) -> Mapping[str, str]:
    """Every model a call may name now, with its agent URL; ``--model`` wins."""
    if not st.config.discover_agents:
        return st.config.models
    announced = announced_models(
        await st.registry.agents(), region, st.clock(), st.config.health_max_age_s, st.rng
    )
    return {**announced, **st.config.models}
