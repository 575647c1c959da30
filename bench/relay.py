"""The relay benchmark (issue 3): talkwire relay against a C baseline, on loopback.

    .venv/bin/python bench/relay.py [--quick] [--sections a,b,...] [--trials N]

Sections (all by default, in one run so that ratios are fair: the host drifts
~25 % within an hour):

- throughput: forwarded 200-byte datagrams per relay CPU-second, one worker,
  1000 client addresses, client -> transceiver (header added) against a C
  recvmmsg/sendmmsg forwarder and a C recvfrom/sendto loop; transceiver ->
  client (header stripped) against a C recvmmsg/sendmmsg header stripper.
- latency: one-way latency p50/p99 at 20 k datagrams/s: no relay, the C
  forwarder, the talkwire relay.
- scaling: 1 vs 2 workers (SO_REUSEPORT, --pin-cpus), C as context.
- creation: first STUN requests from distinct clients turned into flows per
  second, with and without --verify-integrity.
- memory: bytes per flow at 100 k flows (relay RSS delta; tracemalloc in-process).

Load comes from C tools (bench/c/, built with cc -O2 into bench/build/) so
Python on the client side never limits a measurement. CPU is utime + stime
from /proc of the forwarding processes only, over a fixed window. Every load
is bounded in count and time; traffic stays on 127.0.0.0/8. Results go to
bench/results/relay-<timestamp>.json and a table on stdout.
"""

from __future__ import annotations

import argparse
import functools
import gc
import json
import os
import socket
import struct
import sys
import time
import tracemalloc
from collections.abc import Callable, Sequence
from contextlib import ExitStack
from dataclasses import replace
from pathlib import Path
from typing import Any

import common
from relay_lab import (
    HEADER,
    LOCAL,
    QUICK,
    SPRAY_BASE,
    SPRAY_PORT,
    Lab,
    Settings,
    Target,
    fresh_relay,
    interleaved,
    medians,
    paced_latency,
    saturate,
    spray,
    start_loadgen,
    start_sink,
)

from talkwire.encap import pack_header
from talkwire.relay.flows import FlowTable
from talkwire.relay.router import Router, RouterSettings

SECTIONS = ("throughput", "latency", "scaling", "creation", "memory")


# -- sections --------------------------------------------------------------


def section_throughput(lab: Lab) -> dict[str, Any]:
    s = lab.settings
    relay = lab.relay()
    c_mmsg = lab.forwarder("mmsg", lab.sink_port)
    c_plain = lab.forwarder("plain", lab.sink_port)
    tw = Target("talkwire", relay.public_port, relay.pids)
    targets = {"C recvmmsg/sendmmsg": c_mmsg, "C recvfrom/sendto": c_plain, "talkwire relay": tw}

    def to(target: Target, pace_us: int | None = None) -> Callable[[], dict[str, float]]:
        return lambda: saturate(lab, target, pace_us=pace_us)

    print("throughput, client -> transceiver (busy sink):", flush=True)
    forward = interleaved(s.trials, {name: to(t) for name, t in targets.items()})
    waking: dict[str, list[dict[str, float]]] = {}
    if s.woken_sink:
        print("throughput, client -> transceiver (sink woken per arrival):", flush=True)
        waking = interleaved(s.trials, {name: to(t, 0) for name, t in targets.items()})

    # Return path: one "transceiver" socket sends header + payload naming each of
    # 1000 client sockets of a second sink; both forwarders strip the header.
    clients_sink, client_ports = start_sink(lab.tools, s.clients)
    transceiver = start_loadgen(lab.tools, 1)
    try:
        headers = b"".join(pack_header((LOCAL, p), 0) for p in client_ports)
        header_file = lab.tmp / "headers"
        header_file.write_bytes(headers)
        strip = lab.forwarder("strip", 0)
        tw_return = Target("talkwire", relay.internal_ports[0], relay.pids)
        # The relay learns each client's flow from its first return datagram.
        transceiver.ask(
            f"flood {LOCAL} {tw_return.port} {s.clients * 4} 50000 5000 {s.size + HEADER} 1 "
            f"{HEADER} {header_file}",
            15,
        )

        def back(target: Target) -> Callable[[], dict[str, float]]:
            return lambda: saturate(
                lab,
                target,
                gen=transceiver,
                sink=clients_sink,
                size=s.size + HEADER,
                prefixes=(HEADER, header_file),
            )

        print("throughput, transceiver -> client:", flush=True)
        returning = interleaved(
            s.trials, {"C recvmmsg/sendmmsg strip": back(strip), "talkwire relay": back(tw_return)}
        )
    finally:
        transceiver.stop()
        clients_sink.stop()
    out: dict[str, Any] = {}
    for key, trials in (
        ("to_transceiver", forward),
        ("to_transceiver_sink_woken", waking),
        ("to_client", returning),
    ):
        if not trials:
            continue
        m = medians(trials)
        base = next(iter(m.values()))["pps_per_cpu_s"]  # the C recvmmsg/sendmmsg case
        out[key] = {
            "trials": trials,
            "median": m,
            "x_c_mmsg": {name: r["pps_per_cpu_s"] / base for name, r in m.items()},
        }
    return out


