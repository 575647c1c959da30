"""The lab itself: it removes its namespaces whatever happens, and those a
crashed run left behind."""

from __future__ import annotations

import os
import subprocess
import time

import pytest
from netlab import ip, lab, namespaces


def pids_in(namespace: str) -> list[str]:
    listed = subprocess.run(
        ["ip", "netns", "pids", namespace], capture_output=True, text=True, check=False
    )
    return listed.stdout.split()


def test_a_failing_test_leaves_no_namespace_and_no_process_behind() -> None:
    left: list[str] = []
    sleeper = None
    with pytest.raises(RuntimeError, match="the test failed"), lab() as made:
        host = made.add("x", 250)
        left += [host.namespace, made.bridge_ns]
        sleeper = subprocess.Popen(host.argv("sleep", "600"))
        for _ in range(200):  # until it has entered the namespace (ip netns exec is quick)
            if str(sleeper.pid) in pids_in(host.namespace):
                break
            time.sleep(0.01)
        raise RuntimeError("the test failed")
    assert not set(left) & set(namespaces())
    assert sleeper is not None and sleeper.wait(10) == -9  # killed with its namespace


def test_a_crashed_runs_namespaces_are_removed_by_the_next_lab() -> None:
    with open("/proc/sys/kernel/pid_max") as f:
        dead = int(f.read())  # pids stay below it: no process has this one
    assert not os.path.exists(f"/proc/{dead}")
    stale = f"twlab{dead}-stale"
    ip("netns", "add", stale)
    with lab():
        assert stale not in namespaces()
