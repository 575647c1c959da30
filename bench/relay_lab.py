"""Processes and measurement primitives of the relay benchmark (bench/relay.py).

The C tools (bench/c/: load generator, sink, baseline forwarders) and
``talkwire relay`` processes, spoken to over pipes and /metrics; one
saturation trial, one paced latency trial, one spray of first STUN requests.
Nothing here decides what is measured or prints a report: relay.py does.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path

import aioice.stun
import common

from talkwire import route_token
from talkwire.secret_files import write_private

LOCAL = "127.0.0.1"
HEADER = 24
# Client address ranges for the flow sections (127.64/10 is loopback like all of 127/8).
SPRAY_BASE = "127.64.0.0"
WARM_BASE = "127.63.0.0"
SPRAY_PORT = 21000  # below the ephemeral range, so nothing else is likely bound there
FLOOD_COUNT = 50_000_000  # "unbounded": every flood ends on its time limit


@dataclass(frozen=True)
class Settings:
    trials: int = 3
    window: float = 2.0  # measured seconds of each saturation trial
    warmup: float = 0.3  # seconds of load before the window opens
    clients: int = 1000
    size: int = 200
    burst: int = 16  # datagrams per sendmmsg, from one client
    latency_rate: int = 20_000
    latency_seconds: float = 2.0
    creation_flows: int = 50_000  # distinct clients per flow-creation trial
    memory_flows: int = 100_000
    memory_rate: int = 30_000  # paced so that the relay creates every flow
    sink_pace_us: int = 500  # throughput: the sink drains on a timer (see saturate)
    woken_sink: bool = True  # also measure client -> transceiver with a sink woken per arrival


QUICK = Settings(
    window=0.3,
    warmup=0.1,
    latency_seconds=0.4,
    creation_flows=10_000,
    memory_flows=10_000,
    woken_sink=False,
)


# -- processes -------------------------------------------------------------


class Tools:
    """The C load generator, sink and forwarders, built on first use."""

    def __init__(self) -> None:
        c = common.BENCH_DIR / "c"
        self.forwarder = common.build_c("forwarder", c / "forwarder.c")
        self.loadgen = common.build_c("loadgen", c / "loadgen.c")
        self.sink = common.build_c("sink", c / "sink.c")


@dataclass
class Target:
    """Something load is sent to: its port and the processes whose CPU counts."""

    name: str
    port: int
    pids: list[int]


def start_sink(tools: Tools, sockets: int = 1) -> tuple[common.LineProcess, list[int]]:
    sink = common.LineProcess([str(tools.sink), LOCAL, str(sockets)], "sink")
    ready = sink.read_line(10)
    return sink, [int(p) for p in ready.split()[1].split(",")]


def start_loadgen(tools: Tools, sources: int) -> common.LineProcess:
    gen = common.LineProcess([str(tools.loadgen), LOCAL, str(sources)], "loadgen")
    gen.read_line(10)
    return gen


def start_forwarder(
    tools: Tools, mode: str, dest_port: int, listen_port: int = 0, cpu: int | None = None
) -> tuple[common.LineProcess, int]:
    args = [str(tools.forwarder), mode, LOCAL, str(listen_port), LOCAL, str(dest_port)]
    fwd = common.LineProcess(args, f"forwarder {mode}")
    port = int(fwd.read_line(10).split()[1])
    if cpu is not None:
        os.sched_setaffinity(fwd.pid, {cpu})
    return fwd, port


class Relay:
    """A ``talkwire relay`` process on loopback, with its ready line and /metrics."""

    def __init__(
        self,
        keyring: Path,
        *,
        workers: int = 1,
        pin: bool = False,
        verify: bool = False,
        socket_buffer: int = 0,
    ) -> None:
        args = [
            sys.executable, "-m", "talkwire.cli", "relay",
            "--listen", f"{LOCAL}:0", "--internal", f"{LOCAL}:0",
            "--keyring", str(keyring), "--trust", "127.0.0.0/8",
            "--workers", str(workers), "--metrics", f"{LOCAL}:0",
            "--idle-timeout", "600", "--max-flows", "1000000",
            # The spray creates flows from whole /24s: measure creation, not the limit.
            "--new-flows-per-prefix", "off",
        ]  # fmt: skip
        if pin:
            args.append("--pin-cpus")
        if verify:
            args.append("--verify-integrity")
        if socket_buffer:
            args += ["--socket-buffer", str(socket_buffer)]
        self.proc = common.LineProcess(args, "talkwire relay")
        deadline = time.monotonic() + 30
        line = ""
        while not line.startswith("ready "):
            line = self.proc.read_line(max(0.1, deadline - time.monotonic()))
        info = json.loads(line.partition(" ")[2])
        self.public_port = _port(info["public"][0])
        self.internal_ports = [_port(a) for a in info["internal"]]
        self.pids: list[int] = info["pids"]
        self._url = f"http://{info['metrics']}/metrics"

    def metric(self, name: str, **labels: str) -> float:
        """Sum of a metric over its series (every worker) matching ``labels``."""
        with urllib.request.urlopen(self._url, timeout=5) as response:
            text = response.read().decode()
        wanted = [f'{k}="{v}"' for k, v in labels.items()]
        total = 0.0
        for line in text.splitlines():
            if line.startswith((f"{name}{{", f"{name} ")) and all(w in line for w in wanted):
                total += float(line.rsplit(" ", 1)[1])
        return total

    def wait_metric(self, name: str, at_least: float, timeout: float) -> float:
        deadline = time.monotonic() + timeout
        value = self.metric(name)
        while value < at_least and time.monotonic() < deadline:
            time.sleep(0.05)  # counters are published per batch and per 0.25 s tick
            value = self.metric(name)
        return value

    def wait_stable(self, name: str, timeout: float) -> float:
        """The metric once two readings agree (the backlog is drained).

        A worker still at work publishes after every batch, so 0.15 s without a
        change means it is idle.
        """
        deadline = time.monotonic() + timeout
        last = self.metric(name)
        while time.monotonic() < deadline:
            time.sleep(0.15)
            value = self.metric(name)
            if value == last:
                return value
            last = value
        return last

    def stop(self) -> None:
        self.proc.stop()


def _port(address: str) -> int:
    return int(address.rsplit(":", 1)[1])


def binding_request(keyring: route_token.Keyring, transceiver: tuple[str, int]) -> bytes:
    """A client's first check: USERNAME '<route token>:abcd', MESSAGE-INTEGRITY, FINGERPRINT."""
    ufrag = route_token.mint(keyring, 0, transceiver)
    message = aioice.stun.Message(
        message_method=aioice.stun.Method.BINDING, message_class=aioice.stun.Class.REQUEST
    )
    message.attributes["USERNAME"] = f"{ufrag}:abcd"
    message.attributes["PRIORITY"] = 1853824767
    message.attributes["ICE-CONTROLLING"] = 1
    message.add_message_integrity(route_token.ice_password(keyring, ufrag).encode("ascii"))
    message.add_fingerprint()
    return bytes(message)


