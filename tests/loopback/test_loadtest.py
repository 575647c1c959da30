"""`talkwire loadtest` against a real one-machine stack, as a user runs it."""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path

import pytest

from talkwire.stack import Stack

pytestmark = pytest.mark.asyncio(loop_scope="module")


async def loadtest(*args: str, key: str) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "talkwire.cli", "loadtest", *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env={"PATH": "/usr/bin:/bin", "TALKWIRE_API_KEY": key},
    )  # fmt: skip
    out, err = await asyncio.wait_for(proc.communicate(), 120)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


async def test_calls_come_up_echo_and_are_reported(stack: Stack, tmp_path: Path) -> None:
    code, out, err = await loadtest(
        "--url", stack.signaling_url, "--calls", "4", "--rate", "8", "--hold", "3",
        "--json", str(tmp_path / "r.json"), "--html", str(tmp_path / "r.html"),
        key=stack.config.api_key,
    )  # fmt: skip
    assert code == 0, out + err
    summary = json.loads((tmp_path / "r.json").read_text())["summary"]
    assert summary["ok"] == 4 and summary["failures"] == {}
    assert summary["connect_ms"]["n"] == 4
    assert summary["round_trip_ms"]["n"] >= 4 * 2  # about one burst a second per call
    assert 0 < summary["round_trip_ms"]["p50"] < 1000
    assert "echo round trip (ms)" in out and "calls 4, ok 4" in out
    assert "calls 4/4 started" in err  # the progress line
    page = (tmp_path / "r.html").read_text()
    assert "<svg" in page and page.count("<rect") >= 1


async def test_failures_are_counted_by_cause_and_fail_the_run(stack: Stack) -> None:
    code, out, _ = await loadtest(
        "--url", stack.signaling_url, "--calls", "2", "--rate", "10", "--hold", "1",
        key="sk-wrong",
    )  # fmt: skip
    assert code == 1
    assert "failed: 2 x signaling 401 invalid_api_key" in out
