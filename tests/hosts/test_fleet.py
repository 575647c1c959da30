"""A fleet across hosts (network namespaces): placement by region, a relay
killed under 50 live calls, a transceiver killed, Redis killed, a drain.

Each test leaves the fleet as it found it (what it kills, it starts again),
so they can run alone or in any order.
"""

from __future__ import annotations

import asyncio
import collections
import json
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import aiohttp
import pytest
from crowd import Crowd
from fleet import RELAY_PORT, Fleet, get
from prometheus_client.parser import text_string_to_metric_families

from talkwire.internal_auth import SECRET_ENV

pytestmark = pytest.mark.asyncio(loop_scope="module")

LIVE_CALLS = 50
TALKERS = 10  # of them, play a tone through the fault: their echo shows both directions
TALK_PAST_S = 0.5
STEADY_S = 1.0  # audio flowing before a fault: a measurement window, not a wait for an event
RECOVERY_WINDOW_S = 3.0  # where an audio gap is looked for after it
HEARD_AGAIN_S = 1.0  # every live call must receive audio in the last second of that window


@dataclass
class Calls:
    """Calls spread over client processes, in a fixed order."""

    parts: list[tuple[Crowd, list[int]]]

    async def each(self, method: str, *args: Any) -> list[Any]:
        """``method`` on every call, the results in call order."""
        results = await asyncio.gather(
            *(crowd.ask(method, indices, *args) for crowd, indices in self.parts if indices)
        )
        return [value for part in results for value in part]

    def only(self, keep: Sequence[bool]) -> Calls:
        flags = iter(keep)
        return Calls([(c, [i for i in indices if next(flags)]) for c, indices in self.parts])

    def __add__(self, other: Calls) -> Calls:
        return Calls(self.parts + other.parts)

    async def tell(self, method: str, *args: Any) -> None:
        """``method`` on every call, for its effect."""
        await asyncio.gather(
            *(crowd.ask(method, indices, *args) for crowd, indices in self.parts if indices)
        )

    async def hang_up(self) -> None:
        await self.tell("hang_up")


async def open_until_spread(
    fleet: Fleet, crowd: Crowd, transceivers: list[str], each: int = 2, limit: int = 12
) -> tuple[Calls, list[str]]:
    """Calls one after another until every one of ``transceivers`` holds
    ``each`` (placement alternates by count, once an earlier test's calls are
    gone); the calls and their holders."""
    region = next(r for r in fleet.regions.values() if transceivers[0] in r.transceivers)
    await fleet.core.run(fleet.until_idle(region))
    calls, held = Calls([]), []
    while min(held.count(t) for t in transceivers) < each:
        if len(held) >= limit:
            healths = await fleet.core.run(fleet.healths(region))
            raise AssertionError(f"placement never spread: {held}; transceivers: {healths}")
        call = await open_calls([crowd], 1)
        calls += call
        held += await fleet.core.run(owners(fleet, await call.each("call_ids")))
    return calls, held