class Lab:
    """Long-lived processes shared by the sections, created on first use, all stopped at exit."""

    def __init__(self, settings: Settings, stack: ExitStack) -> None:
        self.settings = settings
        self._stack = stack
        self.tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="relay-bench-")))
        self.keyring = route_token.Keyring.generate()
        self.keyring_path = self.tmp / "keyring"
        write_private(self.keyring_path, self.keyring.to_text())
        self._cache: dict[str, object] = {}
        self.tools = Tools()
        self.sink, ports = start_sink(self.tools)
        self._keep(self.sink)
        self.sink_port = ports[0]
        self.loadgen = self._keep(start_loadgen(self.tools, settings.clients))
        self.stun_path = self.tmp / "stun"
        self.stun_path.write_bytes(binding_request(self.keyring, (LOCAL, self.sink_port)))

    def _keep(self, proc: common.LineProcess) -> common.LineProcess:
        self._stack.callback(proc.stop)
        return proc

    def retire(self, relay: Relay) -> None:
        """SIGTERM now, reap at exit: a relay takes ~0.5 s to stop, no need to wait for it."""
        relay.proc.proc.terminate()
        self._keep(relay.proc)

    def cached(self, key: str, make: Callable[[], object]) -> object:
        if key not in self._cache:
            self._cache[key] = make()
        return self._cache[key]

    def forwarder(self, mode: str, dest_port: int, cpus: Sequence[int | None] = (None,)) -> Target:
        """C forwarder instance(s) sharing one port (SO_REUSEPORT), each optionally pinned."""

        def make() -> Target:
            pids: list[int] = []
            port = 0
            for cpu in cpus:
                proc, port = start_forwarder(self.tools, mode, dest_port, port, cpu)
                self._keep(proc)
                pids.append(proc.pid)
            return Target(f"C {mode} x{len(cpus)}", port, pids)

        target = self.cached(f"fwd {mode} {dest_port} {list(cpus)}", make)
        assert isinstance(target, Target)
        return target

    def relay(self, workers: int = 1, pin: bool = False) -> Relay:
        """A relay with a flow for every load-generator client (their first STUN)."""

        def make() -> Relay:
            relay = Relay(self.keyring_path, workers=workers, pin=pin)
            self._stack.callback(relay.stop)
            self.prime(relay)
            return relay

        relay = self.cached(f"relay {workers} {pin}", make)
        assert isinstance(relay, Relay)
        return relay

    def prime(self, relay: Relay) -> None:
        clients = self.settings.clients
        for _ in range(3):
            self.loadgen.ask(f"prime {LOCAL} {relay.public_port} 20000 {self.stun_path}", 30)
            if relay.wait_metric("talkwire_relay_flows", clients, 3) >= clients:
                return
        raise RuntimeError(f"relay made {relay.metric('talkwire_relay_flows')} of {clients} flows")


