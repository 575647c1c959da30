"""Scale figures: how fast calls come up through signaling, and the audio gap
when the relay is killed (-9) and restarted under live calls, with and without
the shared flow cache (Redis), in the same run; plus where the new relay's
flows came from (STUN, return traffic, the cache).

  .venv/bin/python bench/scale.py              # 20 calls, 3 restarts each way (~1 min)
  .venv/bin/python bench/scale.py --quick      # 4 calls, 1 restart

Every call is a real aiortc client through the relay to the echo agent; the
client sends silence frames, the echo sends them back, so each call receives a
frame every 20 ms and the gap is the longest silence between two arrivals
around the restart. The one-machine stack shares two cores with the clients:
read the ratio between the two configurations, not the absolute figures.
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

from call_stats import percentile
from common import LineProcess, machine, table, write_results
from prometheus_client.parser import text_string_to_metric_families

from talkwire.client import RealtimeCall
from talkwire.stack import Stack, StackConfig

STEADY_S = 1.0  # audio flowing before the kill
RECOVERY_WINDOW_S = 3.0  # where the gap is looked for after it
SETUP_CONCURRENCY = 4


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


def relay_sources(stack: Stack) -> dict[str, float]:
    with urllib.request.urlopen(stack.relay_metrics_url, timeout=5) as reply:
        text = reply.read().decode()
    created: dict[str, float] = collections.Counter()
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == "talkwire_relay_flows_created_total":
                created[sample.labels["source"]] += sample.value
    return dict(created)


def longest_gap_ms(call: RealtimeCall, start: float, end: float) -> float:
    arrivals = [at for at, _ in call.received if start <= at <= end]
    if len(arrivals) < 2:
        return (end - start) * 1000
    return max(b - a for a, b in itertools.pairwise(arrivals)) * 1000


def percentiles(values: list[float]) -> dict[str, float | None]:
    """p50, p95 (nearest rank, as the other benches take them) and max, in ms."""
    picked = {"p50": percentile(values, 50), "p95": percentile(values, 95), "max": max(values)}
    return {k: None if v is None else round(v, 1) for k, v in picked.items()}


async def run_config(name: str, config: StackConfig, calls: int, restarts: int) -> dict[str, Any]:
    stack = Stack(config)
    await stack.start()
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
        restart_ms: list[float] = []  # kill -9 until the new relay is ready: no relay at all
        sources: collections.Counter[str] = collections.Counter()
        for restart in range(restarts):
            print(f"  {name}: restart {restart + 1}/{restarts}", flush=True)
            await asyncio.sleep(STEADY_S)  # a measurement window: audio flows meanwhile
            killed = time.monotonic()
            await stack.kill("relay")
            await stack.start_relay()
            restart_ms.append((time.monotonic() - killed) * 1000)
            await asyncio.sleep(RECOVERY_WINDOW_S)
            gaps += [longest_gap_ms(c, killed - 0.2, killed + RECOVERY_WINDOW_S) for c in clients]
            sources.update(relay_sources(stack))
        return {
            "calls": calls,
            "setup_calls_per_s": round(calls / setup_s, 2),
            "restarts": restarts,
            "gap_ms": percentiles(gaps),
            "relay_restart_ms": percentiles(restart_ms),
            "recovered_by": dict(sources),
        }
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
        finally:
            redis.stop()
    return {"machine": machine(), "quick": args.quick, "no_cache": without, "cache": with_cache}


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
    for name, key in (("no flow cache (baseline)", "no_cache"), ("flow cache in Redis", "cache")):
        r = result[key]
        created = ", ".join(f"{k} {v:.0f}" for k, v in sorted(r["recovered_by"].items()))
        gap = r["gap_ms"]
        restart = r["relay_restart_ms"]["p50"]
        rows.append(
            (name, gap["p50"], gap["p95"], gap["max"], restart, r["setup_calls_per_s"], created)
        )
    print(f"\nrelay kill -9 + restart under {result['cache']['calls']} live calls")
    print(
        table(
            ["", "gap p50 ms", "gap p95 ms", "gap max ms", "relay down ms", "setups/s", "flows by"],
            rows,
        )
    )
    base_p95 = result["no_cache"]["gap_ms"]["p95"]
    if base_p95:
        print(f"cache / baseline gap p95: x{result['cache']['gap_ms']['p95'] / base_p95:.2f}")
    path = write_results(
        "scale", result, None if args.out is None else __import__("pathlib").Path(args.out)
    )
    print(f"results: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
