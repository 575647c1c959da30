"""What the call benchmark prints: one line per ramp step, then the summary."""

from __future__ import annotations

from typing import Any

ADDED_P95_LIMIT_MS = 20.0
TARGET_DTLS_MS = 40.0
TARGET_RTT_MS = 80.0
TARGET_CALLS = 50
FOREIGN_NOISY = 0.25  # cores of other users' work during a measurement


def fmt(value: float | None, digits: int = 1) -> str:
    return "–" if value is None else f"{value:.{digits}f}"


STEP_HEADER = (
    "  calls  transceiver  ms/call-s   aiortc probe p50/p95 (+p95)  Chromium probe p50/p95 (+p95)"
    "  load pkt/s/call  cores 0/1  chromium agent relay foreign"
)


def print_step(step: dict[str, Any]) -> None:
    lat, chrome = step["latency"], step["chromium_latency"]
    cores = step["cpu"]["core_busy"]
    procs = step["cpu"]["process_cores"]
    rate = step.get("load_packets_per_call_second", {})
    verdict = "" if "ok" not in step else ("  ok" if step["ok"] else "  over")
    if step.get("load_side_saturated"):
        verdict += " (load core saturated)"
    if step.get("dropped", 0) > 0:
        verdict += f" ({step['dropped']} calls dropped by the server)"
    if step.get("refine"):
        verdict += " (bisecting)"
    split = step.get("transceiver_split", {})
    if len(split) > 1:
        calls = step.get("calls_by_transceiver", {})
        verdict += "  split " + ", ".join(
            f"{name} {100 * cores:.0f}%" + (f"/{calls[name]} calls" if name in calls else "")
            for name, cores in sorted(split.items())
        )
    lost = f" lost {lat['lost']}" if lat["lost"] else ""
    busy = "/".join(f"{100 * cores[c]:.0f}%" for c in sorted(cores))
    print(
        f"  {step['calls']:5d}  {100 * step['transceiver_cores']:10.1f}%"
        f"  {step['cpu_ms_per_call_second']:9.1f}"
        f"   {fmt(lat['p50']):>6s}/{fmt(lat['p95']):<6s} ({fmt(step.get('added_p95_ms')):>5s})"
        f"{lost:8s}     {fmt(chrome['p50']):>6s}/{fmt(chrome['p95']):<6s}"
        f" ({fmt(step.get('chromium_added_p95_ms')):>5s})"
        f"       {fmt(rate.get('sent'), 0):>3s}/{fmt(rate.get('received'), 0):<3s}"
        f"     {busy:9s}  {100 * procs.get('chromium', 0):5.0f}%"
        f" {100 * procs.get('agent', 0):4.0f}% {100 * procs.get('relay', 0):4.0f}%"
        f" {100 * step['foreign_cores']:5.0f}%{verdict}",
        flush=True,
    )


def calls_per_core(results: dict[str, Any]) -> float | None:
    """The ramp's most good calls per transceiver process (each has a core)."""
    calls = (results.get("capacity") or {}).get("max_calls_ok")
    return None if calls is None else calls / results.get("transceivers", 1)


def ratio(value: float | None, floor: float | None) -> str:
    if value is None or floor is None or floor <= 0:
        return "–"
    return f"{value:.1f} = floor {floor:.1f} {value - floor:+.1f} ms (×{value / floor:.2f})"