# -- measurements ----------------------------------------------------------


def saturate(
    lab: Lab,
    target: Target,
    *,
    gen: common.LineProcess | None = None,
    sink: common.LineProcess | None = None,
    size: int | None = None,
    prefixes: tuple[int, Path] | None = None,
    pace_us: int | None = None,
) -> dict[str, float]:
    """Open-loop load at ``target``; forwarded datagrams and forwarder CPU over one window.

    ``pace_us`` > 0: the sink drains on a timer, so forwarders never pay to wake it
    (a busy consumer; the default); 0: every datagram may wake it.
    """
    s = lab.settings
    gen = gen or lab.loadgen
    sink = sink or lab.sink
    size = size or s.size
    plen, pfile = prefixes or (0, "-")
    sink.ask(f"pace {s.sink_pace_us if pace_us is None else pace_us}")
    sink.ask("reset")
    max_ms = int((s.warmup + s.window + 0.1) * 1000)
    gen.send(
        f"flood {LOCAL} {target.port} {FLOOD_COUNT} 0 {max_ms} {size} {s.burst} {plen} {pfile}"
    )
    ours = [*target.pids, gen.pid, sink.pid]
    time.sleep(s.warmup)
    cpu0, n0, t0 = common.cpu_seconds(target.pids), _count(sink), time.monotonic()
    ours0, busy0 = common.cpu_seconds(ours), common.busy_seconds()
    time.sleep(s.window)
    cpu1, n1, t1 = common.cpu_seconds(target.pids), _count(sink), time.monotonic()
    ours1, busy1 = common.cpu_seconds(ours), common.busy_seconds()
    sent = common.fields(gen.read_line(max_ms / 1000 + 10))["sent"]
    _settle(sink)
    received = _count(sink)
    packets, cpu, wall = n1 - n0, cpu1 - cpu0, t1 - t0
    return {
        "pps": packets / wall,
        "pps_per_cpu_s": packets / cpu if cpu > 0 else float("nan"),
        "cpu_util": cpu / wall,
        "loss": 1 - received / sent if sent else float("nan"),
        # Cores busy with anything but forwarder, load generator and sink (other
        # users, kernel threads): high values mean a noisy trial.
        "other_cores": max(0.0, (busy1 - busy0) - (ours1 - ours0)) / wall,
        "sent": sent,
        "received": received,
    }


