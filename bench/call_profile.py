"""Optional py-spy sampling of the transceiver during the ramp's CPU windows
(`bench/call.py --profile`). py-spy is a benchmark-only tool: install it with
`.venv/bin/pip install py-spy`; it is not a project dependency."""

from __future__ import annotations

import asyncio
import collections
import shutil
import sys
from pathlib import Path
from typing import Any

RATE_HZ = 100
TOP = 25


def py_spy() -> str | None:
    beside = Path(sys.executable).parent / "py-spy"
    return str(beside) if beside.is_file() else shutil.which("py-spy")


def summarize(raw: str, top: int = TOP) -> dict[str, Any]:
    """Self and inclusive sample shares per function, from py-spy's raw
    (collapsed) output: one ``frame;frame;...;leaf COUNT`` line per stack."""
    own: collections.Counter[str] = collections.Counter()
    inclusive: collections.Counter[str] = collections.Counter()
    total = 0
    for line in raw.splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        n = int(count)
        total += n
        frames = stack.split(";")
        own[frames[-1]] += n
        for frame in set(frames):
            inclusive[frame] += n
    if not total:
        return {"samples": 0}

    def share(counter: collections.Counter[str]) -> list[tuple[str, float]]:
        return [(name, round(n / total, 4)) for name, n in counter.most_common(top)]

    return {"samples": total, "self": share(own), "inclusive": share(inclusive)}


class Profiler:
    def __init__(self, pid: int, stem: Path) -> None:
        self.pid = pid
        self.stem = stem
        self.executable = py_spy()
        self._count = 0

    async def record(self, seconds: float) -> dict[str, Any]:
        if self.executable is None:
            return {"error": "py-spy not found: .venv/bin/pip install py-spy"}
        self._count += 1
        out = Path(f"{self.stem}-profile-{self._count}.txt")
        out.parent.mkdir(parents=True, exist_ok=True)
        process = await asyncio.create_subprocess_exec(
            self.executable, "record", "--pid", str(self.pid), "--duration", str(round(seconds)),
            "--rate", str(RATE_HZ), "--format", "raw", "--function", "--nonblocking", "--gil",
            "--output", str(out),
            stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE,
        )  # fmt: skip
        try:
            _, err = await asyncio.wait_for(process.communicate(), seconds + 30)
        except TimeoutError:
            process.kill()
            await process.wait()
            return {"error": "py-spy did not finish"}
        if process.returncode != 0:
            return {"error": err.decode(errors="replace").strip()[-300:]}
        result = summarize(await asyncio.to_thread(out.read_text))
        result["file"] = str(out)
        # Only stacks holding the GIL are kept: aiortc's decoder and encoder threads wait
        # in ways py-spy cannot always tell from work. So this is the share of the window
        # in which Python code ran, and "self"/"inclusive" are shares of that.
        result["gil_busy"] = round(result["samples"] / (RATE_HZ * seconds), 3)
        return result
