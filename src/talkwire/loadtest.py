"""`talkwire loadtest`: N real WebRTC calls (aiortc) through signaling and the
relay, each timing its echo round trip, with a live progress line, a summary
table, failures by cause, and a latency chart.

  talkwire loadtest --url http://127.0.0.1:8080 --calls 50 --rate 5 --hold 20
  talkwire loadtest --calls 20 --json result.json --html latency.html

Calls open at ``--rate`` per second and each stays up ``--hold`` seconds,
timing a tone burst through the echo agent about once a second (see
``talkwire.echo_probe``). Point it at the echo model: a model that does not
echo loses every burst. The key comes from ``--api-key`` or
``$TALKWIRE_API_KEY`` (what ``talkwire up`` prints).
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import html
import json
import os
import re
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

import aiohttp
import uvloop

from talkwire.client import CallFailed, RealtimeCall
from talkwire.echo_probe import EchoProbe
from talkwire.errors import ConfigError

API_KEY_ENV = "TALKWIRE_API_KEY"
CONNECT_TIMEOUT_S = 10.0
BURST_EVERY_S = 1.0
# Failing a whole run on one lost burst would make a busy network look broken.
LOST_BURSTS_PER_CALL = 0.5


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--url", default="http://127.0.0.1:8080", help="signaling base URL")
    parser.add_argument("--api-key", help=f"API key (default ${API_KEY_ENV})")
    parser.add_argument("--model", default="echo", help="model to call (default echo)")
    parser.add_argument("--calls", type=int, default=10, help="calls to open (default 10)")
    parser.add_argument(
        "--rate", type=float, default=5.0, help="calls opened per second (default 5)"
    )
    parser.add_argument(
        "--hold", type=float, default=10.0, help="seconds each call stays up (default 10)"
    )
    parser.add_argument("--json", type=Path, metavar="FILE", help="write the results as JSON")
    parser.add_argument("--html", type=Path, metavar="FILE", help="write a latency chart (HTML)")


@dataclass
class CallResult:
    index: int
    connect_ms: float | None = None
    round_trips_ms: list[float] = field(default_factory=list)
    lost_bursts: int = 0
    failure: str | None = None  # the cause, when the call did not come up or died


def failure_cause(exc: BaseException) -> str:
    """A short, countable cause: signaling's status and code, or the stage that failed."""
    text = str(exc)
    status = re.search(r"signaling answered (\d{3})", text)
    if status:
        code = re.search(r'"code":\s*"([a-z_]+)"', text)
        return f"signaling {status[1]}" + (f" {code[1]}" if code else "")
    if isinstance(exc, CallFailed):
        return "connection did not come up"
    if isinstance(exc, aiohttp.ClientError | OSError):
        return f"signaling unreachable ({type(exc).__name__})"
    return type(exc).__name__


async def one_call(
    index: int, args: argparse.Namespace, key: str, http: aiohttp.ClientSession
) -> CallResult:
    result = CallResult(index)
    call = RealtimeCall(args.url, key, {"type": "realtime", "model": args.model})
    probe = EchoProbe(call)
    try:
        started = time.monotonic()
        await call.connect(timeout=CONNECT_TIMEOUT_S, http=http)
        result.connect_ms = round((time.monotonic() - started) * 1000, 1)
        until = started + args.hold
        while time.monotonic() < until:
            burst_at = time.monotonic()
            rtt = await probe.round_trip()
            if rtt is None:
                result.lost_bursts += 1
            else:
                result.round_trips_ms.append(rtt)
            await asyncio.sleep(max(0.0, burst_at + BURST_EVERY_S - time.monotonic()))
        bursts = len(result.round_trips_ms) + result.lost_bursts
        if bursts and result.lost_bursts > LOST_BURSTS_PER_CALL * bursts:
            result.failure = "echo lost (most bursts never came back)"
    except Exception as exc:  # one call's failure is a result, not the run's end
        result.failure = failure_cause(exc)
    finally:
        with contextlib.suppress(Exception):  # hanging up a dead call may fail; it is over
            await call.hangup(http=http)
    return result


class Progress:
    """One line, rewritten in place each second on a terminal (a line each otherwise)."""

    def __init__(self, total: int, out: TextIO) -> None:
        self.total = total
        self.out = out
        self.started = self.up = self.failed = self.done = 0
        self.round_trips: list[float] = []

    def line(self) -> str:
        rtt = percentile(self.round_trips, 50)
        shown = "-" if rtt is None else f"{rtt:.0f} ms"
        return (
            f"calls {self.started}/{self.total} started, {self.up} up, {self.done} done,"
            f" {self.failed} failed | echo round trip p50 {shown}"
        )

    def show(self, final: bool = False) -> None:
        if self.out.isatty():
            self.out.write("\r" + self.line() + ("\n" if final else ""))
        else:
            self.out.write(self.line() + "\n")
        self.out.flush()


