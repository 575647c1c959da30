"""Agents: backends that speak the internal protocol (docs/protocol.md), and the SDK to write them.

Write an agent by subclassing :class:`Agent`; serve it with
:func:`make_agent_app` / :func:`run_agent_server`.
"""

from talkwire.agents.base import Agent, Call
from talkwire.agents.server import (
    AgentFactory,
    AgentServer,
    ServerSettings,
    make_agent_app,
    run_agent_server,
    start_agent_server,
)

__all__ = [
    "Agent",
    "AgentFactory",
    "AgentServer",
    "Call",
    "ServerSettings",
    "make_agent_app",
    "run_agent_server",
    "start_agent_server",
]
