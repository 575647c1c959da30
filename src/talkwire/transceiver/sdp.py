"""Offer checks and rewriting (text in, text out).

The client's own candidates are removed before aiortc sees the offer: every
check must go through the relay, never straight to the client.
"""

from __future__ import annotations

import re

from talkwire.errors import TalkwireError

MAX_OFFER_BYTES = 64 * 1024


class OfferError(TalkwireError, ValueError):
    """The SDP offer cannot be answered; the message says why."""


def check_offer(sdp: str) -> None:
    if len(sdp.encode("utf-8", "replace")) > MAX_OFFER_BYTES:
        raise OfferError(f"SDP offer is larger than {MAX_OFFER_BYTES} bytes")
    lines = sdp_lines(sdp)
    if not lines or lines[0] != "v=0":
        raise OfferError("SDP offer must start with 'v=0'")
    media = [line for line in lines if line.startswith("m=")]
    if not any(line.startswith("m=audio ") for line in media):
        raise OfferError("SDP offer has no audio media section (m=audio)")
    for attribute in ("a=ice-ufrag:", "a=ice-pwd:", "a=fingerprint:"):
        if not any(line.startswith(attribute) for line in lines):
            raise OfferError(f"SDP offer lacks {attribute.rstrip(':')}")
    if len(media) > 1 and not any(line.startswith("a=group:BUNDLE") for line in lines):
        raise OfferError("SDP offer with several media sections must use BUNDLE")


def strip_candidates(sdp: str) -> str:
    kept = [
        line
        for line in sdp_lines(sdp)
        if not (line.startswith("a=candidate:") or line == "a=end-of-candidates")
    ]
    return "\r\n".join(kept) + "\r\n"


def candidate_addresses(sdp: str) -> list[tuple[str, int]]:
    """The (host, port) of every candidate line, for checks and tests."""
    found = []
    for line in sdp_lines(sdp):
        match = re.match(r"a=candidate:\S+ \d+ \S+ \d+ (\S+) (\d+) typ ", line)
        if match:
            found.append((match.group(1), int(match.group(2))))
    return found


def sdp_lines(sdp: str) -> list[str]:
    return [line for line in re.split(r"\r?\n", sdp.strip()) if line]
