"""The voice agent benchmark: turn-taking latency over real WebRTC, barge-in,
word error rate, real-time factors, and how many calls one agent process carries.

    .venv/bin/python bench/voice.py            # about 7 minutes
    .venv/bin/python bench/voice.py --quick    # about a minute

Against a whole talkwire stack on loopback (`talkwire up`'s processes) with an
aiortc client: end of user speech -> first reply audio at the client, and
barge-in -> the agent's audio stopped at the client, each over >= 20 turns,
beside the transport floor measured in the same run (the echo agent's round
trip through the same relay and transceiver) and the configured silence that
ends a turn. The concurrency ramp drives the voice agent process directly
over the internal protocol (LinkClient): a 2-core host cannot also run dozens
of WebRTC clients and a transceiver without measuring them instead; the
WebRTC path's extra latency, measured above, is added back before comparing
with the target. Results: bench/results/voice-<timestamp>.json.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
from call_stats import percentile, summary
from common import busy_seconds, cpu_seconds, machine, table, write_results

from talkwire.agents.link_client import LinkClient
from talkwire.agents.voice.resample import Resampler
from talkwire.agents.voice.responder import JOKES
from talkwire.agents.voice.speech import WER_SET, WER_VOICES, espeak, silence
from talkwire.agents.voice.stt import WhisperEngine
from talkwire.agents.voice.text import word_error_rate
from talkwire.agents.voice.tts import PiperEngine
from talkwire.agents.voice.turns import DEFAULT_SILENCE_DURATION_MS
from talkwire.client import CLIENT_RATE, RealtimeCall, tone
from talkwire.stack import Stack, StackConfig

REPLY_TARGET_MS = 500.0
BARGE_TARGET_MS = 100.0
LOUD = 1500
TURN_TIMEOUT = 30.0
QUESTIONS = [
    ("What time is it?", "en-us"),
    ("What is twelve plus thirty?", "en-gb"),
    ("What is the date today?", "en-us+m3"),
    ("What is four times five?", "en-us"),
    ("Thank you very much.", "en-us+f3"),
    ("Who are you?", "en-gb"),
]
BARGES = [("Stop, wait a moment.", "en-gb"), ("No, hold on.", "en-us"), ("Wait.", "en-us+m3")]


def to_client_rate(pcm24: bytes) -> np.ndarray:
    x = np.frombuffer(pcm24, dtype="<i2").astype(np.float32) / 32768.0
    up = Resampler(24000, CLIENT_RATE)
    return (np.concatenate((up.process(x), up.flush())) * 32767).astype(np.int16)


def ms(values: list[float]) -> dict[str, float | None]:
    return summary([round(v * 1000, 1) for v in values])


class Client:
    """One WebRTC call with helpers that read what the client received."""

    def __init__(self, call: RealtimeCall) -> None:
        self.call = call

    def loud_after(self, since: float, until: float = float("inf")) -> list[float]:
        return [
            at
            for at, s in self.call.received
            if since <= at < until and len(s) and int(np.abs(s).max()) > LOUD
        ]

    async def first_loud(self, since: float) -> float:
        for _ in range(int(TURN_TIMEOUT / 0.01)):
            found = self.loud_after(since)
            if found:
                return found[0]
            await asyncio.sleep(0.01)  # audio arrives at its own pace: poll what was recorded
        raise RuntimeError("no reply audio")

    async def play(self, samples: np.ndarray) -> tuple[float, float]:
        """Play a clip; returns when its first frame went out and when its speech ends."""
        started: list[float] = []
        self.call.source.play(samples, on_start=started.append)
        for _ in range(int(TURN_TIMEOUT / 0.01)):
            if started:
                return started[0], started[0] + len(samples) / CLIENT_RATE
            await asyncio.sleep(0.01)
        raise RuntimeError("the clip never started")


async def played_out(call: RealtimeCall, response_id: str) -> None:
    """Until the reply's audio has left the transceiver (response.done comes earlier,
    when it is generated), so the next question does not talk over its end."""
    while True:
        event = await call.next_event("output_audio_buffer.stopped", timeout=TURN_TIMEOUT)
        if event.get("response_id") == response_id:
            return


async def echo_floor(stack: Stack, bursts: int) -> list[float]:
    """The echo agent's round trip through the same relay and transceiver (transport floor)."""
    call = RealtimeCall(stack.signaling_url, stack.config.api_key, {"model": "echo"})
    await call.connect()
    client = Client(call)
    out = []
    try:
        for _ in range(bursts):
            start, _ = await client.play(tone(1000, 0.06))
            out.append(await client.first_loud(start) - start)
            await asyncio.sleep(0.3)
    finally:
        await call.hangup()
    return out


