"""Which announced agent server serves a model (signaling.agents, pure)."""

from __future__ import annotations

import random

import pytest

from talkwire.registry.base import AgentInfo
from talkwire.signaling.agents import announced_models

NOW = 1_800_000_000.0


def agent(
    id: str,
    region: str = "eu",
    active: int = 0,
    age: float = 0.0,
    models: tuple[str, ...] = ("echo",),
) -> AgentInfo:
    return AgentInfo(id, f"ws://{id}:8090/", models, region, 10, active, NOW - age)


def pick(agents: list[AgentInfo], region: str | None = "eu") -> dict[str, str]:
    return announced_models(agents, region, NOW, 3.0, random.Random(0))


def test_the_clients_region_first_then_the_least_full() -> None:
    assert pick([agent("us1", "us"), agent("eu1", active=5), agent("eu2", active=2)]) == {
        "echo": "ws://eu2:8090/v1/agents/echo"
    }
    assert pick([agent("us1", "us"), agent("eu1")], region="us")["echo"].startswith("ws://us1")
    # None in the region: any other will do.
    assert pick([agent("us1", "us")])["echo"].startswith("ws://us1")


def test_stale_and_full_servers_serve_nothing() -> None:
    assert pick([agent("old", age=3.5), agent("full", active=10)]) == {}


def test_each_model_goes_to_its_own_best_server() -> None:
    both = agent("both", active=3, models=("echo", "voice"))
    echo = agent("echo1", active=0)
    assert pick([both, echo]) == {
        "echo": "ws://echo1:8090/v1/agents/echo",
        "voice": "ws://both:8090/v1/agents/voice",
    }


@pytest.mark.parametrize(
    ("field", "value"),
    [("url", "http://x"), ("models", []), ("models", [""]), ("capacity", -1), ("id", "")],
)
def test_bad_records_are_refused_by_name(field: str, value: object) -> None:
    record = agent("a").to_json()
    record[field] = value
    with pytest.raises(ValueError, match=f"'{field}'"):
        AgentInfo.from_json(record)
    assert AgentInfo.from_json(agent("a").to_json()) == agent("a")


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--listen", "0.0.0.0:0"], "needs --advertise"),
        (["--listen", "127.0.0.1:0", "--advertise", "http://x:1"], "must be ws://"),
        (["--listen", "127.0.0.1:0", "--capacity", "0"], "--capacity must be at least 1"),
    ],
)
def test_an_agent_server_announcing_itself_is_checked_before_it_starts(
    extra: list[str], message: str
) -> None:
    import subprocess
    import sys

    done = subprocess.run(
        [sys.executable, "-m", "talkwire.cli", "agent", "echo",
         "--registry", "redis://127.0.0.1:1/0", *extra],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert done.returncode == 2 and message in done.stderr, done.stderr
