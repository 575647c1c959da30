"""A whole talkwire on one machine, as child processes.

`talkwire up` runs one; tests run one per module and restart parts of it
(the relay, to prove calls survive). Each child prints one ``ready ...`` line
once it listens; the stack waits on those lines, never on a sleep.
"""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import socket
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp

from talkwire.config import Address, format_address
from talkwire.internal_auth import SECRET_ENV
from talkwire.route_token import Keyring
from talkwire.secret_files import write_private

READY_TIMEOUT_S = 30.0


class StackError(Exception):
    """A component failed to start; the message carries its last output."""


@dataclass
class StackConfig:
    host: str = "127.0.0.1"
    http_port: int = 8080  # signaling (and the demo page)
    relay_port: int = 3478
    api_key: str = field(default_factory=lambda: "sk-talkwire-dev-" + secrets.token_hex(12))
    demo: bool = True
    relay_workers: int = 1
    echo_delay_ms: int = 0
    transceiver_capacity: int = 100
    # One process per core: each runs one event loop, so a 2-core host carries twice the calls.
    transceivers: int = 1
    connect_timeout: float = 10.0
    log_level: str = "WARNING"
    # Signaling's request limits (PER_S/BURST or "off"). Off here: every client of
    # a one-machine stack shares one address, and the bench opens a hundred calls.
    rate_per_ip: str = "off"
    rate_per_key: str = "off"
    new_flows_per_prefix: str = "off"  # the relay's, for the same reason (all in 127.0.0)
    extra_models: dict[str, str] = field(default_factory=dict)  # model -> agent ws URL
    voice: bool = False  # also run the voice agent (needs talkwire[voice]); then the default
    llm_url: str | None = None  # the voice agent answers through this chat-completions API
    llm_model: str | None = None
    # redis://…: transceivers announce themselves there and signaling finds them
    # there (instead of health-polling the URLs it is given), as a fleet does;
    # the relay keeps its flow cache there.
    registry_url: str | None = None


@dataclass
class Component:
    """One child process that prints ``ready ...`` once it serves."""

    name: str
    argv: list[str]
    process: asyncio.subprocess.Process | None = None
    ready: str = ""  # the rest of its ready line
    output: list[str] = field(default_factory=list)
    _reader: asyncio.Task[None] | None = None

    @classmethod
    async def start(cls, name: str, argv: list[str], env: dict[str, str]) -> Component:
        """Run ``argv`` and wait for its ready line; StackError (with its output) if none comes."""
        component = cls(name, argv)
        component.process = await asyncio.create_subprocess_exec(
            *argv, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT, env=env
        )
        ready: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        component._reader = asyncio.create_task(component._read(ready))
        try:
            component.ready = await asyncio.wait_for(ready, READY_TIMEOUT_S)
        except (TimeoutError, StackError) as exc:
            await component.stop()
            tail = "\n".join(component.output[-20:])
            raise StackError(f"{name} did not become ready: {exc}\n{tail}") from None
        return component

    async def terminate(self, timeout_s: float = 30.0) -> int:
        """SIGTERM, as an orchestrator's stop does; the exit status."""
        assert self.process is not None
        if self.process.returncode is None:
            self.process.terminate()
        status = await asyncio.wait_for(self.process.wait(), timeout_s)
        await self._reaped()
        return status

    async def kill(self) -> None:
        """SIGKILL, as a crash would."""
        assert self.process is not None
        if self.process.returncode is None:
            self.process.kill()
        await self.process.wait()
        await self._reaped()

    async def stop(self, timeout_s: float = 10.0) -> None:
        """SIGTERM, then SIGKILL if it does not exit within ``timeout_s``."""
        try:
            await self.terminate(timeout_s)
        except TimeoutError:
            await self.kill()

    async def _reaped(self) -> None:
        if self._reader is not None:
            await self._reader

    async def _read(self, ready: asyncio.Future[str]) -> None:
        assert self.process is not None and self.process.stdout is not None
        async for raw in self.process.stdout:
            line = raw.decode("utf-8", "replace").rstrip()
            self.output.append(line)
            del self.output[:-200]
            if not ready.done() and line.startswith("ready "):
                ready.set_result(line[len("ready ") :])
            elif os.environ.get("TALKWIRE_STACK_ECHO"):
                print(f"[{self.name}] {line}", file=sys.stderr)
        if not ready.done():
            ready.set_exception(StackError(f"exited with {await self.process.wait()}"))