async def turns(stack: Stack, count: int) -> tuple[list[float], Counter[str]]:
    """End of user speech -> first loud reply frame at the client, ``count`` turns."""
    call = RealtimeCall(stack.signaling_url, stack.config.api_key, {"model": "voice"})
    await call.connect()
    client = Client(call)
    latencies: list[float] = []
    failures: Counter[str] = Counter()
    try:
        await call.next_event("session.created")
        clips = [to_client_rate(espeak(q, v)) for q, v in QUESTIONS]
        for i in range(count):
            _, speech_end = await client.play(clips[i % len(clips)])
            try:
                created = await call.next_event("response.created", timeout=TURN_TIMEOUT)
                latencies.append(await client.first_loud(speech_end) - speech_end)
                done = await call.next_event("response.done", timeout=TURN_TIMEOUT)
                if done["response"]["id"] != created["response"]["id"]:
                    failures["two responses for one question"] += 1
                await played_out(call, created["response"]["id"])
            except TimeoutError:
                failures["no response"] += 1
            except RuntimeError as error:
                failures[str(error)] += 1
            await asyncio.sleep(0.5)
    finally:
        await call.hangup()
    return latencies, failures


async def barge_ins(stack: Stack, count: int) -> tuple[list[float], Counter[str]]:
    """Speech over a reply -> the last loud reply frame at the client, ``count`` times."""
    call = RealtimeCall(stack.signaling_url, stack.config.api_key, {"model": "voice"})
    await call.connect()
    client = Client(call)
    stops: list[float] = []
    failures: Counter[str] = Counter()
    ask = to_client_rate(espeak("Tell me a joke."))
    barges = [to_client_rate(espeak(t, v)) for t, v in BARGES]
    try:
        await call.next_event("session.created")
        for i in range(count):
            _, asked_end = await client.play(ask)
            try:
                await call.next_event("response.created", timeout=TURN_TIMEOUT)
                speaking = await client.first_loud(asked_end)
                # Cut in while the reply is audible, not in a pause between its
                # parts, where there would be nothing to stop.
                await client.first_loud(speaking + 0.8)
                onset, _ = await client.play(barges[i % len(barges)])
                done = await call.next_event("response.done", timeout=TURN_TIMEOUT)
                if done["response"]["status"] != "cancelled":
                    failures["reply not cancelled"] += 1
                    continue
                # The barge-in's own reply follows: its audio must not count as the
                # interrupted reply's, so the window ends where the new reply begins.
                created = await call.next_event("response.created", timeout=TURN_TIMEOUT)
                next_reply = time.monotonic()
                await call.next_event("response.done", timeout=TURN_TIMEOUT)
                await played_out(call, created["response"]["id"])
                before = client.loud_after(speaking, min(onset + 1.0, next_reply))
                stops.append(max(before) - onset if before else 0.0)
            except TimeoutError:
                failures["no response"] += 1
            except RuntimeError as error:
                failures[str(error)] += 1
            await asyncio.sleep(0.5)
    finally:
        await call.hangup()
    return stops, failures


def recognition(quick: bool) -> dict[str, Any]:
    """WER on the fixed set and real-time factors, with the agent's engines (one thread each)."""
    stt, tts = WhisperEngine(threads=1, workers=1), PiperEngine(threads=1)
    rates, stt_audio, stt_compute = [], 0.0, 0.0
    voices = WER_VOICES[:2] if quick else WER_VOICES
    for voice in voices:
        for text in WER_SET:
            pcm = silence(0.3) + espeak(text, voice) + silence(0.2)
            audio = Resampler(24000, 16000).process(
                np.frombuffer(pcm, dtype="<i2").astype(np.float32) / 32768.0
            )
            result = stt.transcribe(audio)
            rates.append(word_error_rate(text, result.text))
            stt_audio += result.audio_s
            stt_compute += result.compute_s
    tts_audio, tts_compute, first = 0.0, 0.0, []
    for text in [*JOKES, "It's 3:42 PM.", "12 plus 30 is 42."]:
        speech = tts.synthesize(text)
        tts_audio += speech.audio_s
        tts_compute += speech.compute_s
    for part in ("Sure,", "Hello!", "It's 3:42 PM."):
        first.append(tts.synthesize(part).compute_s)
    return {
        "wer_mean": float(np.mean(rates)),
        "wer_exact_share": sum(r == 0 for r in rates) / len(rates),
        "utterances": len(rates),
        "stt_rtf": stt_compute / stt_audio,
        "tts_rtf": tts_compute / tts_audio,
        "tts_first_part_ms": ms(first),
    }