async def open_calls(crowds: list[Crowd], count: int) -> Calls:
    shares = [count // len(crowds) + (i < count % len(crowds)) for i in range(len(crowds))]
    opened = await asyncio.gather(*(c.open(n) for c, n in zip(crowds, shares, strict=True)))
    return Calls(list(zip(crowds, opened, strict=True)))


def percentiles(values: list[float]) -> dict[str, float]:
    ordered = sorted(values)

    def rank(q: int) -> float:  # nearest rank, as the benches take it
        return round(ordered[max(0, -(-len(ordered) * q // 100) - 1)], 1)

    return {"p50": rank(50), "p95": rank(95), "max": round(ordered[-1], 1)}


async def heard_after(calls: Calls, fault_at: float) -> None:
    """Every call receives audio again in the last part of the window after a fault."""
    heard = await calls.each("heard_since", fault_at + RECOVERY_WINDOW_S - HEARD_AGAIN_S)
    lost = [i for i, ok in enumerate(heard) if not ok]
    assert not lost, f"calls {lost} of {len(heard)} heard nothing after the fault"


# --- on the core host's loop (signaling, transceiver APIs, metrics) ---


async def owners(fleet: Fleet, ids: list[str]) -> list[str]:
    """Which transceiver holds each call, asked of the transceivers themselves."""
    secret = {"Authorization": f"Bearer {fleet.env[SECRET_ENV]}"}
    found = []
    for call in ids:
        holders = [
            name
            for region in fleet.regions.values()
            for name in region.transceivers
            if (await get(f"{region.transceiver_url(name)}/calls/{call}", secret))[0] == 200
        ]
        assert len(holders) == 1, (call, holders)
        found.append(holders[0])
    return found


async def flows_created(relay_ready: str) -> collections.Counter[str]:
    status, text = await get(f"http://{json.loads(relay_ready)['metrics']}/metrics")
    assert status == 200
    created: collections.Counter[str] = collections.Counter()
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == "talkwire_relay_flows_created_total":
                created[sample.labels["source"]] += int(sample.value)
    return created


async def new_session() -> aiohttp.ClientSession:
    return aiohttp.ClientSession()  # bound to the loop that makes it: make it on the host's


async def sideband(fleet: Fleet, call: str, http: aiohttp.ClientSession) -> Any:
    return await http.ws_connect(
        f"{fleet.signaling_url.replace('http', 'ws', 1)}/v1/realtime?call_id={call}",
        headers={"Authorization": f"Bearer {fleet.api_key}"},
        protocols=("realtime",),
    )


async def close_all(sockets: list[Any], http: aiohttp.ClientSession) -> None:
    for ws in sockets:
        await ws.close()
    await http.close()


async def how_they_end(sockets: list[Any]) -> list[tuple[list[str], int | None]]:
    """Per sideband: the error codes it got until it closed, and its close code."""

    async def one(ws: Any) -> tuple[list[str], int | None]:
        codes = []
        async with asyncio.timeout(15):
            async for message in ws:
                if message.type == aiohttp.WSMsgType.TEXT:
                    event = json.loads(message.data)
                    if event["type"] == "error":
                        codes.append(event["error"]["code"])
        return codes, ws.close_code

    return list(await asyncio.gather(*(one(ws) for ws in sockets)))


# --- the tests ---


async def test_each_client_is_placed_in_the_region_its_address_maps_to(
    fleet: Fleet, crowds: dict[str, list[Crowd]]
) -> None:
    for client, region in (("cl-eu", fleet.regions["eu"]), ("cl-us", fleet.regions["us"])):
        calls = await open_calls(crowds[client], 3)
        try:
            # The answer names that region's relay, and nothing else.
            assert await calls.each("candidates") == [[region.relay_address]] * 3
            held = await fleet.core.run(owners(fleet, await calls.each("call_ids")))
            assert set(held) <= set(region.transceivers), (client, held)
            assert None not in await calls.each("round_trips")
        finally:
            await calls.hang_up()


async def test_killing_one_relay_of_a_pair_under_50_live_calls_loses_no_call(
    fleet: Fleet, crowds: dict[str, list[Crowd]]
) -> None:
    eu = fleet.regions["eu"]
    calls = await open_calls(crowds["cl-eu"], LIVE_CALLS)
    try:
        carried = await fleet.core.run(flows_created(eu.relays["relay-a"].ready))
        assert carried["stun"] > 0  # the kernel gave relay-a some of the clients
        talkers = calls.only([i < TALKERS for i in range(LIVE_CALLS)])
        # Through the window and a little past it; then quiet well before the probes.
        await talkers.tell("play", 440.0, STEADY_S + RECOVERY_WINDOW_S + TALK_PAST_S)
        await asyncio.sleep(STEADY_S)
        killed = time.monotonic()
        await fleet.kill_relay(eu, "relay-a")
        await asyncio.sleep(RECOVERY_WINDOW_S)
        await heard_after(calls, killed)
        window = (killed - 0.2, killed + RECOVERY_WINDOW_S)
        gaps = await calls.each("longest_gaps", *window)
        echo_gaps = await talkers.each("longest_gaps", *window, True)
        # The probes need quiet: the tone (late if the clients lagged) and its echo gone.
        await asyncio.sleep(TALK_PAST_S + 1.5)
        assert None not in await calls.each("round_trips")
        print(
            f"\nrelay-a killed under {LIVE_CALLS} calls: audio gap ms {percentiles(gaps)},"
            f" echo gap ms (both directions, {TALKERS} calls) {percentiles(echo_gaps)}"
        )

        # relay-a back: the kernel now hashes some clients to a relay that has
        # never seen them; it learns them from return traffic or the flow
        # cache, well before their next STUN check.
        await fleet.start_relay(eu, "relay-a")
        rejoined = time.monotonic()
        await asyncio.sleep(RECOVERY_WINDOW_S)
        await heard_after(calls, rejoined)
        created = await fleet.core.run(flows_created(eu.relays["relay-a"].ready))
        assert created["return"] + created["store"] > 0, created
        gaps = await calls.each("longest_gaps", rejoined - 0.2, rejoined + RECOVERY_WINDOW_S)
        print(f"relay-a rejoined: audio gap ms {percentiles(gaps)}, its flows by {dict(created)}")
        assert None not in await calls.each("round_trips")
    finally:
        await calls.hang_up()
        if "relay-a" not in eu.relays:
            await fleet.start_relay(eu, "relay-a")


async def test_a_killed_transceiver_ends_only_its_calls_and_new_calls_go_elsewhere(
    fleet: Fleet, crowds: dict[str, list[Crowd]]
) -> None:
    eu, clients = fleet.regions["eu"], crowds["cl-eu"]
    calls, held = await open_until_spread(fleet, clients[0], ["eu-t1", "eu-t2"])
    http = await fleet.core.run(new_session())
    sidebands: list[Any] = []
    try:
        ids = await calls.each("call_ids")
        sidebands += [await fleet.core.run(sideband(fleet, call, http)) for call in ids]
        on_victim = [owner == "eu-t1" for owner in held]

        await eu.transceivers.pop("eu-t1").kill()

        # Its calls' controllers are told, each with one clear event ...
        dead = [ws for ws, gone in zip(sidebands, on_victim, strict=True) if gone]
        assert await fleet.core.run(how_they_end(dead)) == [(["call_lost"], 1011)] * len(dead)
        # ... its calls hear nothing more, and every other call goes on.
        assert set(await calls.only(on_victim).each("round_trips")) == {None}
        survivors = calls.only([not gone for gone in on_victim])
        assert None not in await survivors.each("round_trips")
        assert [ws.closed for ws in sidebands] == on_victim

        await fleet.core.run(fleet.until_transceivers(accepting=3))
        newcomers = await open_calls(clients, 3)
        calls += newcomers
        new_ids = await newcomers.each("call_ids")
        assert await fleet.core.run(owners(fleet, new_ids)) == ["eu-t2"] * 3
    finally:
        await fleet.core.run(close_all(sidebands, http))
        await calls.hang_up()
        await fleet.restore_transceiver(eu, "eu-t1")


async def test_with_redis_killed_live_calls_go_on_and_new_ones_are_refused_until_it_returns(
    fleet: Fleet, crowds: dict[str, list[Crowd]]
) -> None:
    eu_clients, us_clients = crowds["cl-eu"][:1], crowds["cl-us"]
    calls = await open_calls(eu_clients, 2) + await open_calls(us_clients, 2)
    try:
        fleet.redis.kill()
        assert None not in await calls.each("round_trips")
        with pytest.raises(AssertionError, match=r"503.*registry_unavailable"):
            await open_calls(eu_clients, 1)
        assert None not in await calls.each("round_trips")  # still, after the refusal

        fleet.redis.start()  # empty: every transceiver announces itself again
        await fleet.core.run(fleet.until_transceivers(known=4, accepting=4))
        for clients, region in ((eu_clients, "eu"), (us_clients, "us")):
            late = await open_calls(clients, 1)
            calls += late
            held = await fleet.core.run(owners(fleet, await late.each("call_ids")))
            assert held[0] in fleet.regions[region].transceivers
    finally:
        if fleet.redis.proc is None:
            fleet.redis.start()
        await calls.hang_up()


async def test_a_draining_transceiver_keeps_its_calls_and_takes_no_new_one(
    fleet: Fleet, crowds: dict[str, list[Crowd]]
) -> None:
    us, clients = fleet.regions["us"], crowds["cl-us"]
    calls, _ = await open_until_spread(fleet, clients[0], ["us-t1", "us-t2"])
    try:
        stopping = asyncio.create_task(us.transceivers.pop("us-t1").terminate(30))
        await fleet.core.run(fleet.until_transceivers(known=4, accepting=3))
        assert None not in await calls.each("round_trips")  # its calls go on
        newcomers = await open_calls(clients, 2)
        calls += newcomers
        new_ids = await newcomers.each("call_ids")
        assert await fleet.core.run(owners(fleet, new_ids)) == ["us-t2"] * 2
        assert await stopping == 0  # drained to its deadline, then a clean exit
        await fleet.core.run(fleet.until_transceivers(known=3))  # and it left the registry
    finally:
        await calls.hang_up()
        await fleet.restore_transceiver(us, "us-t1")


async def test_a_client_entering_through_the_global_relay_reaches_its_region(
    fleet: Fleet, crowds: dict[str, list[Crowd]]
) -> None:
    """cl-far's media goes to the global relay (anycast or geo-DNS would send it
    there; here the client is told to: the one emulated part). The answer names
    the eu relay, where signaling placed the session."""
    eu, crowd = fleet.regions["eu"], crowds["cl-far"][0]
    entry = (fleet.lab["global"].address, RELAY_PORT)
    assert fleet.global_relay is not None
    before = await fleet.core.run(flows_created(fleet.global_relay.ready))
    calls = Calls([(crowd, await crowd.open(3, via=entry))])
    try:
        assert await calls.each("candidates") == [[eu.relay_address]] * 3
        held = await fleet.core.run(owners(fleet, await calls.each("call_ids")))
        assert set(held) <= set(eu.transceivers), held
        assert None not in await calls.each("round_trips")
        # The global relay made their flows from STUN and sent them on to eu's backbone.
        after = await fleet.core.run(flows_created(fleet.global_relay.ready))
        assert after["stun"] - before["stun"] == 3, (before, after)
    finally:
        await calls.hang_up()


async def test_a_signaling_restart_loses_no_call_and_ends_the_old_ones(
    fleet: Fleet, crowds: dict[str, list[Crowd]]
) -> None:
    crowd = crowds["cl-us"][0]
    calls = await open_calls([crowd], 2)
    ids = await calls.each("call_ids")
    try:
        assert fleet.signaling is not None
        await fleet.signaling.kill()  # kill -9: all it knew is in Redis
        assert None not in await calls.each("round_trips")  # media never touches it
        await fleet.start_signaling()
        newcomer = await open_calls([crowd], 1)
        calls += newcomer
        assert None not in await calls.each("round_trips")
        # The new process ends calls the old one placed: the call map is shared.
        await calls.hang_up()
        secret = {"Authorization": f"Bearer {fleet.env[SECRET_ENV]}"}

        async def still_held() -> list[str]:
            held = []
            for call in ids:
                for region in fleet.regions.values():
                    for name in region.transceivers:
                        url = f"{region.transceiver_url(name)}/calls/{call}"
                        if (await get(url, secret))[0] == 200:
                            held.append(call)
            return held

        for _ in range(100):  # 5 s: a hangup is released on the transceiver's schedule
            if not await fleet.core.run(still_held()):
                break
            await asyncio.sleep(0.05)
        assert not await fleet.core.run(still_held())
    finally:
        await calls.hang_up()
        if fleet.signaling is None or fleet.signaling.process.returncode is not None:
            await fleet.start_signaling()