class Stack:
    def __init__(self, config: StackConfig) -> None:
        self.config = config
        self._dir = tempfile.TemporaryDirectory(prefix="talkwire-")
        self.keyring_path = Path(self._dir.name) / "keyring"
        write_private(self.keyring_path, Keyring.generate().to_text())
        # Through the environment, not argv: `ps` shows every user the argv.
        self.internal_secret = secrets.token_urlsafe(32)
        self.components: dict[str, Component] = {}
        self.agent_url = ""
        self.voice_url = ""
        self.relay_address: Address = (config.host, config.relay_port)
        self.relay_internal: Address | None = None
        self.relay_metrics_urls: dict[str, str] = {}
        self._relay_workers: dict[str, list[int]] = {}
        self.transceiver_url = ""  # the first one's; all of them in transceiver_urls
        self.transceiver_urls: list[str] = []
        self.signaling_url = ""

    @property
    def demo_url(self) -> str:
        return self.signaling_url + "/"

    async def start(self) -> None:
        c = self.config
        try:
            agent = await self._spawn(
                "agent",
                ["agent", "echo", "--listen", f"{c.host}:0", "--delay-ms", str(c.echo_delay_ms)],
            )
            self.agent_url = agent.split()[0].rstrip("/") + "/v1/agents/echo"
            if c.voice:
                voice_args = ["agent", "voice", "--listen", f"{c.host}:0"]
                if c.llm_url:
                    voice_args += ["--llm-url", c.llm_url]
                if c.llm_model:
                    voice_args += ["--llm-model", c.llm_model]
                voice = await self._spawn("voice", voice_args)
                self.voice_url = voice.split()[0].rstrip("/") + "/v1/agents/voice"
            await self.start_relay()
            for index in range(c.transceivers):
                name = "transceiver" if index == 0 else f"transceiver-{index + 1}"
                ready = await self._spawn(name, self._transceiver_args(name))
                self.transceiver_urls.append(ready.split()[0])
            self.transceiver_url = self.transceiver_urls[0]
            signaling_args = [
                "signaling",
                "--listen",
                f"{c.host}:{c.http_port}",
                "--model",
                f"echo={self.agent_url}",
                "--rate-per-ip",
                c.rate_per_ip,
                "--rate-per-key",
                c.rate_per_key,
            ]
            if c.registry_url is not None:
                signaling_args += ["--registry", c.registry_url]
            else:
                for url in self.transceiver_urls:
                    signaling_args += ["--transceiver", url]
            if self.voice_url:
                signaling_args += ["--model", f"voice={self.voice_url}"]
            signaling_args += ["--default-model", "voice" if self.voice_url else "echo"]
            for model, url in c.extra_models.items():
                signaling_args += ["--model", f"{model}={url}"]
            if c.demo:
                signaling_args += ["--demo-dir", str(Path(__file__).parent / "web")]
            self.signaling_url = (
                await self._spawn("signaling", signaling_args, env={"TALKWIRE_API_KEY": c.api_key})
            ).split()[0]
            await self.wait_transceiver_healthy()
        except BaseException:
            await self.stop()
            raise

    def _transceiver_args(self, name: str) -> list[str]:
        c = self.config
        return [
            "transceiver",
            "--id",
            name,
            "--api",
            f"{c.host}:0",
            "--udp",
            f"{c.host}:0",
            "--relay-public",
            format_address(self.relay_address),
            "--keyring",
            str(self.keyring_path),
            "--capacity",
            str(c.transceiver_capacity),
            "--connect-timeout",
            str(c.connect_timeout),
            "--drain-timeout",
            "2",
            *(["--registry", c.registry_url] if c.registry_url is not None else []),
        ]

    async def start_relay(self, name: str = "relay") -> None:
        """Start (or restart) a relay on the same public and internal ports.

        A second name (``relay-b``) runs a second relay beside the first, the
        two sharing the ports through SO_REUSEPORT: a relay pair, where either
        can die without a gap (docs/relay.md, Recovery).
        """
        c = self.config
        if self.relay_internal is None:
            # Fixed across restarts, so transceivers' return traffic finds the new relay.
            self.relay_internal = (c.host, _free_udp_port(c.host, c.relay_workers))
        ready = await self._spawn(
            name,
            [
                "relay",
                "--listen",
                f"{c.host}:{self.relay_address[1]}",
                "--internal",
                format_address(self.relay_internal),
                "--metrics",
                f"{c.host}:0",
                "--keyring",
                str(self.keyring_path),
                "--workers",
                str(c.relay_workers),
                "--trust",
                "127.0.0.0/8",
                "--new-flows-per-prefix",
                c.new_flows_per_prefix,
                *(["--flow-cache", c.registry_url] if c.registry_url is not None else []),
            ],
        )
        # The relay's ready line is JSON naming its bound public addresses (port 0 -> real port).
        info = json.loads(ready)
        host, _, port = info["public"][0].rpartition(":")
        self.relay_address = (host.strip("[]"), int(port))
        self.relay_metrics_urls[name] = f"http://{info['metrics']}/metrics"
        self._relay_workers[name] = list(info["pids"])

    @property
    def relay_metrics_url(self) -> str:
        return self.relay_metrics_urls["relay"]

    async def terminate(self, name: str, timeout_s: float = 30.0) -> int:
        """SIGTERM one component, as an orchestrator's stop does; its exit status."""
        status = await self.components[name].terminate(timeout_s)
        del self.components[name]
        return status

    async def kill(self, name: str) -> None:
        """SIGKILL one component, as a crash would."""
        await self.components.pop(name).kill()
        # A relay's orphaned workers still hold the ports until they notice; a
        # new relay must not share SO_REUSEPORT groups with them.
        await asyncio.gather(*(process_gone(pid) for pid in self._relay_workers.pop(name, [])))

    async def wait_transceiver_healthy(self) -> None:
        async with aiohttp.ClientSession() as http:
            for _ in range(int(READY_TIMEOUT_S / 0.05)):
                async with http.get(self.signaling_url + "/healthz") as response:
                    body = await response.json(content_type=None)
                if body.get("transceivers", {}).get("healthy", 0) >= len(self.transceiver_urls):
                    return
                # Signaling polls transceiver health on its own clock.
                await asyncio.sleep(0.05)
        raise StackError("signaling never saw every transceiver healthy")

    async def stop(self) -> None:
        for name in reversed(list(self.components)):
            await self.components.pop(name).stop()
        self._dir.cleanup()

    async def _spawn(self, name: str, args: list[str], env: dict[str, str] | None = None) -> str:
        environment = {
            **os.environ,
            "TALKWIRE_LOG": self.config.log_level,
            SECRET_ENV: self.internal_secret,
            **(env or {}),
        }
        argv = [sys.executable, "-m", "talkwire.cli", *args]
        component = await Component.start(name, argv, environment)
        self.components[name] = component
        return component.ready


def _free_udp_port(host: str, count: int) -> int:
    """A base port with `count` consecutive free UDP ports (one per relay worker)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    for _ in range(100):
        with socket.socket(family, socket.SOCK_DGRAM) as probe:
            probe.bind((host, 0))
            base: int = probe.getsockname()[1]
        if base + count > 65535:
            continue
        try:
            held = []
            for port in range(base, base + count):
                sock = socket.socket(family, socket.SOCK_DGRAM)
                held.append(sock)
                sock.bind((host, port))
        except OSError:
            continue
        finally:
            for sock in held:
                sock.close()
        return base
    raise StackError(f"no {count} consecutive free UDP ports on {host}")


async def process_gone(pid: int) -> None:
    try:
        fd = os.pidfd_open(pid)
    except ProcessLookupError:
        return
    loop = asyncio.get_running_loop()
    exited: asyncio.Future[None] = loop.create_future()

    def readable() -> None:
        if not exited.done():
            exited.set_result(None)

    loop.add_reader(fd, readable)
    try:
        await asyncio.wait_for(exited, READY_TIMEOUT_S)
    finally:
        loop.remove_reader(fd)
        os.close(fd)
