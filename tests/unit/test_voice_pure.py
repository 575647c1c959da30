"""The voice agent's pure parts: text, turn detection, playout, resampling, responder, SSE."""

from __future__ import annotations

import contextlib
from datetime import datetime

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from talkwire.agents.voice.llm import LlmError, chat_messages, parse_sse_line
from talkwire.agents.voice.playout import BYTES_PER_S, CHUNK_BYTES, MAX_REPLY_BYTES, Playout
from talkwire.agents.voice.resample import Resampler
from talkwire.agents.voice.responder import Message, parse_number, respond
from talkwire.agents.voice.stt import StreamingTranscript, collapse_repetition, window_seconds
from talkwire.agents.voice.text import (
    SentenceBuffer,
    content_words,
    normalize,
    speakable_parts,
    word_error_rate,
)
from talkwire.agents.voice.turns import (
    OnsetGate,
    SessionValueError,
    TurnConfig,
    TurnDetector,
    parse_turn_detection,
)
from talkwire.protocol.audio import FRAME_BYTES

# -- text ----------------------------------------------------------------------------


def test_normalize_spells_numbers_and_drops_punctuation() -> None:
    assert normalize("It's 5 o'clock, Mr. Smith-Jones!") == "it's five o'clock mr smith jones"
    assert normalize("December 5th, the 21st; 1234") == (
        "december fifth the twenty first one thousand two hundred thirty four"
    )
    assert normalize("  ...  ") == ""


def test_word_error_rate_counts_substitutions_insertions_and_deletions() -> None:
    assert word_error_rate("the cat sat on the mat", "the cat sat on the mat") == 0.0
    assert word_error_rate("the cat sat on the mat", "The cat sat on a mat mat.") == pytest.approx(
        2 / 6
    )
    assert word_error_rate("ten minutes", "10 minutes") == 0.0
    assert word_error_rate("", "") == 0.0
    assert word_error_rate("", "noise") == 1.0


def test_fillers_are_not_content() -> None:
    assert content_words("Uh, hmm... um") == []
    assert content_words("Uh, stop!") == ["stop"]


def test_the_first_part_of_a_reply_ends_at_its_first_phrase_break() -> None:
    assert speakable_parts("Sure, I can do that. It takes a minute! Bye") == [
        "Sure,",
        "I can do that.",
        "It takes a minute!",
        "Bye",
    ]


@given(st.text(alphabet=" abc,.!?;", max_size=80), st.lists(st.integers(1, 9), max_size=20))
def test_streamed_text_gives_the_same_parts_as_whole_text(text: str, cuts: list[int]) -> None:
    buffer = SentenceBuffer()
    parts: list[str] = []
    rest = text
    for cut in cuts:
        parts += buffer.feed(rest[:cut])
        rest = rest[cut:]
    parts += buffer.feed(rest) + buffer.flush()
    assert parts == speakable_parts(text)
    assert " ".join(parts).split() == text.split()  # no word lost or invented


# -- turn detection ----------------------------------------------------------------------


def run_detector(probabilities: list[float], config: TurnConfig | None = None) -> list[str]:
    detector = TurnDetector(config)
    out = []
    for i, p in enumerate(probabilities):
        event = detector.feed(p, i * 32, (i + 1) * 32)
        if event is not None:
            out.append(f"{event.kind}@{event.at_ms}")
    return out


def test_a_turn_starts_pauses_resumes_and_stops_after_the_silence_duration() -> None:
    config = TurnConfig(silence_duration_ms=128)
    probs = [0.0, 0.9, 0.9, 0.1, 0.1, 0.8, 0.9] + [0.0] * 5
    assert run_detector(probs, config) == [
        "started@32",
        "paused@96",
        "resumed@160",
        "paused@224",
        "stopped@224",
    ]


def test_hysteresis_keeps_a_dip_just_under_the_threshold_inside_the_speech() -> None:
    probs = [0.9, 0.4, 0.4, 0.9] + [0.0] * 20
    assert run_detector(probs) == ["started@0", "paused@128", "stopped@128"]


