"""bench/call.py still runs: its smallest mode with a one-step ramp, on two transceivers.

Not a benchmark and no timing is asserted: it checks that every section ends
with measurements in it, against real Chromium and a real stack, that the
ramp's calls and CPU are counted on both transceiver processes, and that a
ramp reaching admission's limit reports capacity rather than an error.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Callable
from pathlib import Path


def test_the_quick_call_bench_measures_every_section(
    tmp_path: Path, bench_run: Callable[[str, list[str]], subprocess.CompletedProcess[str]]
) -> None:
    out = tmp_path / "call.json"
    args = ["--quick", "--calls", "2", "--bursts", "4", "--steps", "2", "--window", "1"]
    done = bench_run("call.py", [*args, "--transceivers", "2", "--out", str(out)])
    result = json.loads(out.read_text())
    for client in ("floor", "chromium", "aiortc"):
        assert result["setup"][client]["dtls"]["n"] == 2
        assert result["rtt"][client]["n"] + result["rtt"][client]["lost"] == 4
        assert result["rtt"][client]["n"] >= 1
    [step] = result["ramp"]["steps"]
    assert step["calls"] == 4  # two load calls and the two probes
    assert set(step["calls_by_transceiver"]) == {"transceiver", "transceiver-2"}
    assert sum(step["calls_by_transceiver"].values()) == 4
    assert all(cores > 0 for cores in step["transceiver_split"].values())
    assert step["load_packets_per_call_second"]["received"] > 0
    assert result["capacity"]["largest_step_tried"] == 4
    assert result["ramp"]["left_active"] == 0
    assert "targets" in done.stdout


def test_the_ramp_reports_an_admission_refusal_as_capacity_reached(
    tmp_path: Path, bench_run: Callable[[str, list[str]], subprocess.CompletedProcess[str]]
) -> None:
    out = tmp_path / "call.json"
    # Three calls fit: the two probes and one load call; the second step asks for six.
    args = ["--quick", "--skip", "setup,rtt", "--bursts", "4", "--steps", "1,4", "--window", "1"]
    done = bench_run("call.py", [*args, "--capacity", "3", "--out", str(out)])
    result = json.loads(out.read_text())
    ramp = result["ramp"]
    assert ramp["error"] is None
    assert [step["calls"] for step in ramp["steps"]] == [3]
    # The coarse step is refused, then the bisection's (four calls) too.
    assert [refusal["calls"] for refusal in ramp["refused"]] == [6, 4]
    assert all(r["refused"] >= 1 and "503" in r["detail"] for r in ramp["refused"])
    assert result["capacity"]["max_calls_ok"] == 3
    assert ramp["left_active"] == 0
    assert "capacity reached" in done.stdout