def print_summary(results: dict[str, Any]) -> None:
    print()
    print(f"talkwire call benchmark — {results['when']}, {results['chromium']}")
    print(f"  {results['pinning']}")
    setup = results.get("setup", {})
    rtt = results.get("rtt", {})
    header = (
        f"  {'':32s} {'answer':>14s} {'ICE':>14s} {'DTLS done':>14s} {'first audio':>14s}"
        f" {'round trip':>15s}"
    )
    print("\n  p50/p95 ms after the offer POST (round trip: echo of 40 ms bursts)")
    print(header)
    rows = [
        ("floor (2 PCs in one page)", "floor"),
        ("talkwire, Chromium", "chromium"),
        ("talkwire, aiortc client", "aiortc"),
    ]
    for label, key in rows:
        s = setup.get(key, {})
        cells = [
            f"{fmt(s.get(k, {}).get('p50'))}/{fmt(s.get(k, {}).get('p95'))}"
            for k in ("answer", "ice", "dtls", "first_audio")
        ]
        r = rtt.get(key, {})
        print(
            f"  {label:32s} " + " ".join(f"{c:>14s}" for c in cells)
            + f" {fmt(r.get('p50')) + '/' + fmt(r.get('p95')):>15s}"
        )  # fmt: skip
    floor_setup = setup.get("floor", {})
    floor_rtt = rtt.get("floor", {})
    print(
        "\n  vs the floor (two Chromium peers, so its round trip crosses two Chromium ends;"
        " talkwire's Chromium\n  round trip crosses one Chromium end and the server)"
    )
    for key, label in (("chromium", "Chromium"), ("aiortc", "aiortc")):
        dtls = setup.get(key, {}).get("dtls", {}).get("p50")
        print(
            f"    {label:9s} DTLS p50 {ratio(dtls, floor_setup.get('dtls', {}).get('p50'))};"
            f" round trip p50 {ratio(rtt.get(key, {}).get('p50'), floor_rtt.get('p50'))},"
            f" p95 {ratio(rtt.get(key, {}).get('p95'), floor_rtt.get('p95'))}"
        )
    chrome, floor = rtt.get("chromium", {}).get("p50"), floor_rtt.get("p50")
    if chrome is not None and floor is not None:
        print(
            f"    one Chromium end ≈ half the floor = {floor / 2:.1f} ms, so the server path adds"
            f" ≈ {chrome - floor / 2:.1f} ms to the Chromium round trip"
        )
    print(
        "\n  Chromium's receiver over the round-trip bursts"
        " (mean ms: jitter buffer / its target / playout)"
    )
    for key, label, field in (
        ("floor", "floor, pc1 (hears the echo)", "receiver"),
        ("floor", "floor, pc2 (echoes)", "echo_receiver"),
        ("chromium", "talkwire, Chromium", "receiver"),
    ):
        r = rtt.get(key, {}).get(field)
        if r:
            print(
                f"    {label:30s} {fmt(r['jitter_buffer_ms'])} /"
                f" {fmt(r['jitter_buffer_target_ms'])} / {fmt(r['playout_ms'])};"
                f" NetEq accelerated {r['accelerated_samples']:.0f},"
                f" decelerated {r['decelerated_samples']:.0f},"
                f" concealed {r['concealed_samples']:.0f} samples"
            )
    pace = rtt.get("aiortc", {}).get("server_pacing")
    if pace:
        dev = pace["interarrival_deviation_ms"]
        rel = pace["relative_delay_ms"]
        print(
            f"    talkwire's RTP pacing at the aiortc client: inter-arrival deviation p50/p95/max"
            f" {fmt(dev['p50'])}/{fmt(dev['p95'])}/{fmt(dev['max'])} ms; arrival vs RTP"
            f" timestamp spread p50/p95/max"
            f" {fmt(rel['p50'])}/{fmt(rel['p95'])}/{fmt(rel['max'])} ms"
        )
    cap = results.get("capacity")
    procs = results.get("transceivers", 1)
    where = "one transceiver core" if procs == 1 else f"{procs} transceiver processes"
    if cap:
        print(
            f"\n  concurrency: {fmt(cap['max_calls_ok'], 0)} concurrent calls on {where}"
            f" with added p95 < {ADDED_P95_LIMIT_MS:.0f} ms and each one's CPU < 100%"
            f" (largest step tried {cap['largest_step_tried']});"
            f" marginal {fmt(cap['marginal_cpu_ms_per_call_second'])} ms CPU per call-second"
            f" (≈ {fmt(cap['calls_per_core_by_cpu'], 0)} calls per core by CPU alone)"
        )
    ramp = results.get("ramp") or {}
    for refusal in ramp.get("refused", []):
        print(
            f"\n  admission refused {refusal['refused']} of {refusal['calls']} calls"
            f" (capacity reached): {refusal['detail']}"
        )
    if ramp.get("error"):
        print(f"\n  the ramp stopped early: {ramp['error']}")
    if ramp.get("left_active"):
        print(
            f"\n  WARNING: the transceiver still held {ramp['left_active']} calls after every"
            " call of the ramp had hung up (calls that never end leak capacity)"
        )
    foreign = [("setup and round trip", results.get("calls_cpu", {}).get("foreign_cores"))]
    foreign += [
        (f"ramp step of {step['calls']} calls", step.get("foreign_cores"))
        for step in [ramp.get("baseline") or {}, *ramp.get("steps", [])]
        if step
    ]
    noisy = [(what, f) for what, f in foreign if f is not None and f > FOREIGN_NOISY]
    if noisy:
        worst = max(noisy, key=lambda x: x[1])
        print(
            f"\n  WARNING: other work on this host used up to {100 * worst[1]:.0f}% of a core"
            f" ({worst[0]}); {len(noisy)} of the measured phases were above"
            f" {100 * FOREIGN_NOISY:.0f}%: rerun on a quiet host before trusting them"
        )
    print_design_table(results)
    print("\n  targets")
    dtls = setup.get("chromium", {}).get("dtls", {}).get("p50")
    rtt_p50 = rtt.get("chromium", {}).get("p50")
    calls = calls_per_core(results)
    for name, value, ok in (
        (f"DTLS done ≤ {TARGET_DTLS_MS:.0f} ms p50 (Chromium)", fmt(dtls),
         dtls is not None and dtls <= TARGET_DTLS_MS),
        (f"echo round trip ≤ {TARGET_RTT_MS:.0f} ms p50 (Chromium)", fmt(rtt_p50),
         rtt_p50 is not None and rtt_p50 <= TARGET_RTT_MS),
        (f"≥ {TARGET_CALLS} concurrent calls per transceiver core", fmt(calls, 0),
         calls is not None and calls >= TARGET_CALLS),
    ):  # fmt: skip
        print(f"    {name:48s} {value:>8s}  {'met' if ok else 'NOT met'}")


