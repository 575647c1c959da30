"""Reading and checking an SDP offer from a ``POST /v1/realtime/calls`` body.

Two body shapes are accepted, both from the Realtime API: the raw offer as
``application/sdp``, and ``multipart/form-data`` with an ``sdp`` part and an
optional ``session`` part (JSON), which is what the openai SDK sends.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable
from typing import Any, TypeVar

from aiohttp import web
from aiohttp.web_request import FileField

from talkwire.signaling.errors import ApiError, bad_request

T = TypeVar("T")

SDP_TYPE = "application/sdp"
MULTIPART_TYPE = "multipart/form-data"


def validate_offer(sdp: str) -> str:
    """The offer if it is plausibly SDP with audio; the transceiver does the
    full parse, this only turns the common mistakes into clear 400s early."""
    if not sdp.strip():
        raise bad_request("missing_sdp", "The request has no SDP offer.", "sdp")
    if not sdp.startswith("v=0"):
        raise bad_request(
            "invalid_sdp", "The SDP offer must start with 'v=0' (is this an SDP offer?).", "sdp"
        )
    if not any(line.startswith("m=audio ") for line in sdp.splitlines()):
        raise bad_request(
            "sdp_missing_audio",
            "The SDP offer has no audio section (m=audio); add an audio track or "
            "transceiver before creating the offer.",
            "sdp",
        )
    return sdp


def _text(value: object, param: str) -> str:
    """A form field as text: aiohttp gives ``str`` for text parts, a
    ``bytearray`` for other content types (``application/sdp``) and a
    `FileField` when the part has a filename."""
    if isinstance(value, FileField):
        value = value.file.read()
    if isinstance(value, str):
        return value
    if isinstance(value, bytes | bytearray):
        try:
            return bytes(value).decode("utf-8")
        except UnicodeDecodeError:
            raise bad_request(
                "invalid_encoding", f"The {param} part is not UTF-8.", param
            ) from None
    raise bad_request("invalid_request", f"The {param} part could not be read.", param)


def parse_session(text: str) -> Any:
    try:
        return json.loads(text)
    except ValueError:
        raise bad_request(
            "invalid_json", "The session part is not valid JSON.", "session"
        ) from None


async def read_within(body: Awaitable[T], timeout_s: float) -> T:
    """``body`` (a read of the request body), or 408 if it takes longer than ``timeout_s``:
    a client trickling its body must not hold a connection and a handler forever."""
    try:
        async with asyncio.timeout(timeout_s):
            return await body
    except TimeoutError:
        raise ApiError(
            408, "request_timeout", f"The request body did not arrive within {timeout_s:g} s."
        ) from None


async def read_offer(request: web.Request, max_bytes: int, timeout_s: float) -> tuple[str, Any]:
    """(offer text, session JSON or None). Oversize bodies are refused from
    Content-Length before reading, and by aiohttp's size cap while reading."""
    if request.content_length is not None and request.content_length > max_bytes:
        raise too_large(max_bytes)
    content_type = request.content_type
    if content_type == SDP_TYPE:
        try:
            raw = await read_within(request.read(), timeout_s)
        except web.HTTPRequestEntityTooLarge:
            raise too_large(max_bytes) from None
        return _text(raw, "sdp"), None
    if content_type == MULTIPART_TYPE:
        try:
            form = await read_within(request.post(), timeout_s)
        except web.HTTPRequestEntityTooLarge:
            raise too_large(max_bytes) from None
        except ValueError:
            raise bad_request("invalid_multipart", "The multipart body is malformed.") from None
        sdp_field = form.get("sdp")
        if sdp_field is None:
            raise bad_request("missing_sdp", "The multipart body has no 'sdp' part.", "sdp")
        session_field = form.get("session")
        session = None if session_field is None else parse_session(_text(session_field, "session"))
        return _text(sdp_field, "sdp"), session
    raise ApiError(
        415,
        "unsupported_content_type",
        f"Content-Type must be {SDP_TYPE} or {MULTIPART_TYPE}, not {content_type!r}.",
    )


def too_large(max_bytes: int) -> ApiError:
    return ApiError(413, "request_too_large", f"The request body exceeds {max_bytes} bytes.")
