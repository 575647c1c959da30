"""talkwire.protocol.events: parsing and building internal-protocol JSON events."""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from talkwire.errors import ProtocolError
from talkwire.protocol.events import (
    MAX_EVENT_BYTES,
    encode_event,
    error_event,
    make_event,
    merge_session,
    parse_event,
)


def test_parse_event_returns_the_object() -> None:
    text = '{"type":"session.update","event_id":"event_1","session":{"model":"echo"}}'
    assert parse_event(text) == {
        "type": "session.update",
        "event_id": "event_1",
        "session": {"model": "echo"},
    }
    assert parse_event(text.encode()) == parse_event(text)


def test_parse_event_accepts_missing_event_id() -> None:
    # Browser client events may omit event_id (the Realtime API makes it optional).
    assert parse_event('{"type":"response.create"}') == {"type": "response.create"}


@pytest.mark.parametrize(
    "text",
    [
        "",
        "not json",
        "{",
        '{"type": "x"',
        "[]",
        '["type"]',
        '"session.update"',
        "42",
        "null",
        "{}",
        '{"event_id": "e"}',
        '{"type": 5}',
        '{"type": null}',
        '{"type": ""}',
        '{"type": ["a"]}',
        '{"type": "x", "event_id": 7}',
        '{"type": "x", "n": NaN}',
        '{"type": "x", "n": Infinity}',
        '{"type": "x", "n": 1e999}',
        '{"type": "x", "n": ' + "9" * 5000 + "}",
        "[" * 10_000 + "]" * 10_000,
    ],
)
def test_parse_event_rejects(text: str) -> None:
    with pytest.raises(ProtocolError):
        parse_event(text)


def test_parse_event_rejects_deep_nesting_within_size() -> None:
    deep = '{"type":"x","a":' + "[" * 30_000 + "]" * 30_000 + "}"
    assert len(deep) <= MAX_EVENT_BYTES
    with pytest.raises(ProtocolError):
        parse_event(deep)


def test_parse_event_rejects_invalid_utf8_bytes() -> None:
    with pytest.raises(ProtocolError):
        parse_event(b'{"type":"\xff"}')


def test_parse_event_size_limit_counts_utf8_bytes() -> None:
    pad = MAX_EVENT_BYTES - len('{"type":"x","p":""}')
    fits = '{"type":"x","p":"' + "a" * pad + '"}'
    assert len(fits.encode()) == MAX_EVENT_BYTES
    assert parse_event(fits)["type"] == "x"
    assert parse_event(fits.encode())["type"] == "x"
    one_more = '{"type":"x","p":"' + "a" * (pad + 1) + '"}'
    with pytest.raises(ProtocolError):
        parse_event(one_more)
    with pytest.raises(ProtocolError):
        parse_event(one_more.encode())
    # Fewer characters than the limit, more bytes: "é" is two bytes in UTF-8.
    wide = '{"type":"x","p":"' + "é" * (MAX_EVENT_BYTES // 2) + '"}'
    assert len(wide) < MAX_EVENT_BYTES
    with pytest.raises(ProtocolError):
        parse_event(wide)


def test_make_event_fills_event_id_and_fields() -> None:
    a = make_event("response.created", response={"id": "resp_1"})
    b = make_event("response.created")
    assert a["type"] == "response.created"
    assert a["response"] == {"id": "resp_1"}
    assert a["event_id"].startswith("event_")
    assert a["event_id"] != b["event_id"]
    assert len(a["event_id"]) > len("event_") + 10
    assert make_event("x", event_id="event_mine")["event_id"] == "event_mine"


def test_made_events_round_trip_through_parse() -> None:
    event = make_event("input_audio_buffer.speech_started", audio_start_ms=120, item_id="item_1")
    assert parse_event(encode_event(event)) == event


def test_encode_event_refuses_nan() -> None:
    with pytest.raises(ValueError, match="JSON"):
        encode_event({"type": "x", "n": float("nan")})


def test_error_event_shape() -> None:
    event = error_event("bad", code="invalid_event", event_id="event_client")
    assert event["type"] == "error"
    assert event["event_id"].startswith("event_")
    assert event["error"] == {
        "type": "invalid_request_error",
        "code": "invalid_event",
        "message": "bad",
        "param": None,
        "event_id": "event_client",
    }


def test_merge_session_is_deep_and_partial() -> None:
    base = {
        "model": "echo",
        "audio": {"input": {"format": {"type": "audio/pcm", "rate": 24000}, "noise": 1}},
    }
    update = {"audio": {"input": {"turn_detection": None}}, "instructions": "hi"}
    merged = merge_session(base, update)
    assert merged == {
        "model": "echo",
        "instructions": "hi",
        "audio": {
            "input": {
                "format": {"type": "audio/pcm", "rate": 24000},
                "noise": 1,
                "turn_detection": None,
            }
        },
    }
    assert "turn_detection" not in base["audio"]["input"]  # the base is not modified


def test_merge_session_bounded_depth_replaces_below() -> None:
    deep_base: dict = {"a": {"b": {"c": {"d": {"e": {"keep": 1}}}}}}
    deep_update: dict = {"a": {"b": {"c": {"d": {"e": {"new": 2}}}}}}
    merged = merge_session(deep_base, deep_update)
    assert merged["a"]["b"]["c"]["d"]["e"] == {"new": 2}


_json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=20,
)


def _check_only_protocol_error(data: str | bytes) -> None:
    try:
        event = parse_event(data)
    except ProtocolError:
        return
    assert isinstance(event, dict)
    assert isinstance(event["type"], str) and event["type"]
    # Whatever parses can be sent on unchanged.
    assert json.loads(encode_event(event)) == event


@given(st.text())
def test_fuzz_parse_event_text(data: str) -> None:
    _check_only_protocol_error(data)


@given(st.binary())
def test_fuzz_parse_event_bytes(data: bytes) -> None:
    _check_only_protocol_error(data)


@given(_json_values)
def test_fuzz_parse_event_json_values(value: object) -> None:
    _check_only_protocol_error(json.dumps(value))


@given(st.dictionaries(st.sampled_from(["type", "event_id", "session", "x"]), _json_values))
def test_fuzz_parse_event_event_like(value: dict) -> None:
    _check_only_protocol_error(json.dumps(value))