def print_design_table(results: dict[str, Any]) -> None:
    """The shape of DESIGN.md's table of other servers (p50s; calls per core from the ramp)."""
    setup, rtt = results.get("setup", {}), results.get("rtt", {})
    cap = results.get("capacity") or {}
    print("\n  in DESIGN.md's shape (ms, p50 unless noted)")
    print(
        f"  | {'server':40s} | answer | DTLS done | round trip p50/p95 | {'calls per core':16s}"
        " | CPU ms per call-second |"
    )
    print(f"  |{'-' * 42}|--------|-----------|--------------------|{'-' * 18}|{'-' * 24}|")
    by_cpu = fmt(cap.get("calls_per_core_by_cpu"), 0)
    calls = f"{fmt(calls_per_core(results), 0)} (≈{by_cpu} by CPU)"
    cpu = fmt(cap.get("marginal_cpu_ms_per_call_second"))
    rows = [
        ("two peer connections in one page (floor)", "floor", "–", "–"),
        ("talkwire, Chromium", "chromium", calls, cpu),
        ("talkwire, aiortc client", "aiortc", "", ""),
    ]
    for label, key, calls, cpu in rows:
        s, r = setup.get(key, {}), rtt.get(key, {})
        trip = f"{fmt(r.get('p50'))} / {fmt(r.get('p95'))}"
        print(
            f"  | {label:40s} | {fmt(s.get('answer', {}).get('p50')):>6s}"
            f" | {fmt(s.get('dtls', {}).get('p50')):>9s} | {trip:>18s} | {calls:>16s}"
            f" | {cpu:>22s} |"
        )
