"""bench/fuzz.py at full size: 10^6 generated datagrams through every decoder and
a live relay (about 25 s): no crash, no flow, no reply, every datagram counted."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Callable
from pathlib import Path


def test_a_million_hostile_datagrams_crash_nothing_create_nothing_answer_nothing(
    tmp_path: Path, bench_run: Callable[[str, list[str]], subprocess.CompletedProcess[str]]
) -> None:
    out = tmp_path / "fuzz.json"
    bench_run("fuzz.py", ["--out", str(out)])
    result = json.loads(out.read_text())
    decoders, live = result["decoders"], result["live_relay"]
    assert decoders["datagrams"] == 1_000_000
    assert len(decoders["decoders"]) >= 10
    assert decoders["crashes"] == {}
    assert decoders["flows_from_public"] == 0
    assert decoders["router_drops"] >= 1_000_000  # every public one, most internal ones
    assert live["datagrams"] == 1_000_000
    assert live["kernel_dropped"] == 0  # so every datagram reached the relay...
    assert live["relay_drops_counted"] == 1_000_000 - live["not_sent"]  # ...and was counted
    assert (live["flows_created"], live["forwarded"], live["replies"]) == (0, 0, 0)
    assert live["relay_alive"] and result["ok"]
