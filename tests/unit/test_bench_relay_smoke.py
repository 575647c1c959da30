"""bench/relay.py still runs: its smallest mode, one latency trial per path.

Not a benchmark and no timing is asserted: it checks that the C tools build,
the relay starts, and every path delivers the stamped datagrams it was sent.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parents[2] / "bench" / "relay.py"


def test_latency_section_runs_and_every_path_delivers(tmp_path: Path) -> None:
    out = tmp_path / "relay.json"
    args = [sys.executable, str(BENCH), "--quick", "--sections", "latency", "--trials", "1"]
    done = subprocess.run(
        [*args, "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    median = json.loads(out.read_text())["results"]["latency"]["median"]
    assert set(median) == {"no relay", "C recvmmsg/sendmmsg", "talkwire relay"}
    for path in median.values():
        # Stamped datagrams made it through (a busy shared host may drop a few).
        assert path["sent"] > 0 and path["received"] > path["sent"] / 2
        assert 0 < path["p50"] <= path["p99"]
    assert "talkwire - C: p50" in done.stdout
