"""Helpers shared by the benchmarks: /proc readings, child processes, results.

Benchmarks compare ratios measured in one run (the host drifts ~25 % within
an hour, see DESIGN.md), so this module has no notion of a "good" number:
it only measures, summarises and writes down.
"""

from __future__ import annotations

import json
import math
import os
import platform
import select
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterable, Sequence
from pathlib import Path

BENCH_DIR = Path(__file__).resolve().parent
REPO = BENCH_DIR.parent
RESULTS_DIR = BENCH_DIR / "results"
BUILD_DIR = BENCH_DIR / "build"
TICKS = os.sysconf("SC_CLK_TCK")


def median(values: Iterable[float]) -> float:
    items = list(values)
    return statistics.median(items) if items else float("nan")


def cpu_seconds(pids: Iterable[int]) -> float:
    """utime + stime of processes (all their threads), from /proc/<pid>/stat.

    Resolution is one clock tick (1/SC_CLK_TCK s): use windows of a second or more.
    """
    total = 0
    for pid in pids:
        stat = Path(f"/proc/{pid}/stat").read_text()
        # The command name may hold spaces and parentheses: split after its last ")".
        fields = stat[stat.rindex(")") + 2 :].split()
        total += int(fields[11]) + int(fields[12])
    return total / TICKS


def busy_seconds() -> float:
    """CPU seconds all cores spent not idle since boot (/proc/stat), to spot foreign load."""
    with open("/proc/stat") as f:
        ticks = [int(v) for v in f.readline().split()[1:9]]
    return (sum(ticks) - ticks[3] - ticks[4]) / TICKS  # minus idle and iowait


def rss_bytes(pid: int) -> int:
    """Resident set size of a process (VmRSS from /proc/<pid>/status)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise ValueError(f"no VmRSS for pid {pid}")


def build_c(name: str, source: Path) -> Path:
    """Compile ``source`` with ``cc -O2`` into bench/build/, unless already up to date."""
    BUILD_DIR.mkdir(exist_ok=True)
    binary = BUILD_DIR / name
    if binary.exists() and binary.stat().st_mtime >= source.stat().st_mtime:
        return binary
    # Built under a private name and renamed: a concurrent run never sees half a binary.
    tmp = binary.with_name(f".{name}.{os.getpid()}")
    subprocess.run(["cc", "-O2", "-Wall", "-o", str(tmp), str(source)], check=True, timeout=120)
    tmp.replace(binary)
    return binary


class LineProcess:
    """A child process spoken to in lines on stdin/stdout; stderr goes to a temp file.

    Every read has a timeout, so a stuck child fails the bench instead of hanging it.
    """

    def __init__(self, args: Sequence[str], name: str, env: dict[str, str] | None = None) -> None:
        self.name = name
        # Closed in stop(): the file lives as long as the process it records.
        self._stderr = tempfile.TemporaryFile()  # noqa: SIM115
        self.proc = subprocess.Popen(
            list(args),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._stderr,
            env=env,
            bufsize=0,
        )
        self._buffer = b""

    @property
    def pid(self) -> int:
        return self.proc.pid

    def send(self, line: str) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(line.encode() + b"\n")

    def read_line(self, timeout: float) -> str:
        assert self.proc.stdout is not None
        fd = self.proc.stdout.fileno()
        deadline = time.monotonic() + timeout
        while b"\n" not in self._buffer:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError(f"{self.name}: no answer in {timeout} s{self._tail()}")
            ready, _, _ = select.select([fd], [], [], remaining)
            if ready:
                chunk = os.read(fd, 65536)
                if not chunk:
                    raise RuntimeError(f"{self.name} exited{self._tail()}")
                self._buffer += chunk
        line, _, self._buffer = self._buffer.partition(b"\n")
        return line.decode()

    def ask(self, line: str, timeout: float = 10.0) -> str:
        self.send(line)
        return self.read_line(timeout)

    def _tail(self) -> str:
        self._stderr.seek(0)
        text = self._stderr.read().decode(errors="replace").strip()
        return f"; stderr: {text[-2000:]}" if text else ""

    def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM, then SIGKILL if it lingers; always reaps."""
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout)
        for stream in (self.proc.stdin, self.proc.stdout):
            if stream is not None:
                stream.close()
        self._stderr.close()


def fields(line: str) -> dict[str, float]:
    """``"a=1 b=2.5"`` -> ``{"a": 1.0, "b": 2.5}`` (the C tools' answers)."""
    out: dict[str, float] = {}
    for item in line.split():
        key, sep, value = item.partition("=")
        if sep:
            out[key] = float(value)
    return out


def machine() -> dict[str, object]:
    """What the numbers were measured on."""
    model = ""
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            model = line.partition(":")[2].strip()
            break
    commit = subprocess.run(
        ["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"],
        capture_output=True,
        text=True,
        check=False,
    ).stdout.strip()
    return {
        "cpu": model,
        "cores": os.cpu_count(),
        "kernel": platform.release(),
        "python": sys.version.split()[0],
        "commit": commit,
        "load_avg": os.getloadavg(),
    }


def write_results(name: str, data: dict[str, object], path: Path | None = None) -> Path:
    """To ``path``, or bench/results/<name>-<UTC timestamp>.json"""
    if path is None:
        RESULTS_DIR.mkdir(exist_ok=True)
        stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
        path = RESULTS_DIR / f"{name}-{stamp}.json"
    path.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")
    return path


def table(headers: Sequence[str], rows: Iterable[Sequence[object]]) -> str:
    """A plain-text table, columns right-aligned except the first."""
    text = [[str(h) for h in headers], *([_cell(c) for c in row] for row in rows)]
    widths = [max(len(r[i]) for r in text) for i in range(len(headers))]
    lines = []
    for n, row in enumerate(text):
        cells = [
            row[0].ljust(widths[0]),
            *(c.rjust(w) for c, w in zip(row[1:], widths[1:], strict=True)),
        ]
        lines.append("  ".join(cells).rstrip())
        if n == 0:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(lines)


def _cell(value: object) -> str:
    if isinstance(value, float):
        if math.isnan(value):  # not measured
            return "-"
        if abs(value) >= 100:
            return f"{value:,.0f}"
        return f"{value:.2f}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)
