"""The Realtime WebSocket wire against the agent link, byte for byte."""

from __future__ import annotations

import base64
import json

from hypothesis import given, settings
from hypothesis import strategies as st

from talkwire.protocol.audio import FRAME_BYTES
from talkwire.protocol.realtime_ws import AgentToClient, ClientToAgent, Refusal


def append(pcm: bytes) -> str:
    return json.dumps(
        {"type": "input_audio_buffer.append", "audio": base64.b64encode(pcm).decode()}
    )


def test_appends_become_whole_20_ms_frames_and_a_partial_one_waits() -> None:
    bridge = ClientToAgent()
    audio = bytes(range(256)) * 10  # 2560 bytes: two frames and 640 over
    assert bridge.text(append(audio[:1000])) == [audio[:FRAME_BYTES]]
    assert bridge.text(append(audio[1000:])) == [audio[FRAME_BYTES : 2 * FRAME_BYTES]]
    assert bridge.text(json.dumps({"type": "input_audio_buffer.clear"})) == [
        '{"type": "input_audio_buffer.clear"}'
    ]
    assert bridge.text(append(bytes(FRAME_BYTES))) == [bytes(FRAME_BYTES)]  # the 640 are gone


def test_other_events_pass_verbatim_and_bad_ones_are_refused_with_their_event_id() -> None:
    bridge = ClientToAgent()
    text = '{"type":"response.create","event_id":"event_1"}'
    assert bridge.text(text) == [text]
    for bad, code in [
        ('{"type":"input_audio_buffer.append","event_id":"e2","audio":"!!"}', "invalid_audio"),
        ('{"type":"input_audio_buffer.append","event_id":"e2","audio":"AA=="}', "invalid_audio"),
        ('{"type":"input_audio_buffer.append","event_id":"e2"}', "invalid_audio"),
        ("[1, 2]", "invalid_event"),
        (
            '{"type":"session.update","event_id":"e2","session":'
            '{"audio":{"output":{"format":{"type":"audio/pcm","rate":16000}}}}}',
            "unsupported_audio_format",
        ),
    ]:
        out = bridge.text(bad)
        assert isinstance(out, Refusal), bad
        error = json.loads(out.event)["error"]
        assert error["code"] == code
        if code != "invalid_event":
            assert error["event_id"] == "e2"
    link_format = {"format": {"type": "audio/pcm", "rate": 24000}}
    same_format = json.dumps(
        {"type": "session.update", "session": {"audio": {"input": link_format}}}
    )
    assert bridge.text(same_format) == [same_format]


def test_agent_audio_becomes_deltas_naming_its_response_and_item() -> None:
    bridge = AgentToClient()
    created = '{"type":"response.created","response":{"id":"resp_1","status":"in_progress"}}'
    assert bridge.text(created) == created
    bridge.text('{"type":"conversation.item.created","item":{"id":"item_u","role":"user"}}')
    bridge.text('{"type":"response.output_item.added","item":{"id":"item_a","role":"assistant"}}')
    delta = json.loads(bridge.audio(b"\x01\x02\x03\x04"))
    assert delta["type"] == "response.output_audio.delta"
    assert (delta["response_id"], delta["item_id"]) == ("resp_1", "item_a")
    assert base64.b64decode(delta["delta"]) == b"\x01\x02\x03\x04"
    assert bridge.text('{"type":"output_audio_buffer.clear"}') is None  # WebRTC playout only
    assert bridge.text("not json") == "not json"  # junk reaches the client, as over WebRTC


_JSONISH = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)


@settings(max_examples=400, deadline=None)
@given(
    st.one_of(
        st.text(max_size=200),
        st.binary(max_size=200),
        st.builds(
            lambda kind, audio, rest: json.dumps({**rest, "type": kind, "audio": audio}),
            st.sampled_from(["input_audio_buffer.append", "session.update", "x"]),
            _JSONISH | st.text(alphabet="AB=+/!", max_size=40),
            st.dictionaries(st.sampled_from(["session", "event_id", "audio"]), _JSONISH),
        ),
    )
)
def test_no_client_frame_makes_the_translator_raise(frame: str | bytes) -> None:
    out = ClientToAgent().text(frame)
    if isinstance(out, Refusal):
        assert json.loads(out.event)["type"] == "error"
    else:
        assert all(isinstance(item, bytes | str) for item in out)
        assert all(len(item) == FRAME_BYTES for item in out if isinstance(item, bytes))