async def concurrent(
    url: str, secret: str, calls: int, turns_each: int, path_extra: float
) -> dict[str, Any]:
    """``calls`` simultaneous calls on one agent process, each asking ``turns_each`` questions."""
    clips = [silence(0.2) + espeak(q, v) for q, v in QUESTIONS]
    links = [LinkClient(f"{url}/v1/agents/voice", {"model": "voice"}, secret) for _ in range(calls)]
    await asyncio.gather(*(link.connect() for link in links))
    latencies: list[float] = []
    failures = 0

    async def one(index: int, link: LinkClient) -> None:
        nonlocal failures
        await asyncio.sleep(index * 1.7 / max(1, calls))  # staggered, as real callers are
        for turn in range(turns_each):
            mark = len(link.events)
            clip = link.play(clips[(index + turn) % len(clips)])
            await clip.done.wait()
            try:
                created = await link.wait_event(
                    "response.created", after=mark, timeout=TURN_TIMEOUT
                )
                for _ in range(int(TURN_TIMEOUT / 0.01)):
                    audio = [a.at for a in link.audio if a.at >= created.at]
                    if audio:
                        break
                    await asyncio.sleep(0.01)
                assert clip.ended is not None
                latencies.append(audio[0] - clip.ended + path_extra)
                await link.wait_event("response.done", after=mark, timeout=TURN_TIMEOUT)
            except (TimeoutError, IndexError, UnboundLocalError):
                failures += 1
            await asyncio.sleep(0.6)

    busy0 = busy_seconds()
    wall0 = time.monotonic()
    try:
        await asyncio.gather(*(one(i, link) for i, link in enumerate(links)))
    finally:
        await asyncio.gather(*(link.close() for link in links))
    wall = time.monotonic() - wall0
    return {
        "calls": calls,
        "reply_ms": ms(latencies),
        "failures": failures,
        "host_busy_cores": round((busy_seconds() - busy0) / wall, 2),
    }


async def run(args: argparse.Namespace) -> dict[str, Any]:
    quick = args.quick
    n_turns = args.turns or (6 if quick else 24)
    n_barges = args.barges or (4 if quick else 20)
    steps = (
        [int(s) for s in args.steps.split(",")]
        if args.steps
        else ([1, 2] if quick else [1, 2, 4, 8, 12, 16, 20, 24, 28, 32])
    )
    result: dict[str, Any] = {"machine": machine(), "quick": quick}
    print("recognition: WER and real-time factors ...", flush=True)
    result["recognition"] = await asyncio.to_thread(recognition, quick)
    stack = Stack(StackConfig(http_port=0, relay_port=0, demo=False, voice=True))
    await stack.start()
    try:
        voice_pid = stack.components["voice"].process.pid  # type: ignore[union-attr]
        print("transport floor: echo round trip ...", flush=True)
        floor = await echo_floor(stack, 10 if quick else 20)
        print(f"turns: {n_turns} spoken questions ...", flush=True)
        cpu0 = cpu_seconds([voice_pid])
        replies, reply_failures = await turns(stack, n_turns)
        print(f"barge-in: {n_barges} interruptions ...", flush=True)
        stops, barge_failures = await barge_ins(stack, n_barges)
        agent_cpu = cpu_seconds([voice_pid]) - cpu0
        # What the WebRTC path adds over the agent link, for the ramp below.
        link_single = await concurrent(
            stack.voice_url.rsplit("/v1/", 1)[0], stack.internal_secret, 1, 2, 0.0
        )
        link_p50 = (link_single["reply_ms"]["p50"] or 0.0) / 1000
        path_extra = max(0.0, (percentile(replies, 50) or 0.0) - link_p50)
        ramp = []
        for calls in steps:
            print(f"ramp: {calls} simultaneous calls ...", flush=True)
            step = await concurrent(
                stack.voice_url.rsplit("/v1/", 1)[0],
                stack.internal_secret,
                calls,
                2 if quick else 3,
                path_extra,
            )
            ramp.append(step)
            p50 = step["reply_ms"]["p50"]
            if step["failures"] or p50 is None or p50 > REPLY_TARGET_MS:
                break
    finally:
        await stack.stop()
    carried = [
        s["calls"]
        for s in ramp
        if not s["failures"] and (s["reply_ms"]["p50"] or 1e9) <= REPLY_TARGET_MS
    ]
    result.update(
        {
            "silence_duration_ms": DEFAULT_SILENCE_DURATION_MS,
            "echo_round_trip_ms": ms(floor),
            "reply_ms": ms(replies),
            "reply_failures": dict(reply_failures),
            "barge_in_ms": ms(stops),
            "barge_failures": dict(barge_failures),
            "agent_cpu_s_per_turn": agent_cpu / max(1, n_turns + 2 * n_barges),
            "link_reply_ms_single": link_single["reply_ms"],
            "webrtc_path_extra_ms": round(path_extra * 1000, 1),
            "ramp": ramp,
            "calls_within_reply_target": max(carried) if carried else 0,
        }
    )
    return result


