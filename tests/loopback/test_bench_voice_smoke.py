"""bench/voice.py still runs: its smallest mode, two turns, one barge-in, one ramp step.

Not a benchmark and no timing is asserted: it checks that every section ends
with measurements in it, against real models and a real stack.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Callable
from pathlib import Path


def test_the_quick_voice_bench_measures_every_section(
    tmp_path: Path, bench_run: Callable[[str, list[str]], subprocess.CompletedProcess[str]]
) -> None:
    out = tmp_path / "voice.json"
    args = ["--quick", "--turns", "2", "--barges", "1", "--steps", "1", "--out", str(out)]
    done = bench_run("voice.py", args)
    result = json.loads(out.read_text())
    assert result["reply_ms"]["n"] + sum(result["reply_failures"].values()) == 2
    assert result["reply_ms"]["n"] >= 1
    assert result["barge_in_ms"]["n"] + sum(result["barge_failures"].values()) == 1
    assert result["echo_round_trip_ms"]["n"] == 10
    assert 0 <= result["recognition"]["wer_mean"] <= 0.3
    assert 0 < result["recognition"]["stt_rtf"] < 1 and 0 < result["recognition"]["tts_rtf"] < 1
    assert [step["calls"] for step in result["ramp"]] == [1]
    assert "end of speech -> first reply audio" in done.stdout
