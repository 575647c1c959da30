"""The multi-host fleet's handle: what runs where, and how to start, stop and
ask each part (the fixtures in conftest.py build it). See conftest.py for
the hosts."""

from __future__ import annotations

import asyncio
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
from netlab import Host, Lab
from servers import RedisServer

from talkwire.stack import Component, process_gone

SIGNALING_PORT = 8080
RELAY_PORT = 3478
RELAY_INTERNAL_PORT = 3479
BACKBONE_PORT = 3480
# Servers sit below .64, clients above: relays trust the servers only, so a
# client host forging return traffic is refused as on a real network.
SERVER_NETWORK = "10.99.0.0/26"
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
            "--trust", SERVER_NETWORK,
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
            "--trust", SERVER_NETWORK,
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
        """Until signaling's view of the fleet (its /healthz) has these counts and
        the announced echo agent.
        Run it on a host that reaches signaling (the core)."""
        counts: dict[str, int] = {}
        for _ in range(300):  # 15 s: announcements and staleness run on their own clocks
            health = json.loads((await get(self.signaling_url + "/healthz"))[1])
            counts = health["transceivers"]
            # The echo agent is found the same way: it must be there too.
            found = "echo" in health.get("announced_models", [])
            if found and all(counts.get(k) == v for k, v in wanted.items()):
                return
            await asyncio.sleep(0.05)
        raise AssertionError(f"signaling saw {counts} and {health}, not {wanted} with echo")

    async def healths(self, region: Region) -> list[dict[str, Any]]:
        """Each of the region's transceivers' /health. Run it on the core host."""
        return [
            json.loads((await get(region.transceiver_url(name) + "/health"))[1])
            for name in region.transceivers
        ]

    async def until_idle(self, region: Region) -> None:
        """Until the region's transceivers hold no call (an earlier test's are
        released on the transceivers' own schedule) and take calls again (the
        load and loop lag it left have faded). Run it on the core host."""
        for _ in range(300):  # 15 s
            healths = await self.healths(region)
            if all(h["active"] == 0 and not h.get("overloaded") for h in healths):
                return
            await asyncio.sleep(0.05)
        raise AssertionError(f"{region.name} is not idle: {healths}")

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