def report(result: dict[str, Any], path: Path) -> None:
    r = result["recognition"]
    reply, barge, floor = result["reply_ms"], result["barge_in_ms"], result["echo_round_trip_ms"]
    rows = [
        ["end of speech -> first reply audio", reply["p50"], reply["p95"], REPLY_TARGET_MS,
         (reply["p50"] or 0) / REPLY_TARGET_MS, reply["n"]],
        ["barge-in -> agent audio stopped", barge["p50"], barge["p95"], BARGE_TARGET_MS,
         (barge["p50"] or 0) / BARGE_TARGET_MS, barge["n"]],
        ["(floor) echo round trip, same path", floor["p50"], floor["p95"], float("nan"),
         float("nan"), floor["n"]],
    ]  # fmt: skip
    print()
    print(table(["at the aiortc client, ms", "p50", "p95", "target", "p50/target", "n"], rows))
    print(
        f"\nsilence that ends a turn: {result['silence_duration_ms']} ms, so the reply's own "
        f"cost is {(reply['p50'] or 0) - result['silence_duration_ms']:.0f} ms p50 "
        f"({(reply['p50'] or 0) / max(1.0, floor['p50'] or 1):.1f}x the echo floor)"
    )
    for name in ("reply_failures", "barge_failures"):
        if result[name]:
            print(f"{name.replace('_', ' ')}: {result[name]}")
    print(
        f"WER {r['wer_mean']:.3f} over {r['utterances']} utterances "
        f"({r['wer_exact_share']:.0%} exact); real-time factor STT {r['stt_rtf']:.3f}, "
        f"TTS {r['tts_rtf']:.3f}; first TTS part {r['tts_first_part_ms']['p50']} ms p50"
    )
    print(f"agent CPU per turn: {result['agent_cpu_s_per_turn'] * 1000:.0f} ms")
    print()
    print(
        table(
            ["simultaneous calls", "reply p50", "reply p95", "failures", "host busy cores"],
            [
                [
                    s["calls"],
                    s["reply_ms"]["p50"],
                    s["reply_ms"]["p95"],
                    s["failures"],
                    s["host_busy_cores"],
                ]
                for s in result["ramp"]
            ],
        )
    )
    print(
        f"\ncalls one agent process carries within {REPLY_TARGET_MS:.0f} ms p50: "
        f"{result['calls_within_reply_target']} "
        f"(link latency + {result['webrtc_path_extra_ms']} ms WebRTC path)"
    )
    print(f"\nresults: {path}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer turns and ramp steps")
    parser.add_argument("--turns", type=int, help="spoken turns (default 24)")
    parser.add_argument("--barges", type=int, help="barge-ins (default 20)")
    parser.add_argument("--steps", help="simultaneous calls per ramp step, comma separated")
    parser.add_argument("--out", type=Path, help="JSON path (default bench/results/voice-*.json)")
    args = parser.parse_args()
    result = asyncio.run(run(args))
    path = write_results("voice", result, args.out)
    report(result, path)
    return 0


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        sys.exit(main())
