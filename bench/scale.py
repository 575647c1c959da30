"""Scale figures: how fast calls come up through signaling, and the audio gap
when the relay is killed (-9) and restarted under live calls, with and without
the shared flow cache (Redis), and when one relay of a pair sharing the ports
is killed (then started again), all in the same run; plus where the new
relay's flows came from (STUN, return traffic, the cache).

  .venv/bin/python bench/scale.py              # 20 calls, 3 restarts each way (~1 min)
  .venv/bin/python bench/scale.py --quick      # 4 calls, 1 restart

Every call is a real aiortc client through the relay to the echo agent,
playing a tone through each fault; the gap is the longest time between two
loud echoed frames around it, so a break in either direction shows (the
transceiver fills what the agent does not send with silence, so counting
arrivals alone would miss the client-to-server side). The one-machine stack
shares two cores with the clients: read the ratios between configurations,
not the absolute figures.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import itertools
import sys
import tempfile
import time
import urllib.request
from typing import Any

import numpy as np
from call_stats import percentile
from common import LineProcess, machine, table, write_results
from prometheus_client.parser import text_string_to_metric_families

from talkwire.client import RealtimeCall, tone
from talkwire.echo_probe import LOUD
from talkwire.stack import Stack, StackConfig

STEADY_S = 1.0  # audio flowing before the kill
RECOVERY_WINDOW_S = 3.0  # where the gap is looked for after it
SETUP_CONCURRENCY = 4
TONE_HZ = 440.0


def start_redis(port: int, directory: str) -> LineProcess:
    redis = LineProcess(
        ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "",
         "--appendonly", "no", "--dir", directory],
        "redis-server",
    )  # fmt: skip
    deadline = time.monotonic() + 20
    while "Ready to accept connections" not in redis.read_line(
        max(0.1, deadline - time.monotonic())
    ):
        pass
    return redis


def relay_sources(metrics_url: str) -> dict[str, float]:
    with urllib.request.urlopen(metrics_url, timeout=5) as reply:
        text = reply.read().decode()
    created: dict[str, float] = collections.Counter()
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == "talkwire_relay_flows_created_total":
                created[sample.labels["source"]] += sample.value
    return dict(created)


def longest_gap_ms(call: RealtimeCall, start: float, end: float) -> float:
    arrivals = [
        at for at, samples in call.received if start <= at <= end and np.abs(samples).max() > LOUD
    ]
    if len(arrivals) < 2:
        return (end - start) * 1000
    return max(b - a for a, b in itertools.pairwise(arrivals)) * 1000


def percentiles(values: list[float]) -> dict[str, float | None]:
    """p50, p95 (nearest rank, as the other benches take them) and max, in ms."""
    picked = {"p50": percentile(values, 50), "p95": percentile(values, 95), "max": max(values)}
    return {k: None if v is None else round(v, 1) for k, v in picked.items()}


async def run_config(
    name: str, config: StackConfig, calls: int, restarts: int, pair: bool = False
) -> dict[str, Any]:
    """``pair``: a second relay shares the ports; the first is killed, then started again."""
    stack = Stack(config)
    await stack.start()
    if pair:
        await stack.start_relay("relay-b")
    clients = [RealtimeCall(stack.signaling_url, stack.config.api_key) for _ in range(calls)]
    try:
        gate = asyncio.Semaphore(SETUP_CONCURRENCY)

        async def connect(client: RealtimeCall) -> None:
            async with gate:
                await client.connect(timeout=20)

        began = time.monotonic()
        await asyncio.gather(*(connect(c) for c in clients))
        setup_s = time.monotonic() - began
        gaps: list[float] = []
        rejoin_gaps: list[float] = []
        restart_ms: list[float] = []  # kill -9 until the new relay is ready
        sources: collections.Counter[str] = collections.Counter()

        async def window(start: float) -> list[float]:
            await asyncio.sleep(RECOVERY_WINDOW_S)  # the measurement window: audio flows
            return [longest_gap_ms(c, start - 0.2, start + RECOVERY_WINDOW_S) for c in clients]

        for restart in range(restarts):
            print(f"  {name}: restart {restart + 1}/{restarts}", flush=True)
            for client in clients:  # a tone through the whole round: every echoed frame is loud
                client.source.play(tone(TONE_HZ, STEADY_S + RECOVERY_WINDOW_S * 2 + 1.0))
            await asyncio.sleep(STEADY_S)
            killed = time.monotonic()
            await stack.kill("relay")
            if not pair:
                await stack.start_relay()
            restart_ms.append((time.monotonic() - killed) * 1000)
            gaps += await window(killed)
            if pair:
                rejoined = time.monotonic()
                await stack.start_relay()
                rejoin_gaps += await window(rejoined)
            sources.update(relay_sources(stack.relay_metrics_urls["relay"]))  # new each round
            await asyncio.sleep(1.0)  # the tone ends before the next round starts one
        result = {
            "calls": calls,
            "setup_calls_per_s": round(calls / setup_s, 2),
            "restarts": restarts,
            "gap_ms": percentiles(gaps),
            "relay_restart_ms": percentiles(restart_ms),
            "recovered_by": dict(sources),
        }
        if pair:
            result["rejoin_gap_ms"] = percentiles(rejoin_gaps)
            sources.update(relay_sources(stack.relay_metrics_urls["relay-b"]))  # the survivor
            result["recovered_by"] = dict(sources)
        return result
    finally:
        await asyncio.gather(*(c.hangup() for c in clients), return_exceptions=True)
        await stack.stop()


async def run(args: argparse.Namespace) -> dict[str, Any]:
    calls = args.calls or (4 if args.quick else 20)
    restarts = args.restarts or (1 if args.quick else 3)
    base = {"http_port": 0, "relay_port": 0, "demo": False, "transceivers": 2}
    with tempfile.TemporaryDirectory() as directory:
        redis = start_redis(args.redis_port, directory)
        try:
            without = await run_config("no cache", StackConfig(**base), calls, restarts)
            url = f"redis://127.0.0.1:{args.redis_port}/0"
            with_cache = await run_config(
                "flow cache", StackConfig(**base, registry_url=url), calls, restarts
            )
            pair = await run_config(
                "relay pair", StackConfig(**base, registry_url=url), calls, restarts, pair=True
            )
        finally:
            redis.stop()
    return {
        "machine": machine(),
        "quick": args.quick,
        "no_cache": without,
        "cache": with_cache,
        "pair": pair,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="4 calls, 1 restart")
    parser.add_argument("--calls", type=int, help="live calls during the restarts")
    parser.add_argument("--restarts", type=int, help="relay restarts per configuration")
    parser.add_argument("--redis-port", type=int, default=16399, help="for the bench's own Redis")
    parser.add_argument("--out", help="JSON result path (default bench/results/…)")
    args = parser.parse_args()
    result = asyncio.run(run(args))
    rows = []
    configurations = (
        ("restart, no flow cache (baseline)", "no_cache"),
        ("restart, flow cache in Redis", "cache"),
        ("one of a relay pair killed", "pair"),
    )
    for name, key in configurations:
        r = result[key]
        created = ", ".join(f"{k} {v:.0f}" for k, v in sorted(r["recovered_by"].items()))
        gap = r["gap_ms"]
        restart = r["relay_restart_ms"]["p50"]
        rows.append(
            (name, gap["p50"], gap["p95"], gap["max"], restart, r["setup_calls_per_s"], created)
        )
    print(f"\nrelay kill -9 under {result['cache']['calls']} live calls")
    print(
        table(
            ["", "gap p50 ms", "gap p95 ms", "gap max ms", "relay down ms", "setups/s", "flows by"],
            rows,
        )
    )
    base_p95 = result["no_cache"]["gap_ms"]["p95"]
    if base_p95:
        for key in ("cache", "pair"):
            print(f"{key} / baseline gap p95: x{result[key]['gap_ms']['p95'] / base_p95:.2f}")
    rejoin = result["pair"]["rejoin_gap_ms"]
    print(f"pair: the killed relay started again, gap p50/p95 {rejoin['p50']}/{rejoin['p95']} ms")
    path = write_results(
        "scale", result, None if args.out is None else __import__("pathlib").Path(args.out)
    )
    print(f"results: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