def section_latency(lab: Lab) -> dict[str, Any]:
    relay = lab.relay()
    c_mmsg = lab.forwarder("mmsg", lab.sink_port)
    print(f"latency at {lab.settings.latency_rate:,} datagrams/s:", flush=True)
    trials = interleaved(
        lab.settings.trials,
        {
            "no relay": lambda: paced_latency(lab, lab.sink_port),
            "C recvmmsg/sendmmsg": lambda: paced_latency(lab, c_mmsg.port),
            "talkwire relay": lambda: paced_latency(lab, relay.public_port),
        },
    )
    m = medians(trials)
    return {
        "trials": trials,
        "median": m,
        "talkwire_minus_c_us": {
            q: m["talkwire relay"][q] - m["C recvmmsg/sendmmsg"][q] for q in ("p50", "p99")
        },
        "c_minus_direct_us": {
            q: m["C recvmmsg/sendmmsg"][q] - m["no relay"][q] for q in ("p50", "p99")
        },
    }


def section_scaling(lab: Lab) -> dict[str, Any]:
    cpus = sorted(os.sched_getaffinity(0))
    if len(cpus) < 2:
        return {"skipped": "needs 2 CPUs"}
    one, two = lab.relay(1, pin=True), lab.relay(2, pin=True)
    c_one = lab.forwarder("mmsg", lab.sink_port, cpus[:1])
    c_two = lab.forwarder("mmsg", lab.sink_port, cpus[:2])
    print("scaling, pinned workers:", flush=True)
    trials = interleaved(
        lab.settings.trials,
        {
            "talkwire 1 worker": lambda: saturate(lab, Target("1", one.public_port, one.pids)),
            "talkwire 2 workers": lambda: saturate(lab, Target("2", two.public_port, two.pids)),
            "C mmsg 1 process": lambda: saturate(lab, c_one),
            "C mmsg 2 processes": lambda: saturate(lab, c_two),
        },
    )
    m = medians(trials)

    def ratio(a: str, b: str, key: str) -> float:
        return m[b][key] / m[a][key]

    return {
        "trials": trials,
        "median": m,
        "talkwire_2_over_1": {
            "pps": ratio("talkwire 1 worker", "talkwire 2 workers", "pps"),
            "pps_per_cpu_s": ratio("talkwire 1 worker", "talkwire 2 workers", "pps_per_cpu_s"),
        },
        "c_2_over_1": {
            "pps": ratio("C mmsg 1 process", "C mmsg 2 processes", "pps"),
            "pps_per_cpu_s": ratio("C mmsg 1 process", "C mmsg 2 processes", "pps_per_cpu_s"),
        },
    }


def creation_trial(lab: Lab, verify: bool) -> dict[str, float]:
    """First STUN requests from distinct clients, faster than the relay takes them.

    The relay's 4 MB socket buffer queues what it cannot take at once; it is busy
    until the count stops, so flows per CPU-second is its creation rate per core.
    """
    count = lab.settings.creation_flows
    with fresh_relay(lab, verify) as relay:
        created0 = relay.metric("talkwire_relay_flows_created_total", source="stun")
        cpu0 = common.cpu_seconds(relay.pids)
        spray_s = spray(lab, relay, count, rate=0)
        created = relay.wait_stable("talkwire_relay_flows_created_total", 5) - created0
        cpu = common.cpu_seconds(relay.pids) - cpu0
        return {
            "flows_per_cpu_s": created / cpu,
            "offered_per_s": count / spray_s,
            "created": created,
            "cpu_s": cpu,
        }


def section_creation(lab: Lab) -> dict[str, Any]:
    print("flow creation, first STUN from distinct clients:", flush=True)
    trials = interleaved(
        lab.settings.trials,
        {
            "token check": lambda: creation_trial(lab, verify=False),
            "token + MESSAGE-INTEGRITY": lambda: creation_trial(lab, verify=True),
        },
    )
    m = medians(trials)
    return {
        "trials": trials,
        "median": m,
        "integrity_cost": 1
        - m["token + MESSAGE-INTEGRITY"]["flows_per_cpu_s"] / m["token check"]["flows_per_cpu_s"],
    }


