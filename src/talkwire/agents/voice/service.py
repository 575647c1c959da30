"""Wiring for serving the voice agent: models, responder, and the agent factory."""

from __future__ import annotations

import functools
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import aiohttp

from talkwire.agents.base import Call
from talkwire.agents.voice.agent import VoiceAgent, VoiceSettings
from talkwire.agents.voice.llm import ChatCompletionsResponder, LlmSettings
from talkwire.agents.voice.models import VoiceModels
from talkwire.agents.voice.responder import Responder, RuleResponder


def _agent(
    call: Call, models: VoiceModels, responder: Responder, settings: VoiceSettings
) -> VoiceAgent:
    return VoiceAgent(call, models, responder, settings)


@asynccontextmanager
async def voice_agent_factory(
    llm: LlmSettings | None = None,
    workers: int | None = None,
    settings: VoiceSettings | None = None,
    models: VoiceModels | None = None,
) -> AsyncIterator[functools.partial[VoiceAgent]]:
    """Load the models (once; or use ``models``) and yield a factory for the agent server."""
    own_models = models is None
    models = models or VoiceModels.load(workers)
    http = aiohttp.ClientSession() if llm is not None else None
    try:
        responder: Responder = (
            ChatCompletionsResponder(llm, http) if llm is not None and http else RuleResponder()
        )
        yield functools.partial(
            _agent, models=models, responder=responder, settings=settings or VoiceSettings()
        )
    finally:
        if http is not None:
            await http.close()
        if own_models:
            models.close()
