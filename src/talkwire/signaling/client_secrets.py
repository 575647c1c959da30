"""`POST /v1/realtime/client_secrets`: mint an ephemeral ``ek_`` key bound to a
session. The request parsing and session rules are pure; `mint` stores it."""

from __future__ import annotations

import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from talkwire.registry.base import Registry
from talkwire.signaling.auth import new_ephemeral_key
from talkwire.signaling.config import (
    DEFAULT_CLIENT_SECRET_TTL_S,
    MAX_CLIENT_SECRET_TTL_S,
    MIN_CLIENT_SECRET_TTL_S,
)
from talkwire.signaling.errors import ApiError, bad_request, model_not_found


def normalize_session(raw: object, param: str = "session") -> dict[str, Any]:
    """A Realtime session object as a client sent it: a JSON object whose
    ``type``, when given, is ``realtime`` and whose ``model`` is a name."""
    if raw is None:
        return {"type": "realtime"}
    if not isinstance(raw, dict):
        raise bad_request("invalid_session", "The session must be a JSON object.", param)
    session = dict(raw)
    kind = session.setdefault("type", "realtime")
    if kind != "realtime":
        raise bad_request(
            "invalid_session",
            f"Only realtime sessions are served here, not {kind!r}.",
            f"{param}.type",
        )
    model = session.get("model")
    if model is not None and (not isinstance(model, str) or not model):
        raise bad_request(
            "invalid_session", "session.model must be a model name.", f"{param}.model"
        )
    return session


def resolve_model(
    session: Mapping[str, Any], models: Mapping[str, str], default_model: str | None
) -> tuple[str, str]:
    """(model name, agent URL) for a session, or the 4xx that explains why not."""
    model = session.get("model") or default_model
    if not model:
        raise bad_request(
            "missing_model",
            "The session names no model and no default model is configured.",
            "session.model",
        )
    agent_url = models.get(model)
    if agent_url is None:
        raise model_not_found(model)
    return model, agent_url


@dataclass(frozen=True)
class ClientSecretRequest:
    ttl_s: int
    session: dict[str, Any]


def parse_request(
    body: object, models: Mapping[str, str], default_model: str | None
) -> ClientSecretRequest:
    if body is None:
        body = {}
    if not isinstance(body, dict):
        raise bad_request("invalid_json", "The request body must be a JSON object.")
    ttl = DEFAULT_CLIENT_SECRET_TTL_S
    expires_after = body.get("expires_after")
    if expires_after is not None:
        if not isinstance(expires_after, dict):
            raise bad_request("invalid_type", "expires_after must be an object.", "expires_after")
        anchor = expires_after.get("anchor", "created_at")
        if anchor != "created_at":
            raise bad_request(
                "invalid_value",
                "Only 'created_at' is supported as expires_after.anchor.",
                "expires_after.anchor",
            )
        seconds = expires_after.get("seconds", DEFAULT_CLIENT_SECRET_TTL_S)
        if not isinstance(seconds, int) or isinstance(seconds, bool):
            raise bad_request(
                "invalid_type",
                "expires_after.seconds must be an integer.",
                "expires_after.seconds",
            )
        if seconds < MIN_CLIENT_SECRET_TTL_S:
            raise bad_request(
                "integer_below_min_value",
                f"expires_after.seconds must be at least {MIN_CLIENT_SECRET_TTL_S}.",
                "expires_after.seconds",
            )
        if seconds > MAX_CLIENT_SECRET_TTL_S:
            raise bad_request(
                "integer_above_max_value",
                f"expires_after.seconds must be at most {MAX_CLIENT_SECRET_TTL_S}.",
                "expires_after.seconds",
            )
        ttl = seconds
    session = normalize_session(body.get("session"))
    # Fail at mint time, not when the browser calls with a key that can't work.
    if session.get("model") or default_model:
        model, _ = resolve_model(session, models, default_model)
        session["model"] = model
    return ClientSecretRequest(ttl_s=ttl, session=session)


def session_object(session: Mapping[str, Any]) -> dict[str, Any]:
    """The session as the Realtime API returns it (an ``id`` and ``object``)."""
    out = dict(session)
    out.setdefault("id", "sess_" + secrets.token_hex(12))
    out["object"] = "realtime.session"
    out["type"] = "realtime"
    return out


async def mint(registry: Registry, request: ClientSecretRequest, now: float) -> dict[str, Any]:
    value = new_ephemeral_key()
    expires_at = int(now) + request.ttl_s
    session = session_object(request.session)
    await registry.put_client_secret(value, session, expires_at)
    return {"value": value, "expires_at": expires_at, "session": session}


def merge_call_session(base: Mapping[str, Any] | None, requested: dict[str, Any]) -> dict[str, Any]:
    """An ephemeral key's session is the base of its calls; the call's own
    ``session`` part may tune it but not switch to another model (the key was
    minted for one)."""
    if base is None:
        return requested
    base_model = base.get("model")
    model = requested.get("model")
    if base_model and model and model != base_model:
        raise ApiError(
            400,
            "model_mismatch",
            f"This ephemeral key was minted for model `{base_model}`; the call asked for "
            f"`{model}`.",
            param="session.model",
        )
    return {**base, **requested, **({"model": base_model} if base_model else {})}