async def run_load(args: argparse.Namespace, key: str, out: TextIO) -> list[CallResult]:
    progress = Progress(args.calls, out)

    async def tracked(index: int, http: aiohttp.ClientSession) -> CallResult:
        progress.started += 1
        result = await one_call(index, args, key, http)
        progress.done += 1
        progress.failed += result.failure is not None
        progress.round_trips += result.round_trips_ms
        return result

    async def report() -> None:
        while True:
            progress.up = progress.started - progress.done
            progress.show()
            await asyncio.sleep(1.0)

    reporter = asyncio.create_task(report())
    try:
        async with aiohttp.ClientSession() as http:
            tasks = []
            for index in range(args.calls):
                tasks.append(asyncio.create_task(tracked(index, http)))
                await asyncio.sleep(1.0 / args.rate)
            results = list(await asyncio.gather(*tasks))
    finally:
        reporter.cancel()
    progress.up = 0
    progress.show(final=True)
    return results


def percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1)))]


def figures(values: list[float]) -> dict[str, float | int | None]:
    return {
        "n": len(values),
        **{f"p{q}": percentile(values, q) for q in (50, 95, 99)},
        "max": max(values) if values else None,
    }


def summarize(results: list[CallResult]) -> dict[str, Any]:
    connects = [r.connect_ms for r in results if r.connect_ms is not None]
    round_trips = [t for r in results for t in r.round_trips_ms]
    causes = collections.Counter(r.failure for r in results if r.failure is not None)
    return {
        "calls": len(results),
        "ok": sum(r.failure is None for r in results),
        "failures": dict(causes.most_common()),
        "connect_ms": figures(connects),
        "round_trip_ms": figures(round_trips),
        "lost_bursts": sum(r.lost_bursts for r in results),
    }


def table(summary: dict[str, Any]) -> str:
    def cell(value: object) -> str:
        return "-" if value is None else f"{value:.1f}" if isinstance(value, float) else str(value)

    rows: list[tuple[str, ...]] = [("", "n", "p50", "p95", "p99", "max")]
    for name, key in (("connect (ms)", "connect_ms"), ("echo round trip (ms)", "round_trip_ms")):
        f = summary[key]
        rows.append((name, *(cell(f[k]) for k in ("n", "p50", "p95", "p99", "max"))))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = [
        "  ".join(
            c.rjust(w) if i else c.ljust(w)
            for i, (c, w) in enumerate(zip(row, widths, strict=True))
        )
        for row in rows
    ]
    lines.append(
        f"calls {summary['calls']}, ok {summary['ok']}, lost bursts {summary['lost_bursts']}"
    )
    for cause, count in summary["failures"].items():
        lines.append(f"  failed: {count} x {cause}")
    return "\n".join(lines)


def chart_html(round_trips: list[float], summary: dict[str, Any]) -> str:
    """A self-contained page: an SVG histogram of the round trips (10 ms bins)."""
    bins = collections.Counter(int(t // 10) * 10 for t in round_trips)
    width, height = 720, 300
    bars = []
    if bins:
        low, high = min(bins), max(bins)
        slots = (high - low) // 10 + 1
        tallest = max(bins.values())
        bar_w = width / slots
        for i in range(slots):
            edge = low + 10 * i
            h = height * bins.get(edge, 0) / tallest
            bars.append(
                f'<rect x="{i * bar_w:.1f}" y="{height - h:.1f}" width="{bar_w - 1:.1f}"'
                f' height="{h:.1f}"><title>{edge}-{edge + 10} ms: {bins.get(edge, 0)}</title>'
                "</rect>"
            )
            if i % max(1, slots // 8) == 0:
                bars.append(f'<text x="{i * bar_w:.1f}" y="{height + 14}">{edge}</text>')
    return f"""<!doctype html><meta charset="utf-8"><title>talkwire loadtest</title>
<style>body{{font:14px system-ui;margin:2em}}rect{{fill:#3b6ea5}}text{{font-size:11px}}</style>
<h1>Echo round trip</h1>
<pre>{html.escape(table(summary))}</pre>
<svg width="{width}" height="{height + 20}" role="img" aria-label="round trip histogram, ms">
{"".join(bars)}
</svg>
<p>{len(round_trips)} round trips, 10 ms bins (ms).</p>
"""


def run(args: argparse.Namespace) -> int:
    key = args.api_key or os.environ.get(API_KEY_ENV)
    if not key:
        raise ConfigError(f"no API key: pass --api-key or set ${API_KEY_ENV}")
    if args.calls < 1 or args.rate <= 0 or args.hold <= 0:
        raise ConfigError("--calls must be at least 1, --rate and --hold positive")
    results = uvloop.run(run_load(args, key, sys.stderr))
    summary = summarize(results)
    print(table(summary))
    if args.json is not None:
        data = {"summary": summary, "calls": [vars(r) for r in results]}
        args.json.write_text(json.dumps(data, indent=2) + "\n")
    if args.html is not None:
        round_trips = [t for r in results for t in r.round_trips_ms]
        args.html.write_text(chart_html(round_trips, summary))
    return 0 if summary["ok"] == summary["calls"] else 1
