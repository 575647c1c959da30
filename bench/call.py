"""The call benchmark: setup timings, echo round trip and concurrent calls
per transceiver core, for headless Chromium and the aiortc client, against a
whole talkwire stack on loopback, with the WebRTC floor measured in the same
run (two peer connections in one Chromium page).

    .venv/bin/python bench/call.py            # a few minutes
    .venv/bin/python bench/call.py --quick    # about a minute

Results: bench/results/call-<timestamp>.json and a table on stdout.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp
import call_aiortc
import call_browser
from call_browser import CHROMIUM, BenchError, chromium, tone_wav
from call_procs import CpuMeter, browser_pids, children, pin, renice
from call_profile import Profiler
from call_ramp import LOAD_CORE, capacity, ramp
from call_report import STEP_HEADER, print_summary
from call_stats import latency_figures, milestones
from common import RESULTS_DIR, machine
from playwright.async_api import Page, async_playwright

from talkwire.stack import Stack, StackConfig

STEPS = (10, 20, 30, 50, 70, 100)
QUICK_STEPS = (10, 30, 50)
STEPS_MAX = 12
LOAD_NICE = 10
TRANSCEIVER_CORE = 0
CHROMIUM_KEYS = {"answer": "answer", "ice": "ice", "dtls": "dtls", "channel": "channel",
                 "firstAudio": "first_audio"}  # fmt: skip
AIORTC_KEYS = {"answered": "answer", "ice_connected": "ice", "dtls_connected": "dtls",
               "channel_open": "channel", "first_audio": "first_audio"}  # fmt: skip


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer calls, bursts and steps")
    parser.add_argument("--calls", type=int, help="sequential calls per client (default 20)")
    parser.add_argument("--bursts", type=int, help="latency bursts per measurement (default 30)")
    parser.add_argument(
        "--steps", help="concurrent load calls per ramp step, comma separated (default "
        + ",".join(map(str, STEPS)) + ")",
    )  # fmt: skip
    parser.add_argument("--window", type=float, help="CPU window per step, seconds (default 6)")
    parser.add_argument("--no-pin", action="store_true", help="do not pin processes to cores")
    parser.add_argument(
        "--transceivers", type=int, default=1,
        help="transceiver processes, pinned one per core from core 0 (default 1)",
    )  # fmt: skip
    parser.add_argument(
        "--capacity", type=int,
        help="calls each transceiver admits (default: the largest step plus 20, so only"
        " measured load refuses calls)",
    )  # fmt: skip
    parser.add_argument("--skip", default="", help="comma list of: setup,rtt,ramp")
    parser.add_argument(
        "--profile", action="store_true",
        help="py-spy the transceiver during each ramp window (.venv/bin/pip install py-spy)",
    )  # fmt: skip
    parser.add_argument("--out", type=Path, help="JSON path (default bench/results/call-*.json)")
    args = parser.parse_args(argv)
    quick = args.quick
    args.calls = args.calls or (5 if quick else 20)
    args.bursts = args.bursts or (12 if quick else 30)
    args.window = args.window or (3.0 if quick else 6.0)
    args.settle = 1.0 if quick else 2.0
    steps = (
        [int(s) for s in args.steps.split(",")] if args.steps else (QUICK_STEPS if quick else STEPS)
    )
    args.steps = sorted(set(steps))[:STEPS_MAX]
    args.skip = set(filter(None, args.skip.split(",")))
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())  # as common.write_results names
    args.out = args.out or RESULTS_DIR / f"call-{stamp}.json"
    args.out_stem = args.out.with_suffix("")
    if args.calls < 1 or args.bursts < 1 or not args.steps or min(args.steps) < 1:
        parser.error("--calls, --bursts and --steps must be positive")
    if args.transceivers < 1:
        parser.error("--transceivers must be positive")
    if args.capacity is not None and args.capacity < 1:
        parser.error("--capacity must be positive")
    return args


# -- figures ----------------------------------------------------------------------


# -- main ---------------------------------------------------------------------------------


def chromium_version() -> str:
    try:
        out = subprocess.run(
            [str(CHROMIUM), "--version"], capture_output=True, text=True, timeout=30, check=True
        )
    except (OSError, subprocess.SubprocessError):
        return "Chromium (version unknown)"
    return out.stdout.strip()


async def run(args: argparse.Namespace) -> dict[str, Any]:
    # SIGTERM (a CI timeout) unwinds like Ctrl-C, so the stack's processes are stopped.
    main_task = asyncio.current_task()
    assert main_task is not None
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, main_task.cancel)
    cores = os.sched_getaffinity(0)
    pinned = not args.no_pin and {TRANSCEIVER_CORE, LOAD_CORE} <= cores
    if pinned:
        # Children inherit it: the whole stack, Chromium and this process share the load core...
        os.sched_setaffinity(0, {LOAD_CORE})
    results: dict[str, Any] = {
        "when": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
        "host": machine(),
        "chromium": chromium_version(),
        "args": {k: sorted(v) if isinstance(v, set) else v for k, v in vars(args).items()
                 if k not in ("out", "out_stem")},
    }  # fmt: skip
    results["transceivers"] = args.transceivers
    stack = Stack(
        StackConfig(
            http_port=0,
            relay_port=0,
            transceiver_capacity=args.capacity or max(args.steps) + 20,
            transceivers=args.transceivers,
        )
    )
    await stack.start()
    try:
        pids = {name: c.process.pid for name, c in stack.components.items() if c.process}
        if pinned:
            results["pinning"] = pin_transceivers(pids, sorted(cores))
        else:
            results["pinning"] = f"not pinned; the load Chromium runs at nice {LOAD_NICE}"
        with tempfile.TemporaryDirectory(prefix="talkwire-bench-") as tmp:
            mic = tone_wav(Path(tmp) / "tone-440.wav")
            async with (
                aiohttp.ClientSession() as http,
                call_browser.page_server() as pages,
                async_playwright() as playwright,
                chromium(playwright, Path(tmp) / "probe", mic) as context,
            ):
                demo = await context.new_page()
                await call_browser.open_demo(demo, stack)
                floor = await context.new_page()
                await floor.goto(pages + "/floor.html")
                # Relay workers (and anything else a component forks) count as it.
                groups = {name: [pid, *children(pid)] for name, pid in pids.items()}
                groups["chromium_probe"] = browser_pids(os.getpid(), Path(tmp) / "probe")
                groups["bench"] = [os.getpid()]
                meter = CpuMeter(groups)
                meter.start()
                await measure_calls(results, demo, floor, http, stack, args)
                results["calls_cpu"] = meter.stop().to_json()
                if "ramp" not in args.skip:
                    async with chromium(playwright, Path(tmp) / "load", mic) as load_context:
                        load = await load_context.new_page()
                        await load.goto(pages + "/load.html")
                        groups["chromium"] = browser_pids(os.getpid(), Path(tmp) / "load")
                        # The load browser yields its core to the probes and the stack: a
                        # busy load core then slows the load calls, not the measurement.
                        renice(groups["chromium"], LOAD_NICE)
                        await ramp_phase(results, demo, load, http, stack, groups, pids, args)
    finally:
        await stack.stop()
    return results


def pin_transceivers(pids: dict[str, int], cores: list[int]) -> str:
    """The first transceiver gets a core of its own; more go one per core from there,
    sharing the load core once the host runs out (this one has two)."""
    names = [name for name in pids if name.startswith("transceiver")]
    placed = []
    for index, name in enumerate(names):
        core = cores[(TRANSCEIVER_CORE + index) % len(cores)]
        pin(pids[name], {core})
        placed.append(f"{name} to core {core}")
    return (
        f"{', '.join(placed)}; relay, agent, signaling, both Chromiums (probe, load) and this"
        f" process pinned to core {LOAD_CORE}; the load Chromium runs at nice {LOAD_NICE}"
    )


async def ramp_phase(
    results: dict[str, Any],
    demo: Page,
    load: Page,
    http: aiohttp.ClientSession,
    stack: Stack,
    groups: dict[str, list[int]],
    pids: dict[str, int],
    args: argparse.Namespace,
) -> None:
    print(
        f"\nconcurrent echo calls (window {args.window:.0f} s per step;"
        f" CPU in % of one core)\n{STEP_HEADER}"
    )
    profiler = Profiler(pids["transceiver"], args.out_stem) if args.profile else None
    ramp_result = await ramp(demo, load, http, stack, groups, args, profiler)
    results["ramp"] = ramp_result
    results["capacity"] = capacity(ramp_result)


async def measure_calls(
    results: dict[str, Any],
    demo: Page,
    floor: Page,
    http: aiohttp.ClientSession,
    stack: Stack,
    args: argparse.Namespace,
) -> None:
    if "setup" not in args.skip:
        print(f"setup: {args.calls} calls each (floor, Chromium, aiortc)", flush=True)
        floor_runs = await call_browser.floor_setup(floor, args.calls)
        chromium_runs = await call_browser.demo_setup(demo, stack, http, args.calls)
        aiortc_runs = await call_aiortc.setup(stack, http, args.calls)
        results["setup"] = {
            "floor": milestones(floor_runs, CHROMIUM_KEYS),
            "chromium": milestones(chromium_runs, CHROMIUM_KEYS),
            "aiortc": milestones(aiortc_runs, AIORTC_KEYS),
        }
        results["setup_runs"] = {
            "floor": floor_runs, "chromium": chromium_runs, "aiortc": aiortc_runs,
        }  # fmt: skip
    if "rtt" not in args.skip:
        print(f"round trip: {args.bursts} bursts each (floor, Chromium, aiortc)", flush=True)
        floor_rtt = await call_browser.floor_latency(floor, args.bursts)
        await call_browser.demo_connect(demo)
        try:
            chromium_rtt = await call_browser.demo_latency(demo, args.bursts)
        finally:
            await call_browser.demo_hangup(demo)
            await call_browser.wait_active(http, stack, 0)
        aiortc_rtt = await call_aiortc.latency(stack, http, args.bursts)
        results["rtt"] = {
            "floor": latency_figures(floor_rtt),
            "chromium": latency_figures(chromium_rtt),
            "aiortc": latency_figures(aiortc_rtt),
        }
        results["rtt_samples"] = {
            "floor": floor_rtt["samples"], "chromium": chromium_rtt["samples"],
            "aiortc": aiortc_rtt["samples"],
        }  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if not CHROMIUM.is_file():
        print(f"call bench: Debian's chromium is not installed ({CHROMIUM})", file=sys.stderr)
        return 2
    started = time.monotonic()
    try:
        results = asyncio.run(run(args))
    except BenchError as exc:
        print(f"call bench: {exc}", file=sys.stderr)
        return 1
    except asyncio.CancelledError:
        print("call bench: stopped", file=sys.stderr)
        return 1
    results["duration_s"] = round(time.monotonic() - started, 1)
    out = args.out
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2) + "\n")
    print_summary(results)
    print(f"\n  {results['duration_s']:.0f} s; results: {out}")
    return 0


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        sys.exit(main())
