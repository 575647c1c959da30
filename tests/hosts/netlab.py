"""Several hosts on one machine: a network namespace per host, all on one bridge.

Each host gets its own namespace, an ``eth0`` with one address in
``10.99.0.0/24`` and a route to the others, so what one host sends crosses a
real (virtual) link to another, as between machines. Processes run in a host
with ``ip netns exec``; test code reaches a host through :class:`HostLoop`, an
event loop on a thread that has entered the host's namespace, so every socket
that loop opens (aiortc's, aiohttp's) is that host's.

Needs root (CAP_NET_ADMIN) and iproute2's ``ip``; ``scripts/bootstrap``
installs iproute2. Nothing leaves the namespaces: the bridge has no uplink.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import ctypes
import os
import re
import subprocess
import sys
import threading
from collections.abc import Coroutine, Iterator
from dataclasses import dataclass, field
from typing import Any, TypeVar

from talkwire.stack import Component

SUBNET = "10.99.0"
CLONE_NEWNET = 0x40000000
_OURS = re.compile(r"^twlab(\d+)-")

T = TypeVar("T")


def ip(*args: str) -> None:
    done = subprocess.run(["ip", *args], capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"ip {' '.join(args)}: {done.stderr.strip()}")


def namespaces() -> list[str]:
    listed = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, check=True)
    return [line.split()[0] for line in listed.stdout.splitlines() if line.strip()]


def remove_namespace(name: str) -> None:
    """Kill whatever still runs in it, then delete it (its veth goes with it)."""
    pids = subprocess.run(
        ["ip", "netns", "pids", name], capture_output=True, text=True, check=False
    ).stdout.split()
    for pid in pids:
        with contextlib.suppress(ProcessLookupError, ValueError):
            os.kill(int(pid), 9)
    subprocess.run(["ip", "netns", "del", name], capture_output=True, check=False)


def remove_orphans() -> None:
    """Namespaces a crashed earlier run left behind (its pid is gone)."""
    for name in namespaces():
        match = _OURS.match(name)
        if match and not os.path.exists(f"/proc/{match[1]}"):
            remove_namespace(name)


class HostLoop:
    """An event loop on its own thread, inside a host's network namespace."""

    def __init__(self, namespace: str) -> None:
        self.namespace = namespace
        self.loop = asyncio.new_event_loop()
        entered: concurrent.futures.Future[None] = concurrent.futures.Future()
        self._thread = threading.Thread(
            target=self._run, args=(entered,), name=f"host-{namespace}", daemon=True
        )
        self._thread.start()
        entered.result(10)

    def _run(self, entered: concurrent.futures.Future[None]) -> None:
        # setns moves only this thread; threads it starts inherit the namespace.
        libc = ctypes.CDLL(None, use_errno=True)
        fd = os.open(f"/run/netns/{self.namespace}", os.O_RDONLY)
        try:
            if libc.setns(fd, CLONE_NEWNET) != 0:
                error = ctypes.get_errno()
                why = f"setns {self.namespace}: {os.strerror(error)}"
                entered.set_exception(OSError(error, why))
                return
        finally:
            os.close(fd)
        asyncio.set_event_loop(self.loop)
        entered.set_result(None)
        self.loop.run_forever()
        self.loop.run_until_complete(self.loop.shutdown_asyncgens())
        self.loop.close()

    async def run(self, coroutine: Coroutine[Any, Any, T], timeout: float = 60.0) -> T:
        """Run ``coroutine`` on this host and await its result from any loop."""
        future = asyncio.run_coroutine_threadsafe(coroutine, self.loop)
        try:
            return await asyncio.wait_for(asyncio.wrap_future(future), timeout)
        except TimeoutError:
            future.cancel()
            raise

    def close(self) -> None:
        async def cancel_all() -> None:
            tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

        if self.loop.is_running():
            with contextlib.suppress(Exception):
                asyncio.run_coroutine_threadsafe(cancel_all(), self.loop).result(10)
            self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(10)


@dataclass
class Host:
    name: str
    namespace: str
    address: str
    _loop: HostLoop | None = field(default=None, repr=False)

    def argv(self, *command: str) -> list[str]:
        return ["ip", "netns", "exec", self.namespace, *command]

    def talkwire(self, *args: str) -> list[str]:
        return self.argv(sys.executable, "-m", "talkwire.cli", *args)

    async def start(self, name: str, argv: list[str], env: dict[str, str]) -> Component:
        return await Component.start(f"{self.name}/{name}", argv, env)

    @property
    def loop(self) -> HostLoop:
        if self._loop is None:
            self._loop = HostLoop(self.namespace)
        return self._loop

    async def run(self, coroutine: Coroutine[Any, Any, T], timeout: float = 60.0) -> T:
        return await self.loop.run(coroutine, timeout)


class Lab:
    """The namespaces of one test run; ``close`` removes them all, whatever happened."""

    def __init__(self) -> None:
        remove_orphans()
        self.tag = f"twlab{os.getpid()}"
        self.bridge_ns = f"{self.tag}-bridge"
        self.hosts: dict[str, Host] = {}
        self._made: list[str] = []
        self._make_namespace(self.bridge_ns)
        ip("-n", self.bridge_ns, "link", "add", "br0", "type", "bridge")
        ip("-n", self.bridge_ns, "link", "set", "br0", "up")

    def _make_namespace(self, name: str) -> None:
        ip("netns", "add", name)
        self._made.append(name)
        ip("-n", name, "link", "set", "lo", "up")

    def add(self, name: str, index: int) -> Host:
        """Host ``name`` at ``10.99.0.<index>``, cabled to the bridge."""
        namespace = f"{self.tag}-{name}"
        self._make_namespace(namespace)
        inside, outside = f"{self.tag[-6:]}h{index}", f"{self.tag[-6:]}b{index}"
        ip("link", "add", inside, "type", "veth", "peer", "name", outside)
        ip("link", "set", inside, "netns", namespace)
        ip("link", "set", outside, "netns", self.bridge_ns)
        ip("-n", namespace, "link", "set", inside, "name", "eth0")
        address = f"{SUBNET}.{index}"
        ip("-n", namespace, "addr", "add", f"{address}/24", "dev", "eth0")
        ip("-n", namespace, "link", "set", "eth0", "up")
        ip("-n", self.bridge_ns, "link", "set", outside, "master", "br0", "up")
        host = Host(name, namespace, address)
        self.hosts[name] = host
        return host

    def __getitem__(self, name: str) -> Host:
        return self.hosts[name]

    def close(self) -> None:
        for host in self.hosts.values():
            if host._loop is not None:
                host._loop.close()
        for name in reversed(self._made):
            remove_namespace(name)
        self._made.clear()


@contextlib.contextmanager
def lab() -> Iterator[Lab]:
    made = Lab()
    try:
        yield made
    finally:
        made.close()
