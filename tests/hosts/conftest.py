"""The multi-host fleet: two regions on their own hosts, Redis and signaling on
a core host, clients on theirs. Every component is a real process in its own
network namespace (see ``netlab``); the clients are aiortc peers running on a
client host's event loop.

    core      10.99.0.2    redis-server, signaling :8080, echo agent
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

import asyncio
import itertools
import json
import os
import secrets
import shutil
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
import pytest
import pytest_asyncio
from crowd import Crowd
from netlab import Host, Lab
from servers import RedisServer

from talkwire.internal_auth import SECRET_ENV
from talkwire.route_token import Keyring
from talkwire.secret_files import write_private
from talkwire.stack import Component, process_gone

SIGNALING_PORT = 8080
RELAY_PORT = 3478
RELAY_INTERNAL_PORT = 3479
BACKBONE_PORT = 3480
REDIS_PORT = 6379


async def get(url: str, headers: dict[str, str] | None = None) -> tuple[int, str]:
    async with aiohttp.ClientSession() as http, http.get(url, headers=headers) as response:
        return response.status, await response.text()


@dataclass
class Region:
    name: str
    cluster: int
    relay_host: Host
    transceiver_hosts: list[Host]
    relays: dict[str, Component] = field(default_factory=dict)
    transceivers: dict[str, Component] = field(default_factory=dict)

    @property
    def relay_address(self) -> str:
        return self.relay_host.address

    def transceiver_url(self, name: str) -> str:
        return self.transceivers[name].ready.split()[0]


@dataclass
class Fleet:
    lab: Lab
    directory: Path
    api_key: str
    env: dict[str, str]
    redis: RedisServer
    regions: dict[str, Region]
    components: list[Component] = field(default_factory=list)
    global_relay: Component | None = None
    signaling: Component | None = None
    signaling_url: str = ""
    agent_url: str = ""

    @property
    def core(self) -> Host:
        return self.lab["core"]

    async def start(self, host: Host, name: str, *args: str) -> Component:
        component = await host.start(name, host.talkwire(*args), self.env)
        self.components.append(component)
        return component

    @property
    def keyring(self) -> Path:
        return self.directory / "keyring"

    async def start_relay(self, region: Region, name: str) -> Component:
        global_relay = self.lab["global"].address
        relay = await self.start(
            region.relay_host,
            name,
            "relay",
            "--listen", f"{region.relay_address}:{RELAY_PORT}",
            "--internal", f"{region.relay_address}:{RELAY_INTERNAL_PORT}",
            "--backbone", f"{region.relay_address}:{BACKBONE_PORT}",
            "--backbone-peer", f"{global_relay}:{RELAY_INTERNAL_PORT}",
            "--metrics", f"{region.relay_address}:0",
            "--keyring", str(self.keyring),
            "--workers", "1",
            "--cluster", str(region.cluster),
            "--trust", "10.99.0.0/24",
            "--flow-cache", self.redis.url,
        )  # fmt: skip
        region.relays[name] = relay
        return relay

    async def start_global_relay(self) -> Component:
        host = self.lab["global"]
        ingresses = [
            arg
            for region in self.regions.values()
            for arg in (
                "--cluster-ingress",
                f"{region.cluster}={region.relay_address}:{BACKBONE_PORT}",
            )
        ]
        self.global_relay = await self.start(
            host,
            "relay",
            "relay",
            "--listen", f"{host.address}:{RELAY_PORT}",
            "--internal", f"{host.address}:{RELAY_INTERNAL_PORT}",
            "--metrics", f"{host.address}:0",
            "--keyring", str(self.keyring),
            "--workers", "1",
            "--cluster", "0",
            "--trust", "10.99.0.0/24",
            *ingresses,
        )  # fmt: skip
        return self.global_relay

    async def kill_relay(self, region: Region, name: str) -> None:
        """SIGKILL the relay and its workers at once, as a crashed host or pod."""
        relay = region.relays.pop(name)
        pids = json.loads(relay.ready)["pids"]
        for pid in pids:
            os.kill(pid, 9)
        await relay.kill()
        for pid in pids:
            await process_gone(pid)

    async def start_transceiver(self, region: Region, host: Host) -> Component:
        transceiver = await self.start(
            host,
            host.name,
            "transceiver",
            "--id", host.name,
            "--api", f"{host.address}:0",
            "--udp", f"{host.address}:0",
            "--relay-public", f"{region.relay_address}:{RELAY_PORT}",
            "--trust", f"{region.relay_address}/32",
            "--keyring", str(self.keyring),
            "--cluster", str(region.cluster),
            "--region", region.name,
            "--registry", self.redis.url,
            "--drain-timeout", "3",
        )  # fmt: skip
        region.transceivers[host.name] = transceiver
        return transceiver

    async def until_transceivers(self, **wanted: int) -> None:
        """Until signaling's view of the fleet (its /healthz) has these counts.
        Run it on a host that reaches signaling (the core)."""
        counts: dict[str, int] = {}
        for _ in range(300):  # 15 s: announcements and staleness run on their own clocks
            counts = json.loads((await get(self.signaling_url + "/healthz"))[1])["transceivers"]
            if all(counts.get(k) == v for k, v in wanted.items()):
                return
            await asyncio.sleep(0.05)
        raise AssertionError(f"signaling saw {counts}, not {wanted}")

    async def restore_transceiver(self, region: Region, name: str) -> None:
        """Start ``name`` again if a test stopped it, and wait until signaling sees all four."""
        if name not in region.transceivers:
            await self.start_transceiver(region, self.lab[name])
            await self.core.run(self.until_transceivers(known=4, accepting=4))

    async def start_signaling(self) -> Component:
        core = self.core
        self.signaling = await self.start(
            core,
            "signaling",
            "signaling",
            "--listen", f"{core.address}:{SIGNALING_PORT}",
            "--registry", self.redis.url,
            "--region-table", str(self.directory / "regions.json"),
            "--model", f"echo={self.agent_url}",
            "--default-model", "echo",
            "--rate-per-ip", "off",
            "--rate-per-key", "off",
        )  # fmt: skip
        self.signaling_url = self.signaling.ready.split()[0]
        return self.signaling

    async def stop(self) -> None:
        for component in reversed(self.components):
            if component.process is not None and component.process.returncode is None:
                await component.stop(5)
        self.redis.kill()


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
        agent = await fleet.start(core, "agent", "agent", "echo", "--listen", f"{core.address}:0")
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