@pytest.mark.parametrize(
    ("value", "param"),
    [
        ({"type": "server_vad", "threshold": 1.5}, "threshold"),
        ({"type": "server_vad", "threshold": "high"}, "threshold"),
        ({"type": "server_vad", "silence_duration_ms": -1}, "silence_duration_ms"),
        ({"type": "server_vad", "silence_duration_ms": 1.5}, "silence_duration_ms"),
        ({"type": "server_vad", "prefix_padding_ms": True}, "prefix_padding_ms"),
        ({"type": "server_vad", "interrupt_response": "yes"}, "interrupt_response"),
        ({"type": "semantic_vad", "eagerness": "very"}, "eagerness"),
        ({"type": "push_to_talk"}, "type"),
    ],
)
def test_bad_turn_detection_names_the_field(value: dict[str, object], param: str) -> None:
    with pytest.raises(SessionValueError) as info:
        parse_turn_detection(value)
    assert info.value.param == f"session.audio.input.turn_detection.{param}"


def test_turn_detection_defaults_null_and_semantic_eagerness() -> None:
    assert parse_turn_detection(None) is None
    assert parse_turn_detection({}) == TurnConfig()
    assert parse_turn_detection({"type": "semantic_vad", "eagerness": "low"}) == TurnConfig(
        silence_duration_ms=800
    )


JSON = st.recursive(
    st.none() | st.booleans() | st.floats() | st.integers() | st.text(),
    lambda inner: st.lists(inner) | st.dictionaries(st.text(), inner),
    max_leaves=8,
)


@given(JSON | st.dictionaries(st.sampled_from(["type", "threshold", "eagerness"]), JSON))
def test_parse_turn_detection_raises_only_its_own_error(value: object) -> None:
    with contextlib.suppress(SessionValueError):
        parse_turn_detection(value)


def test_the_onset_gate_fires_on_a_jump_and_learns_steady_noise() -> None:
    gate = OnsetGate()
    assert [gate.feed(-70.0) for _ in range(10)] == [False] * 10
    assert gate.feed(-25.0)  # speech over silence
    noisy = OnsetGate()
    fired = [noisy.feed(-35.0) for _ in range(300)]  # 6 s of steady noise
    assert fired[0] and not any(fired[-100:])


# -- playout -------------------------------------------------------------------------------


def test_playout_keeps_only_the_lead_queued_and_knows_what_was_heard() -> None:
    playout = Playout(lead_s=0.2)
    playout.add(bytes(BYTES_PER_S), "one second")  # 1 s
    sent = []
    while (chunk := playout.take(0.0)) is not None:
        sent.append(chunk)
    assert sum(len(c.pcm) for c in sent) == 2 * CHUNK_BYTES  # 200 ms ahead, no more
    assert sent[0].texts == ("one second",) and sent[1].texts == ()
    assert playout.next_due(0.0) == pytest.approx(0.0)
    assert playout.played_ms(0.05) == 50
    assert playout.take(0.05) is not None  # 150 ms queued: room for more
    heard = playout.interrupt(0.5)
    assert heard == 300  # everything sent by then has played
    assert playout.take(0.6) is None  # paused
    playout.resume()
    chunk = playout.take(0.6)
    assert chunk is not None and chunk.texts == ()  # the text went out once
    playout.finish()
    assert not playout.done(0.6)


def test_heard_text_cuts_the_part_being_spoken() -> None:
    playout = Playout(lead_s=10.0)
    playout.add(bytes(BYTES_PER_S), "one two three four")
    playout.add(bytes(BYTES_PER_S), "five six")
    while playout.take(0.0) is not None:
        pass
    assert playout.heard_text(0.5) == "one two"
    assert playout.heard_text(1.5) == "one two three four five"
    assert playout.text() == "one two three four five six"


def test_playout_pads_to_whole_frames_and_caps_a_reply() -> None:
    playout = Playout()
    playout.add(bytes(10))
    assert playout.total_ms == 20
    playout.add(bytes(MAX_REPLY_BYTES))
    assert playout.truncated and playout.total_ms * BYTES_PER_S // 1000 <= MAX_REPLY_BYTES
    assert playout.total_ms * BYTES_PER_S // 1000 % FRAME_BYTES == 0


# -- resampling -------------------------------------------------------------------------------


