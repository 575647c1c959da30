"""The multi-host fleet: two regions on their own hosts, Redis and signaling on
a core host, clients on theirs. Every component is a real process in its own
network namespace (see ``netlab``); the clients are aiortc peers running on a
client host's event loop.

    core      10.99.0.2    redis-server, signaling :8080, echo agent (found through Redis)
    eu-relay  10.99.0.11   two relays sharing the public and internal ports (SO_REUSEPORT)
    eu-t1/t2  10.99.0.12/13  transceivers, region eu, cluster 1
    us-relay  10.99.0.21   one relay, cluster 2
    us-t1/t2  10.99.0.22/23  transceivers, region us, cluster 2
    global    10.99.0.31   a global relay (cluster 0): forwards each token to its cluster's relay
    cl-eu     10.99.0.101  a client the region table places in eu
    cl-us     10.99.0.102  a client the region table places in us
    cl-far    10.99.0.103  a client far from both, placed in eu, entering through `global`

Each region relay takes the global relay's clients on its backbone port. One
keyring serves every cluster (the global relay checks every token), as in
deploy/.
"""

from __future__ import annotations

import itertools
import json
import os
import secrets
import shutil
from collections.abc import AsyncIterator, Iterator

import pytest
import pytest_asyncio
from crowd import Crowd
from fleet import REDIS_PORT, Fleet, Region
from netlab import Lab
from servers import RedisServer

from talkwire.internal_auth import SECRET_ENV
from talkwire.route_token import Keyring
from talkwire.secret_files import write_private


@pytest.fixture(scope="module")
def lab() -> Iterator[Lab]:
    if os.geteuid() != 0:
        pytest.fail("the multi-host suite makes network namespaces: run it as root (CI does)")
    if shutil.which("ip") is None:
        pytest.fail("the multi-host suite needs iproute2's ip (scripts/bootstrap installs it)")
    made = Lab()
    try:
        for name, index in (
            ("core", 2),
            ("eu-relay", 11), ("eu-t1", 12), ("eu-t2", 13),
            ("us-relay", 21), ("us-t1", 22), ("us-t2", 23),
            ("global", 31),
            ("cl-eu", 101), ("cl-us", 102), ("cl-far", 103),
        ):  # fmt: skip
            made.add(name, index)
        yield made
    finally:
        made.close()


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def fleet(lab: Lab, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Fleet]:
    directory = tmp_path_factory.mktemp("fleet")
    core = lab["core"]
    api_key = "sk-talkwire-lab-" + secrets.token_hex(8)
    env = {
        **os.environ,
        "TALKWIRE_LOG": "WARNING",
        SECRET_ENV: secrets.token_urlsafe(32),
        "TALKWIRE_API_KEY": api_key,
    }
    regions = {
        "eu": Region("eu", 1, lab["eu-relay"], [lab["eu-t1"], lab["eu-t2"]]),
        "us": Region("us", 2, lab["us-relay"], [lab["us-t1"], lab["us-t2"]]),
    }
    write_private(directory / "keyring", Keyring.generate().to_text())
    table = directory / "regions.json"
    table.write_text(
        json.dumps(
            {
                "default_region": "eu",
                "networks": {
                    "10.99.0.101/32": "eu",
                    "10.99.0.102/32": "us",
                    "10.99.0.103/32": "eu",
                },
            }
        )
    )
    redis = RedisServer(directory, REDIS_PORT, bind=core.address, prefix=core.argv())
    fleet = Fleet(lab, directory, api_key, env, redis, regions)
    try:
        # Announced in Redis: signaling is told of no agent, it finds this one there.
        agent = await fleet.start(
            core, "agent", "agent", "echo", "--listen", f"{core.address}:0",
            "--registry", redis.url, "--region", "eu", "--id", "echo-core",
        )  # fmt: skip
        fleet.agent_url = agent.ready.split()[0].rstrip("/") + "/v1/agents/echo"
        await fleet.start_relay(regions["eu"], "relay-a")
        await fleet.start_relay(regions["eu"], "relay-b")
        await fleet.start_relay(regions["us"], "relay")
        await fleet.start_global_relay()
        for region in regions.values():
            for host in region.transceiver_hosts:
                await fleet.start_transceiver(region, host)
        await fleet.start_signaling()
        await core.run(fleet.until_transceivers(known=4, accepting=4))
        yield fleet
    finally:
        await fleet.stop()


@pytest.fixture(scope="module")
def crowds(fleet: Fleet) -> Iterator[dict[str, list[Crowd]]]:
    """Client processes: two on cl-eu (fifty calls fill more than one), one on each other."""
    made = {
        name: [
            Crowd(fleet.lab[name].namespace, fleet.signaling_url, fleet.api_key)
            for _ in range(count)
        ]
        for name, count in (("cl-eu", 2), ("cl-us", 1), ("cl-far", 1))
    }
    yield made
    for crowd in itertools.chain.from_iterable(made.values()):
        crowd.close()
