"""Who is calling: a long-lived API key or an ephemeral ``ek_`` key minted by
``POST /v1/realtime/client_secrets``. Keys are compared in constant time and
never logged or echoed back."""

from __future__ import annotations

import hmac
import re
import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from talkwire.registry.base import Registry
from talkwire.signaling.errors import ApiError, invalid_api_key

EPHEMERAL_PREFIX = "ek_"
_EPHEMERAL = re.compile(r"ek_[A-Za-z0-9_-]{16,128}")
_BEARER = re.compile(r"Bearer[ \t]+(\S+)[ \t]*", re.IGNORECASE)


@dataclass(frozen=True)
class Principal:
    """An authenticated caller. ``session`` is the session an ephemeral key was
    minted with (the base of any call it makes); None for API keys."""

    ephemeral: bool
    session: dict[str, Any] | None = None


def new_ephemeral_key() -> str:
    return EPHEMERAL_PREFIX + secrets.token_urlsafe(24)


def bearer_token(header: str | None) -> str:
    if not header:
        raise invalid_api_key(
            "You didn't provide an API key. Send it as 'Authorization: Bearer KEY'."
        )
    match = _BEARER.fullmatch(header)
    if match is None:
        raise invalid_api_key("The Authorization header must be 'Bearer KEY'.")
    return match.group(1)


def is_api_key(token: str, api_keys: Sequence[str]) -> bool:
    presented = token.encode()
    # Check every key so the time taken does not reveal which one is close.
    found = False
    for key in api_keys:
        found |= hmac.compare_digest(presented, key.encode())
    return found


async def authenticate(
    header: str | None, api_keys: Sequence[str], registry: Registry
) -> Principal:
    token = bearer_token(header)
    if token.startswith(EPHEMERAL_PREFIX):
        session = await registry.get_client_secret(token) if _EPHEMERAL.fullmatch(token) else None
        if session is None:
            raise invalid_api_key("The ephemeral key is invalid or has expired.")
        return Principal(ephemeral=True, session=session)
    if not is_api_key(token, api_keys):
        raise invalid_api_key("Incorrect API key provided.")
    return Principal(ephemeral=False)


def require_api_key(principal: Principal) -> None:
    if principal.ephemeral:
        raise ApiError(
            401,
            "invalid_api_key",
            "Ephemeral keys cannot mint client secrets; use an API key from your backend.",
        )
