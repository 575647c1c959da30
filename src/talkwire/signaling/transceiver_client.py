"""The transceiver's internal HTTP API, seen from signaling. Thin I/O: one
request each, failures sorted into "the client's fault" (4xx, passed on) and
"try elsewhere" (`TransceiverUnavailable`)."""

from __future__ import annotations

import json
from typing import Any

import aiohttp

from talkwire.errors import TalkwireError
from talkwire.registry.base import TransceiverInfo
from talkwire.signaling.errors import passthrough_error

# An SDP answer is a few KiB; anything far larger is not one.
_MAX_ANSWER_BYTES = 256 * 1024


class TransceiverUnavailable(TalkwireError):
    """The transceiver could not take the request (down, 5xx, timeout, junk).
    ``full`` when it answered 503: up, but no room (capacity, load, drain)."""

    def __init__(self, message: str, full: bool = False) -> None:
        super().__init__(message)
        self.full = full


async def _json(response: aiohttp.ClientResponse) -> Any:
    raw = await response.content.read(_MAX_ANSWER_BYTES + 1)
    if len(raw) > _MAX_ANSWER_BYTES:
        raise ValueError("response too large")
    return json.loads(raw) if raw else None


async def create_call(
    http: aiohttp.ClientSession,
    info: TransceiverInfo,
    payload: dict[str, Any],
    timeout_s: float,
) -> str:
    """Forward an offer; return the answer SDP. A 4xx becomes the `ApiError`
    the client should see; anything else is `TransceiverUnavailable`."""
    url = f"{info.api_url}/calls"
    try:
        async with http.post(
            url, json=payload, timeout=aiohttp.ClientTimeout(total=timeout_s)
        ) as response:
            try:
                body = await _json(response)
            except ValueError:
                body = None
            if response.status == 401:
                # Our configuration, not the client's request: try elsewhere, and say so.
                raise TransceiverUnavailable(f"{info.id}: refused the internal secret (401)")
            if 400 <= response.status < 500:
                raise passthrough_error(response.status, body)
            if response.status != 201:
                raise TransceiverUnavailable(
                    f"{info.id}: HTTP {response.status}", full=response.status == 503
                )
    except (aiohttp.ClientError, TimeoutError) as exc:
        raise TransceiverUnavailable(f"{info.id}: {type(exc).__name__}") from exc
    answer = body.get("sdp") if isinstance(body, dict) else None
    if not isinstance(answer, str) or not answer.startswith("v=0"):
        raise TransceiverUnavailable(f"{info.id}: 201 without an SDP answer")
    return answer


async def hangup(
    http: aiohttp.ClientSession, info: TransceiverInfo, call_id: str, timeout_s: float
) -> bool:
    """True if the transceiver ended the call, False if it did not know it."""
    url = f"{info.api_url}/calls/{call_id}/hangup"
    try:
        async with http.post(url, timeout=aiohttp.ClientTimeout(total=timeout_s)) as response:
            status = response.status
    except (aiohttp.ClientError, TimeoutError) as exc:
        raise TransceiverUnavailable(f"{info.id}: {type(exc).__name__}") from exc
    if status in (200, 204):
        return True
    if status == 404:
        return False
    raise TransceiverUnavailable(f"{info.id}: HTTP {status}")


async def health(http: aiohttp.ClientSession, api_url: str, timeout_s: float) -> dict[str, Any]:
    """The transceiver's ``/health`` JSON; `TransceiverUnavailable` otherwise."""
    try:
        async with http.get(
            f"{api_url}/health", timeout=aiohttp.ClientTimeout(total=timeout_s)
        ) as response:
            if response.status != 200:
                raise TransceiverUnavailable(f"{api_url}: HTTP {response.status}")
            body = await _json(response)
    except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
        raise TransceiverUnavailable(f"{api_url}: {type(exc).__name__}") from exc
    if not isinstance(body, dict):
        raise TransceiverUnavailable(f"{api_url}: health is not a JSON object")
    return body