def _count(sink: common.LineProcess) -> float:
    return common.fields(sink.ask("count"))["count"]


def _settle(sink: common.LineProcess, timeout: float = 1.0) -> None:
    """Wait until datagrams in flight have arrived (the count stops moving)."""
    deadline = time.monotonic() + timeout
    last = _count(sink)
    while time.monotonic() < deadline:
        time.sleep(0.02)
        now = _count(sink)
        if now == last:
            return
        last = now


def paced_latency(lab: Lab, port: int) -> dict[str, float]:
    """Stamped datagrams at the latency rate, one per send, rotating over the clients."""
    s = lab.settings
    count = int(s.latency_rate * s.latency_seconds)
    max_ms = int(s.latency_seconds * 1000) + 500
    lab.sink.ask("pace 0")  # wake on every arrival: latency is what is measured
    lab.sink.ask("reset")
    reply = lab.loadgen.ask(
        f"flood {LOCAL} {port} {count} {s.latency_rate} {max_ms} {s.size} 1 0 -",
        max_ms / 1000 + 10,
    )
    sent = common.fields(reply)["sent"]
    _settle(lab.sink)
    lat = common.fields(lab.sink.ask("lat"))
    result: dict[str, float] = {
        k: lat[k] / 1000 for k in ("min", "p50", "p90", "p99", "p999", "max") if k in lat
    }
    result["received"] = lat["n"]
    result["sent"] = sent
    return result


def interleaved(
    trials: int, runs: dict[str, Callable[[], dict[str, float]]]
) -> dict[str, list[dict[str, float]]]:
    """Trial 1 of every case, then trial 2 of every case...: drift hits all alike."""
    out: dict[str, list[dict[str, float]]] = {name: [] for name in runs}
    for trial in range(trials):
        for name, run in runs.items():
            out[name].append(run())
            print(f"  trial {trial + 1}/{trials} {name}: {_brief(out[name][-1])}", flush=True)
    return out


def _brief(result: dict[str, float]) -> str:
    return " ".join(f"{k}={v:,.3g}" for k, v in result.items())


def medians(trials: dict[str, list[dict[str, float]]]) -> dict[str, dict[str, float]]:
    return {
        name: {key: common.median(t[key] for t in runs) for key in runs[0]}
        for name, runs in trials.items()
    }


@contextmanager
def fresh_relay(lab: Lab, verify: bool = False) -> Iterator[Relay]:
    """An empty relay for one flow trial, warmed by a few flows from another range."""
    relay = Relay(lab.keyring_path, verify=verify, socket_buffer=4 << 20)
    # A busy transceiver, as in the throughput section: forwarding each first
    # STUN on must not also pay for waking the sink.
    lab.sink.ask(f"pace {lab.settings.sink_pace_us}")
    try:
        spray(lab, relay, 200, rate=20_000, base=WARM_BASE, n_ips=200)
        relay.wait_metric("talkwire_relay_flows", 200, 3)
        yield relay
    finally:
        lab.retire(relay)


def spray(
    lab: Lab, relay: Relay, count: int, *, rate: int, base: str = SPRAY_BASE, n_ips: int = 0
) -> float:
    """``count`` first STUN requests from distinct clients; returns the seconds it took.

    Client i is IP ``base`` + (i % n_ips) (default: all distinct), port SPRAY_PORT + i // n_ips.
    """
    n_ips = n_ips or count
    max_ms = 60_000
    reply = common.fields(
        lab.loadgen.ask(
            f"spray {LOCAL} {relay.public_port} {count} {rate} {max_ms} {lab.stun_path} "
            f"{base} {n_ips} {SPRAY_PORT}",
            max_ms / 1000 + 10,
        )
    )
    if reply["failed"] > count * 0.01:
        raise RuntimeError(
            f"{reply['failed']:.0f} of {count} client addresses could not be bound "
            f"(is something bound to port {SPRAY_PORT}?)"
        )
    return reply["ns"] / 1e9
