"""bench/scale.py --quick, tiny: so the scale benchmark cannot rot."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Callable
from pathlib import Path


def test_the_scale_bench_measures_restart_gaps_with_and_without_the_cache_and_a_pair(
    tmp_path: Path,
    bench_run: Callable[[str, list[str]], subprocess.CompletedProcess[str]],
    tcp_port: int,
) -> None:
    out = tmp_path / "scale.json"
    args = ["--quick", "--calls", "2", "--redis-port", str(tcp_port), "--out", str(out)]
    done = bench_run("scale.py", args)
    result = json.loads(out.read_text())
    for config in ("no_cache", "cache"):
        figures = result[config]
        assert figures["calls"] == 2 and figures["restarts"] == 1
        # Every call lost audio while the relay was down, and every flow came back.
        assert figures["gap_ms"]["p50"] >= figures["relay_restart_ms"]["p50"] * 0.5 > 0
        assert sum(figures["recovered_by"].values()) >= 2
    pair = result["pair"]  # one of two relays killed: the other carries every call on
    assert pair["calls"] == 2 and sum(pair["recovered_by"].values()) >= 2
    assert set(pair["rejoin_gap_ms"]) == {"p50", "p95", "max"}
    assert "cache / baseline gap p95" in done.stdout and "pair / baseline" in done.stdout
