"""OpenAI-shaped API errors: raised anywhere in signaling, turned into a JSON
response only at the edge (the error middleware in ``app.py``)."""

from __future__ import annotations

import json
from typing import Any

from aiohttp import web

from talkwire.errors import TalkwireError

INVALID_REQUEST = "invalid_request_error"
SERVER_ERROR = "server_error"


class ApiError(TalkwireError):
    """A request failed in a way the client should be told about."""

    def __init__(
        self,
        status: int,
        code: str | None,
        message: str,
        *,
        type: str = INVALID_REQUEST,
        param: str | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.type = type
        self.param = param

    def body(self) -> dict[str, Any]:
        return {
            "error": {
                "message": self.message,
                "type": self.type,
                "code": self.code,
                "param": self.param,
            }
        }

    def response(self) -> web.Response:
        return error_response(self.status, self.body())


def error_response(status: int, body: dict[str, Any]) -> web.Response:
    return web.Response(
        status=status,
        text=json.dumps(body),
        content_type="application/json",
    )


def invalid_api_key(message: str) -> ApiError:
    return ApiError(401, "invalid_api_key", message)


def bad_request(code: str, message: str, param: str | None = None) -> ApiError:
    return ApiError(400, code, message, param=param)


def model_not_found(model: str) -> ApiError:
    return ApiError(
        404,
        "model_not_found",
        f"The model `{model}` does not exist or is not served here.",
        param="session.model",
    )


def unavailable(code: str, message: str) -> ApiError:
    return ApiError(503, code, message, type=SERVER_ERROR)


def passthrough_error(status: int, payload: object) -> ApiError:
    """Wrap an error a transceiver returned, keeping its message and code when
    it used the same shape, so the client sees why its offer was refused."""
    error = payload.get("error") if isinstance(payload, dict) else None
    if not isinstance(error, dict):
        return ApiError(status, "transceiver_rejected", "The transceiver rejected the offer.")
    message = error.get("message")
    code = error.get("code")
    type_ = error.get("type")
    param = error.get("param")
    return ApiError(
        status,
        code if isinstance(code, str) else None,
        message if isinstance(message, str) and message else "The transceiver rejected the offer.",
        type=type_ if isinstance(type_, str) and type_ else INVALID_REQUEST,
        param=param if isinstance(param, str) else None,
    )