@pytest.mark.parametrize(("rate_in", "rate_out"), [(24000, 16000), (22050, 24000)])
def test_resampler_keeps_a_tone_and_its_level_across_any_block_sizes(
    rate_in: int, rate_out: int
) -> None:
    t = np.arange(rate_in) / rate_in
    x = (0.5 * np.sin(2 * np.pi * 1000 * t)).astype(np.float32)
    resampler = Resampler(rate_in, rate_out)
    rng = np.random.default_rng(0)
    out, start = [], 0
    while start < len(x):
        size = int(rng.integers(1, 700))
        out.append(resampler.process(x[start : start + size]))
        start += size
    y = np.concatenate(out)
    assert abs(len(y) - rate_out) <= 1
    whole = Resampler(rate_in, rate_out).process(x)
    assert np.allclose(y[: len(whole)], whole[: len(y)], atol=1e-5)  # blocks change nothing
    seg = y[2000:-2000]
    spectrum = np.abs(np.fft.rfft(seg * np.hanning(len(seg))))
    peak = np.fft.rfftfreq(len(seg), 1 / rate_out)[spectrum.argmax()]
    assert abs(peak - 1000) < 5
    assert np.sqrt(np.mean(seg**2)) == pytest.approx(0.5 / np.sqrt(2), rel=0.01)


def test_downsampling_rejects_what_would_alias() -> None:
    t = np.arange(24000) / 24000
    high = (0.5 * np.sin(2 * np.pi * 11000 * t)).astype(np.float32)  # would fold to 5 kHz
    y = Resampler(24000, 16000).process(high)[500:]
    assert np.sqrt(np.mean(y**2)) < 0.01


# -- transcripts ---------------------------------------------------------------------------------


def test_streaming_transcript_sends_a_word_once_two_passes_agree() -> None:
    transcript = StreamingTranscript()
    assert transcript.partial("What") == ""
    assert transcript.partial("What time") == "What"
    assert transcript.partial("What time is it") == " time"
    assert transcript.partial("What time is it?") == " is it?"
    assert transcript.final("What time is it? Thanks.") == " Thanks."
    assert transcript.text == "What time is it? Thanks."


def test_a_decoder_loop_is_collapsed_to_one_copy() -> None:
    assert collapse_repetition("What time is it? What time is it? What") == "What time is it?"
    assert collapse_repetition("Stop. Stop. Stop.") == "Stop."
    assert collapse_repetition("I said no no to him") == "I said no no to him"


def test_the_whisper_window_fits_the_speech() -> None:
    assert [window_seconds(s) for s in (0.5, 5.0, 5.1, 12.0, 100.0)] == [5, 5, 10, 15, 30]


# -- responder ------------------------------------------------------------------------------------

NOW = datetime(2026, 12, 5, 15, 42)


@pytest.mark.parametrize(
    ("said", "reply"),
    [
        ("What time is it?", "It's 3:42 PM."),
        ("What's the date today?", "Today is Saturday, December 5, 2026."),
        ("What is 12 plus 30?", "12 plus 30 is 42."),
        ("what is twenty one times three", "21 times 3 is 63."),
        (
            "What is seven divided by zero?",
            "7 divided by 0 has no answer: you can't divide by zero.",
        ),
        ("Repeat after me: the cat is on the mat", "the cat is on the mat"),
        ("Thanks!", "You're welcome!"),
        ("I like green apples.", "You said: I like green apples."),
        ("", "Sorry, I didn't catch that."),
    ],
)
def test_the_responder_answers_its_intents(said: str, reply: str) -> None:
    assert respond(said, NOW) == reply


def test_greeting_and_jokes() -> None:
    assert respond("Hello there.", NOW).startswith("Hello! I'm the talkwire voice agent")
    assert respond("Tell me a joke", NOW, turn=0) != respond("Tell me a joke", NOW, turn=1)
    assert parse_number("three hundred five") == 305
    assert parse_number("banana") is None


# -- chat completions ------------------------------------------------------------------------------


def test_sse_lines_give_text_deltas_until_done() -> None:
    chunk = '{"choices":[{"delta":{"content":"Hi"}}]}'
    assert parse_sse_line(f"data: {chunk}") == "Hi"
    assert parse_sse_line('data: {"choices":[{"delta":{}}]}') == ""
    assert parse_sse_line(": keep-alive") == ""
    assert parse_sse_line("data: [DONE]") is None
    with pytest.raises(LlmError):
        parse_sse_line("data: {not json")
    with pytest.raises(LlmError):
        parse_sse_line('data: {"error": {"message": "quota"}}')


@given(st.text(max_size=200))
def test_parse_sse_line_raises_only_its_own_error(line: str) -> None:
    with contextlib.suppress(LlmError):
        parse_sse_line("data: " + line)


def test_chat_messages_put_instructions_first() -> None:
    history = [Message("user", "hi"), Message("assistant", "hello"), Message("user", "")]
    messages = chat_messages(history, "Be brief.")
    assert messages == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "hi"},
        {"role": "assistant", "content": "hello"},
    ]