def memory_trial(lab: Lab, n_ips: int) -> dict[str, float]:
    """RSS growth of a worker from its first flows to ``memory_flows`` more."""
    count = lab.settings.memory_flows
    with fresh_relay(lab) as relay:
        (pid,) = relay.pids
        flows0 = relay.metric("talkwire_relay_flows")
        gc_hint = common.rss_bytes(pid)
        rate = lab.settings.memory_rate
        for _ in range(4):
            spray(lab, relay, count, rate=rate, n_ips=n_ips)
            flows = relay.wait_stable("talkwire_relay_flows", 5) - flows0
            if flows >= count:
                break
            rate //= 2  # the relay fell behind: resend slower (known clients just pass)
        rss = common.rss_bytes(pid)
        return {"bytes_per_flow": (rss - gc_hint) / flows, "flows": flows, "rss_mb": rss / 2**20}


def traced_per_flow(lab: Lab, n_ips: int) -> float:
    """The same flows made in-process by a Router, counted with tracemalloc.

    Addresses are built inside the traced loop, as recvfrom builds them, so
    only what the table keeps is counted.
    """
    count = lab.settings.memory_flows
    table = FlowTable(1, capacity=count + 1, idle_timeout=600)
    router = Router(RouterSettings(keyring=lab.keyring, cluster=0, ingress_families=(4,)), table)
    data = lab.stun_path.read_bytes()
    base = struct.unpack("!I", socket.inet_aton(SPRAY_BASE))[0]
    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        for i in range(count):
            k = i % n_ips
            ip = socket.inet_ntoa(struct.pack("!I", base + (k // 254) * 256 + k % 254 + 1))
            router.from_new_client(data, (ip, SPRAY_PORT + i // n_ips), 0, 0.0)
        gc.collect()
        after = tracemalloc.get_traced_memory()[0]
    finally:
        tracemalloc.stop()
    if len(table) != count:
        raise RuntimeError(f"in-process router made {len(table)} of {count} flows")
    return (after - before) / count


def section_memory(lab: Lab) -> dict[str, Any]:
    count = lab.settings.memory_flows
    print(f"memory at {count:,} flows:", flush=True)
    layouts = {"distinct IPs": count, "100 IPs x ports": 100}
    trials = interleaved(
        lab.settings.trials,
        {name: functools.partial(memory_trial, lab, n) for name, n in layouts.items()},
    )
    traced = {name: traced_per_flow(lab, n) for name, n in layouts.items()}
    return {"trials": trials, "median": medians(trials), "tracemalloc_bytes_per_flow": traced}


RUNNERS: dict[str, Callable[[Lab], dict[str, Any]]] = {
    "throughput": section_throughput,
    "latency": section_latency,
    "scaling": section_scaling,
    "creation": section_creation,
    "memory": section_memory,
}


# -- report ----------------------------------------------------------------


def report(results: dict[str, dict[str, Any]], settings: Settings) -> str:
    out: list[str] = []
    t = results.get("throughput")
    if t:
        for key, title in (
            ("to_transceiver", "client -> transceiver (header added)"),
            ("to_transceiver_sink_woken", "client -> transceiver, sink woken per arrival"),
            ("to_client", "transceiver -> client (header stripped)"),
        ):
            if key not in t:
                continue
            m = t[key]["median"]
            base = next(iter(m.values()))["pps_per_cpu_s"]
            out.append(
                f"\nforwarding, 1 worker, {title}, {settings.size} B, "
                f"{settings.clients} clients, median of {settings.trials}"
            )
            out.append(common.table(
                ["path", "pps/CPU-s", "x C mmsg", "pps", "CPU util", "loss", "other cores"],
                [[name, r["pps_per_cpu_s"], r["pps_per_cpu_s"] / base, r["pps"],
                  r["cpu_util"], f"{r['loss']:.0%}", r["other_cores"]] for name, r in m.items()],
            ))  # fmt: skip
    lat = results.get("latency")
    if lat:
        m = lat["median"]
        out.append(f"\none-way latency at {settings.latency_rate:,} datagrams/s (us), "
                   f"median of {settings.trials}")  # fmt: skip
        direct = m["no relay"]
        out.append(common.table(
            ["path", "p50", "p90", "p99", "p99.9", "p50 added", "p99 added"],
            [[name, r["p50"], r["p90"], r["p99"], r["p999"], r["p50"] - direct["p50"],
              r["p99"] - direct["p99"]] for name, r in m.items()],
        ))  # fmt: skip
        d = lat["talkwire_minus_c_us"]
        out.append(f"talkwire - C: p50 {d['p50']:+.1f} us, p99 {d['p99']:+.1f} us")
    sc = results.get("scaling")
    if sc and "median" in sc:
        m = sc["median"]
        out.append(f"\nscaling, pinned, saturated, median of {settings.trials}")
        out.append(common.table(
            ["forwarder", "pps", "pps/CPU-s", "CPU util", "loss", "other cores"],
            [[name, r["pps"], r["pps_per_cpu_s"], r["cpu_util"], f"{r['loss']:.0%}",
              r["other_cores"]] for name, r in m.items()],
        ))  # fmt: skip
        tw, c = sc["talkwire_2_over_1"], sc["c_2_over_1"]
        out.append(
            f"2 over 1: talkwire pps x{tw['pps']:.2f} (per CPU-s x{tw['pps_per_cpu_s']:.2f}),"
            f" C x{c['pps']:.2f} (per CPU-s x{c['pps_per_cpu_s']:.2f})"
        )
    cr = results.get("creation")
    if cr:
        m = cr["median"]
        out.append(f"\nflow creation, {settings.creation_flows:,} distinct clients open-loop, "
                   f"median of {settings.trials}")  # fmt: skip
        out.append(common.table(
            ["check", "flows/CPU-s", "offered/s", "created", "CPU s"],
            [[name, r["flows_per_cpu_s"], r["offered_per_s"], r["created"], r["cpu_s"]]
             for name, r in m.items()],
        ))  # fmt: skip
        out.append(f"MESSAGE-INTEGRITY check costs {cr['integrity_cost']:.0%} of the rate")
    mem = results.get("memory")
    if mem:
        m = mem["median"]
        traced = mem["tracemalloc_bytes_per_flow"]
        out.append(
            f"\nmemory per flow at {settings.memory_flows:,} flows, median of {settings.trials}"
        )
        out.append(common.table(
            ["clients", "RSS B/flow", "tracemalloc B/flow", "flows", "RSS MB"],
            [[name, r["bytes_per_flow"], traced[name], r["flows"], r["rss_mb"]]
             for name, r in m.items()],
        ))  # fmt: skip
    return "\n".join(out)


def _noisy(results: dict[str, dict[str, Any]]) -> float:
    """The worst median foreign load of any saturation case, if above a quarter core."""
    worst = 0.0
    tables = [t for t in results.get("throughput", {}).values() if isinstance(t, dict)]
    tables.append(results.get("scaling", {}))
    for section in tables:
        for case in section.get("median", {}).values():
            worst = max(worst, case.get("other_cores", 0.0))
    return worst if worst > 0.25 else 0.0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="short windows, fewer flows (~30 s)")
    parser.add_argument(
        "--sections", default=",".join(SECTIONS), help=f"comma-separated subset of {SECTIONS}"
    )
    parser.add_argument("--trials", type=int, help="trials per case (default 3)")
    parser.add_argument("--out", type=Path, help="write the JSON here instead of bench/results/")
    args = parser.parse_args(argv)
    sections = [name.strip() for name in args.sections.split(",") if name.strip()]
    unknown = [name for name in sections if name not in SECTIONS]
    if unknown:
        parser.error(f"unknown section(s) {unknown}; choose from {SECTIONS}")
    settings = QUICK if args.quick else Settings()
    if args.trials:
        settings = replace(settings, trials=args.trials)
    if settings.trials < 1:
        parser.error("--trials must be >= 1")
    machine = common.machine()  # load average before the run
    started = time.monotonic()
    results: dict[str, dict[str, Any]] = {}
    with ExitStack() as stack:
        lab = Lab(settings, stack)
        for name in sections:
            began = time.monotonic()
            results[name] = RUNNERS[name](lab)
            results[name]["seconds"] = time.monotonic() - began
    data: dict[str, object] = {
        "bench": "relay",
        "argv": sys.argv[1:] if argv is None else list(argv),
        "machine": machine,
        "settings": settings.__dict__,
        "seconds": time.monotonic() - started,
        "load_avg_after": os.getloadavg(),
        "results": results,
    }
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")
        path = args.out
    else:
        path = common.write_results("relay", data)
    print(report(results, settings))
    noisy = _noisy(results)
    if noisy:
        print(
            f"\nwarning: other processes kept {noisy:.2f} cores busy during some trials; "
            "figures are noisy (compare ratios, or rerun on a quiet host)"
        )
    print(f"\n{time.monotonic() - started:.0f} s; results in {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
