"""Processes for the call benchmark: CPU time from /proc, core pinning, and
the process tree (Chromium's helpers are grandchildren of this process)."""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """utime + stime of a process (all its threads), 0 if it is gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return 0.0
    # The command name may hold spaces and parentheses: split after its last ")".
    fields = stat[stat.rindex(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / TICKS


def core_busy() -> dict[int, tuple[float, float]]:
    """Per core: (busy seconds, total seconds) since boot, from /proc/stat."""
    out = {}
    for line in Path("/proc/stat").read_text().splitlines():
        name, *values = line.split()
        if not name.startswith("cpu") or name == "cpu":
            continue
        ticks = [int(v) for v in values[:8]]
        idle = ticks[3] + ticks[4]  # idle + iowait
        out[int(name[3:])] = ((sum(ticks) - idle) / TICKS, sum(ticks) / TICKS)
    return out


def children(root: int) -> list[int]:
    """Every live descendant of ``root``."""
    parent_of: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except (FileNotFoundError, ProcessLookupError):
            continue
        parent_of[int(entry.name)] = int(stat[stat.rindex(")") + 2 :].split()[1])
    found: list[int] = []
    frontier = [root]
    while frontier:
        pid = frontier.pop()
        kids = [child for child, parent in parent_of.items() if parent == pid]
        found += kids
        frontier += kids
    return found


def browser_pids(root: int, user_data_dir: Path) -> list[int]:
    """The Chromium started with ``user_data_dir`` (a descendant of ``root``) and its helpers."""
    marker = f"--user-data-dir={user_data_dir}".encode()
    for pid in children(root):
        try:
            argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
            exe = os.readlink(f"/proc/{pid}/exe")
        except OSError:
            continue
        if "chromium" in exe and marker in argv:
            return [pid, *children(pid)]
    return []


def renice(pids: Iterable[int], niceness: int) -> None:
    """Sets every thread's nice value (Linux keeps it per thread; new threads inherit it)."""
    for pid in pids:
        with contextlib.suppress(FileNotFoundError, ProcessLookupError):
            for task in Path(f"/proc/{pid}/task").iterdir():
                with contextlib.suppress(ProcessLookupError):
                    os.setpriority(os.PRIO_PROCESS, int(task.name), niceness)


def pin(pid: int, cores: set[int]) -> None:
    """Pins every thread of ``pid`` (threads it starts later inherit it)."""
    for task in Path(f"/proc/{pid}/task").iterdir():
        os.sched_setaffinity(int(task.name), cores)


@dataclass
class CpuWindow:
    """CPU used by named process groups and by each core over one window."""

    seconds: float
    process: dict[str, float]  # name -> cores (1.0 = one core busy all window)
    cores: dict[int, float]  # core -> busy fraction

    @property
    def foreign(self) -> float:
        """Cores busy with work none of the metered processes did (other users of the host)."""
        return sum(self.cores.values()) - sum(self.process.values())

    def to_json(self) -> dict[str, object]:
        return {
            "seconds": round(self.seconds, 3),
            "process_cores": {k: round(v, 4) for k, v in self.process.items()},
            "core_busy": {str(k): round(v, 4) for k, v in self.cores.items()},
            "foreign_cores": round(self.foreign, 3),
        }


class CpuMeter:
    """Start, then stop: CPU of each process group between the two."""

    def __init__(self, groups: Mapping[str, Sequence[int]]) -> None:
        self.groups = {name: list(pids) for name, pids in groups.items()}
        self._t0 = 0.0
        self._proc0: dict[int, float] = {}
        self._core0: dict[int, tuple[float, float]] = {}

    def start(self) -> None:
        self._t0 = time.monotonic()
        self._proc0 = {pid: cpu_seconds(pid) for pids in self.groups.values() for pid in pids}
        self._core0 = core_busy()

    def stop(self) -> CpuWindow:
        elapsed = time.monotonic() - self._t0
        core1 = core_busy()
        # A process that exited during the window reads 0: count it as 0, not negative.
        process = {
            name: sum(max(0.0, cpu_seconds(pid) - self._proc0[pid]) for pid in pids) / elapsed
            for name, pids in self.groups.items()
        }
        cores = {}
        for core, (busy, total) in core1.items():
            busy0, total0 = self._core0.get(core, (busy, total))
            cores[core] = (busy - busy0) / (total - total0) if total > total0 else 0.0
        return CpuWindow(elapsed, process, cores)
